"""What a new run's MLflow store costs: MLflow's own migrations against a copy of the migrated template.

    python benchmarks/tracking_store.py [--rounds 5] [--threads 2] [--out FILE]

Times ``Tracker.start`` on a new run folder (create the sqlite store, the experiment and the run), alternating in
one process between a cache with the template (``drama.tracking.new_store`` copies it) and an unusable cache
(MLflow creates the tables and runs its schema migrations, as it does without drama's template). Prints one JSON
object: the medians and their ratio. Why ``drama.tracking`` keeps a template; not a CI test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def start_once(root: Path, name: str, cache: Path) -> float:
    from drama.run import RunFolder
    from drama.tracking import Tracker

    os.environ["XDG_CACHE_HOME"] = str(cache)
    folder = RunFolder(root / name)
    folder.root.mkdir()
    began = time.perf_counter()
    Tracker.start(folder, "bench")
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import mlflow

    from drama.bench import write_result
    from drama.device import device_name
    from drama.tracking import store_template

    root = Path(tempfile.mkdtemp(prefix="drama-tracking-store-"))
    template_cache, no_cache = root / "cache", root / "not-a-folder"
    no_cache.write_text("a file where the cache folder would be: no template")
    os.environ["XDG_CACHE_HOME"] = str(template_cache)
    made = time.perf_counter()
    store_template()
    template_s = time.perf_counter() - made
    start_once(root, "warm-up", no_cache)  # imports and MLflow's first store out of the timings
    times: dict[str, list[float]] = {"migrated_by_mlflow": [], "copied_template": []}
    for k in range(args.rounds):
        times["migrated_by_mlflow"].append(start_once(root, f"mlflow-{k}", no_cache))
        times["copied_template"].append(start_once(root, f"template-{k}", template_cache))
    medians = {key: statistics.median(values) for key, values in times.items()}
    write_result({"benchmark": "tracking_store", "mlflow": mlflow.__version__, "cpu": device_name(torch.device("cpu")),
                  "threads": args.threads, "rounds": args.rounds, "template_made_s": template_s,
                  "median_s": medians, "samples_s": times,
                  "ratio_mlflow_over_template": medians["migrated_by_mlflow"] / medians["copied_template"],
                  "date": time.strftime("%Y-%m-%d")}, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
