"""Env parallelism for ``drama evaluate --envs K``: is stepping the K Atari envs in worker processes worth it?

    python benchmarks/env_parallel.py [--env ALE/Boxing-v5] [--envs 16] [--steps 300] [--rounds 3] \\
        [--configs atari laptop] [--threads 2] [--out benchmarks/results/env_parallel_cpu.json]

Measures, interleaved round by round in one process:

* ``serial``: the K envs of drama's Atari stack (:func:`drama.envs.factory.make_gym_env`, the stack
  ``drama evaluate`` steps) stepped one after another in this process, as ``evaluate`` does today;
* ``async``: the same K stacks in gymnasium's ``AsyncVectorEnv`` (one worker process per env, shared memory);
* ``act``: one batched greedy acting step (:class:`drama.acting.Acting`) for K windows of each config's model,
  freshly initialised, under the precision ``runtime.precision`` resolves to here, once the windows hold the
  full acting context (the steady state of an episode).

Random actions, ``--steps`` vector steps per round; an env whose episode ends is reset (gymnasium's autoreset in
``async``). Prints and writes one JSON object: the median seconds per vector step of each, and per config the
share of an evaluation step spent stepping envs serially and the best whole-step speed-up worker processes could
give, ``(act + serial) / (act + async)``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _serial_round(envs, steps: int, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        for env in envs:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
    return (time.perf_counter() - start) / steps


def _async_round(vector, steps: int, rng: np.random.Generator) -> float:
    n = vector.single_action_space.n
    start = time.perf_counter()
    for _ in range(steps):
        vector.step(rng.integers(n, size=vector.num_envs))
    return (time.perf_counter() - start) / steps


def _act_round(acting, observations, num_actions: int, steps: int) -> float:
    active = list(range(observations.shape[0]))
    start = time.perf_counter()
    for _ in range(steps):
        acting.step(active, observations, num_actions, greedy=True)
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ALE/Boxing-v5")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300, help="vector steps per round (env phases)")
    parser.add_argument("--act-steps", type=int, default=20, help="acting steps per round and config")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["atari", "laptop"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import gymnasium
    import lightning as L

    from drama.acting import Acting
    from drama.build import build_models, ready_to_act
    from drama.config import load_config
    from drama.device import cpu_features, device_name, resolve_device, resolve_precision
    from drama.envs import probe_env
    from drama.envs.factory import make_gym_env

    torch.set_num_threads(args.threads)
    env_cfg = load_config(args.configs[0], [f"env.id={args.env}"]).env
    serial = [make_gym_env(env_cfg, seed, evaluation=True) for seed in range(args.envs)]
    for seed, env in enumerate(serial):
        env.reset(seed=seed)
    vector = gymnasium.vector.AsyncVectorEnv(
        [lambda seed=seed: make_gym_env(env_cfg, seed, evaluation=True) for seed in range(args.envs)],
        shared_memory=True)
    vector.reset(seed=list(range(args.envs)))

    actors = {}
    for name in args.configs:
        cfg = load_config(name, [f"env.id={args.env}"])
        device = resolve_device(cfg.runtime.device)
        precision = resolve_precision(cfg.runtime.precision, device)
        L.seed_everything(cfg.runtime.seed, verbose=False)
        world_model, actor_critic = ready_to_act(cfg, *build_models(cfg, probe_env(cfg.env)))
        acting = Acting(world_model, actor_critic, cfg.train.acting_context, envs=args.envs)
        observations = torch.stack([torch.from_numpy(env.reset(seed=0)[0]) for env in serial[:1]] * args.envs)
        actors[name] = (acting, observations.to(device), probe_env(cfg.env).num_actions, precision)
        _act_round(*actors[name][:3], steps=cfg.train.acting_context)  # untimed: fill the windows

    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {"serial": [], "async": [], **{f"act/{name}": [] for name in actors}}
    try:
        for round_index in range(args.rounds):
            phases = ["serial", "async", *[f"act/{name}" for name in actors]]
            for phase in phases if round_index % 2 == 0 else reversed(phases):
                if phase == "serial":
                    seconds = _serial_round(serial, args.steps, rng)
                elif phase == "async":
                    seconds = _async_round(vector, args.steps, rng)
                else:
                    acting, observations, num_actions, _ = actors[phase.split("/", 1)[1]]
                    seconds = _act_round(acting, observations, num_actions, args.act_steps)
                samples[phase].append(seconds)
                print(f"# round {round_index + 1}/{args.rounds} {phase}: {seconds * 1e3:.1f} ms per vector step",
                      file=sys.stderr, flush=True)
    finally:
        vector.close()
        for env in serial:
            env.close()

    median = {phase: statistics.median(values) for phase, values in samples.items()}
    per_config = {}
    for name, (_, _, _, precision) in actors.items():
        act = median[f"act/{name}"]
        per_config[name] = {
            "precision": precision, "act_s": act,
            "serial_env_share": median["serial"] / (act + median["serial"]),
            "best_speedup_with_workers": (act + median["serial"]) / (act + median["async"]),
        }
    result = {
        "benchmark": "env_parallel", "command": " ".join(["python", "benchmarks/env_parallel.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"), "env": args.env, "envs": args.envs, "steps_per_round": args.steps,
        "act_steps_per_round": args.act_steps, "rounds": args.rounds,
        "device_name": device_name(torch.device("cpu")), "cpu_features": sorted(cpu_features()),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
        "median_s_per_vector_step": median, "samples_s": samples, "configs": per_config,
    }
    from drama.bench import write_result

    write_result(result, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
