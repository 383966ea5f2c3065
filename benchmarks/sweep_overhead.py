"""What a local ``drama sweep`` costs on this machine, and what running trials side by side gains.

Usage (from the repository root, with the sweep extra installed: ``pip install -e ".[sweep]"``):

    python benchmarks/sweep_overhead.py [--repeats 2] [--dir sweep-bench] [--keep]

Runs ``drama sweep`` on a two-trial grid of ``conf/sweeps/tiny.yaml`` (seeds 1 and 2, the GRU backbone, 30 env
steps each) ``--repeats`` times with ``--max-concurrent 2`` and as often with ``--max-concurrent 1``, alternated
(A B A B, in fresh sweep folders), each as its own process. The driver's summary reports the seconds until its MLflow
server and Ray are both up (they start side by side: ``mlflow_server_start_s``), until ``ray.init`` returned
(``ray_start_s``), and of the trials themselves (``trials_s``: from the first submission to the last
result). Prints one JSON line: medians of each, the concurrent / serial ratio of ``trials_s`` and of the whole
command, the CPU count and model. No timing is asserted anywhere: this script only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from drama.device import device_name

ROOT = Path(__file__).resolve().parents[1]


def one_sweep(folder: Path, concurrent: int) -> dict[str, float]:
    spec = yaml.safe_load((ROOT / "conf/sweeps/tiny.yaml").read_text())
    spec.update(name="two", base=str(ROOT / "conf/debug.yaml"), grid={"runtime.seed": [1, 2],
                                                                       "world_model.backbone.name": ["gru"]})
    sweep = folder / "two.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "drama", "sweep", str(sweep), f"runtime.output_dir={folder / 'out'}",
                           "--max-concurrent", str(concurrent)], capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"drama sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["done"] == 2, summary
    return {"wall_s": wall, "trials_s": summary["trials_s"], "ray_start_s": summary["ray_start_s"],
            "mlflow_server_start_s": summary["mlflow_server_start_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", default="sweep-bench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(args.dir).resolve()
    runs: dict[int, list[dict[str, float]]] = {2: [], 1: []}
    try:
        for rep in range(args.repeats):
            for concurrent in (2, 1):
                folder = root / f"c{concurrent}-{rep}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                runs[concurrent].append(one_sweep(folder, concurrent))
                print(f"concurrent={concurrent} repeat {rep}: {runs[concurrent][-1]}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    def median(concurrent: int, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[concurrent]), 1)

    both = runs[1] + runs[2]
    print(json.dumps({
        "benchmark": "sweep_overhead", "trials": 2, "env_steps_per_trial": 30, "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "cpu": device_name(torch.device("cpu")),
        "ray_start_s": round(statistics.median(r["ray_start_s"] for r in both), 1),
        "mlflow_server_start_s": round(statistics.median(r["mlflow_server_start_s"] for r in both), 1),
        "concurrent": {"trials_s": median(2, "trials_s"), "wall_s": median(2, "wall_s")},
        "serial": {"trials_s": median(1, "trials_s"), "wall_s": median(1, "wall_s")},
        "trials_ratio_concurrent_over_serial": round(median(2, "trials_s") / median(1, "trials_s"), 2),
        "wall_ratio_concurrent_over_serial": round(median(2, "wall_s") / median(1, "wall_s"), 2),
    }))


if __name__ == "__main__":
    main()
