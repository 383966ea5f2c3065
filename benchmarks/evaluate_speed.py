"""Evaluation throughput: episodes per second of ``drama evaluate``'s episode loop with K environments stepped
together against K = 1, interleaved in one process.

    python benchmarks/evaluate_speed.py [--config atari] [--envs 1 16] [--episodes 16] [--rounds 2] \\
        [--max-episode-frames 2000] [--threads 2] [--out benchmarks/results/evaluate_speed_cpu.json] [key=value ...]

The models are the config's, freshly initialised (speed does not depend on training; a greedy untrained policy
plays fixed-length episodes), under the precision ``runtime.precision`` resolves to on this machine, exactly as
``drama evaluate`` runs them (:func:`drama.evaluate.play_episodes`). Each round plays ``--episodes`` episodes for
every K in turn (the order alternates between rounds), so machine noise falls on all of them alike; episodes are
cut at ``--max-episode-frames`` raw frames (``env.max_episode_frames``) to keep a round short. Prints and writes
one JSON object: per K the median episodes/s and agent steps/s over the rounds, and the speed-up against the
first K.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="atari")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--episodes", type=int, default=16, help="episodes per K per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-episode-frames", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    import lightning as L

    from drama.build import build_models, ready_to_act
    from drama.config import load_config
    from drama.device import cpu_features, device_name, resolve_device, resolve_precision
    from drama.envs import probe_env
    from drama.evaluate import play_episodes

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"env.max_episode_frames={args.max_episode_frames}", *args.overrides])
    device = resolve_device(cfg.runtime.device)
    precision = resolve_precision(cfg.runtime.precision, device)
    L.seed_everything(cfg.runtime.seed, verbose=False)
    world_model, actor_critic = ready_to_act(cfg, *build_models(cfg, probe_env(cfg.env)))
    samples: dict[int, list[tuple[float, int]]] = {k: [] for k in args.envs}
    for round_index in range(args.rounds):
        order = args.envs if round_index % 2 == 0 else list(reversed(args.envs))
        for k in order:
            start = time.perf_counter()
            played = play_episodes(cfg, world_model, actor_critic, args.episodes, greedy=True, seed=round_index,
                                   progress=False, envs=k)
            seconds = time.perf_counter() - start
            samples[k].append((seconds, sum(played["lengths"])))
            print(f"# round {round_index + 1}/{args.rounds} K={k}: {args.episodes} episodes, "
                  f"{sum(played['lengths'])} steps in {seconds:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for k in args.envs:
        episodes_per_s = statistics.median(args.episodes / s for s, _ in samples[k])
        steps_per_s = statistics.median(n / s for s, n in samples[k])
        rows.append({"envs": k, "episodes_per_s": episodes_per_s, "steps_per_s": steps_per_s,
                     "seconds": [round(s, 2) for s, _ in samples[k]]})
    for row in rows:
        row["speedup_vs_first"] = row["episodes_per_s"] / rows[0]["episodes_per_s"]
    result = {
        "benchmark": "evaluate_speed", "command": " ".join(["python", "benchmarks/evaluate_speed.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"), "config": args.config, "overrides": args.overrides,
        "episodes_per_round": args.episodes, "rounds": args.rounds, "max_episode_frames": args.max_episode_frames,
        "device": str(device), "device_name": device_name(device), "cpu_features": sorted(cpu_features()),
        "precision": precision, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "results": rows,
    }
    from drama.bench import write_result

    write_result(result, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
