"""Learning check: does `conf/cartpole.yaml` reach a mean return >= 450 over the last 10 episodes within
30,000 env steps? Runs one `drama fit` per seed (in parallel processes, one torch thread each), then reads each
run's MLflow store.

    python benchmarks/learning_cartpole.py [--seeds 1 2 3] [--parallel 2] [--steps 30000] [--out FILE]

Prints one JSON line per seed (steps to reach the target or null, last-10 mean, wall time) and a summary line.
Runs stop early once the target is reached (``train.stop_at_return``). Not a CI test: it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def episode_returns(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, return) of every finished episode, from the run's MLflow record."""
    from drama.metrics import EPISODE_RETURN
    from drama.run import RunFolder
    from drama.tracking import Tracker

    steps, values = Tracker.open(RunFolder(run_dir)).metric_history(EPISODE_RETURN)
    return list(zip(steps, values, strict=True))


def first_success(returns: list[tuple[int, float]], target: float) -> int | None:
    for i in range(9, len(returns)):
        if sum(v for _, v in returns[i - 9:i + 1]) / 10 >= target:
            return returns[i][0]
    return None


def run_seed(seed: int, steps: int, target: float, output_dir: Path, extra: list[str]) -> dict:
    run_dir = output_dir / f"cartpole-seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "drama", "fit", "--config", str(ROOT / "conf/cartpole.yaml"),
           f"runtime.seed={seed}", f"runtime.output_dir={output_dir}", f"runtime.run_name={run_dir.name}",
           f"train.total_steps={steps}", f"train.stop_at_return={target}", "runtime.progress=false", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"seed": seed, "error": proc.stderr.strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    returns = episode_returns(run_dir)
    last10 = [v for _, v in returns[-10:]]
    return {"seed": seed, "reached_at_step": first_success(returns, target), "episodes": len(returns),
            "env_steps": json.loads(proc.stdout.strip().splitlines()[-1])["env_steps"],
            "mean_return_last_10": round(sum(last10) / len(last10), 1) if last10 else None,
            "wall_s": round(wall, 1), "run_dir": str(run_dir)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (each uses one thread)")
    parser.add_argument("--steps", type=int, default=30_000, help="env-step budget per seed")
    parser.add_argument("--target", type=float, default=450.0, help="mean return over the last 10 episodes")
    parser.add_argument("--output-dir", type=Path, default=None, help="where runs go (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="also write the summary JSON here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every run")
    args = parser.parse_args()
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="drama-cartpole-"))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [pool.submit(run_seed, s, args.steps, args.target, output_dir, args.overrides) for s in args.seeds]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(json.dumps(rows[-1]), flush=True)
    passed = sum(r.get("reached_at_step") is not None for r in rows)
    summary = {"benchmark": "learning_cartpole", "target": args.target, "budget_env_steps": args.steps,
               "seeds_passed": passed, "seeds": len(rows), "wall_s": round(time.perf_counter() - start, 1),
               "results": rows}
    from drama.bench import write_result

    write_result(summary, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
