"""Learning evidence on Atari: does a preset (default ``laptop``) learn Boxing and Krull on a CPU?

    python benchmarks/learning_atari.py --games Boxing Krull --seeds 1 --steps 20000 --config laptop \\
        [--parallel 2] [--threads 1] [--episodes 20] [--time-limit SECONDS] [--output-dir DIR] [--out FILE]

One ``drama fit`` per game and seed (``--parallel`` at once, ``--threads`` torch threads each), then ``drama
evaluate --episodes N`` (greedy) on its last checkpoint. **Resumable**: a run folder that already holds a
checkpoint is continued with ``drama fit --resume`` (a finished one returns at once), so the same command may be
stopped (Ctrl-C, ``kill``: the fits save a checkpoint and exit) and run again later. ``--time-limit`` stops the
fits after that many seconds of this invocation (SIGTERM: a checkpoint at the current step) and evaluates what
they reached; the JSON then says ``"finished": false`` for those runs.

Writes ``--out`` (default ``benchmarks/results/learning_atari_cpu.json``): per game and seed the env steps,
the fit's wall time summed over invocations, CPU model and capability, threads, precision, the training-return
curve (env step, return of every finished episode), the evaluation's returns, mean, 95% confidence interval of
the mean (Student t), human-normalised score, the random and human scores and the DRAMA paper's 100k score for
context; then ``drama report`` over the runs (learning curves PNG and tables) into ``--report-dir``. Not a CI
test: it takes hours.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "learning_atari_cpu.json"

DRAMA_PAPER_100K = {"Boxing": 78.0, "Krull": 9693.0}
"""The DRAMA paper's Atari 100k scores (Wang et al., ICLR 2025, per-game table) of the games this script is
usually run on, for context only; other games are reported as null here."""

LEDGER = "learning_atari_ledger.json"
"""Per-run wall time of earlier invocations, kept in the output folder (so that resumed runs add up)."""


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95% confidence interval of the mean (Student t with n - 1 degrees of freedom)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def episode_returns(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, return) of every finished training episode, from the run's MLflow record."""
    from drama.metrics import EPISODE_RETURN
    from drama.run import RunFolder
    from drama.tracking import Tracker

    steps, values = Tracker.open(RunFolder(run_dir)).metric_history(EPISODE_RETURN)
    return list(zip(steps, values, strict=True))


class Runs:
    """The drama subprocesses of this invocation, so that a deadline or Ctrl-C can stop them (SIGTERM: each fit
    saves a checkpoint and exits 143)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run(self, cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
        with open(log, "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            with self.lock:
                if self.stopped.is_set():
                    return 143, ""
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
                self.procs.append(proc)
            stdout, _ = proc.communicate()
            out.write(stdout)
        return proc.returncode, stdout

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)


def last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def fit_and_evaluate(runs: Runs, game: str, seed: int, args: argparse.Namespace, ledger: dict) -> dict:
    from drama.run import RunFolder
    from drama.scores import HUMAN_SCORES, RANDOM_SCORES, env_id, human_normalized_score

    name = f"{game}-seed{seed}"
    run_dir = args.output_dir / name
    log = args.output_dir / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    drama = [sys.executable, "-m", "drama"]
    if RunFolder(run_dir).holds_run():
        cmd = [*drama, "fit", "--resume", str(run_dir), "runtime.progress=false"]
    else:
        cmd = [*drama, "fit", "--config", args.config, f"env.id={env_id(game)}", f"runtime.seed={seed}",
               f"runtime.output_dir={args.output_dir}", f"runtime.run_name={name}", f"train.total_steps={args.steps}",
               f"train.learning_steps={args.steps}", "runtime.progress=false", *args.overrides]
    start = time.perf_counter()
    code, stdout = runs.run(cmd, env, log)
    wall = time.perf_counter() - start
    ledger[name] = ledger.get(name, 0.0) + wall
    summary = last_json(stdout)
    if code not in (0, 143, 130):
        return {"game": game, "seed": seed, "error": f"drama fit exited {code} (see {log})"}
    code, stdout = Runs().run([*drama, "evaluate", str(run_dir), "--episodes", str(args.episodes), "--no-progress"],
                              env, log)
    if code != 0:
        return {"game": game, "seed": seed, "error": f"drama evaluate exited {code} (see {log})"}
    evaluation_path = last_json(stdout)["path"]
    evaluation = json.loads(Path(evaluation_path).read_text())
    returns = [float(r) for r in evaluation["returns"]]
    mean, low, high = mean_ci95(returns)
    g = game
    cfg = RunFolder(run_dir).read_config()
    return {
        "game": g, "seed": seed, "run_dir": str(run_dir), "env_steps": evaluation["checkpoint_step"],
        "budget_env_steps": cfg.train.total_steps, "finished": evaluation["checkpoint_step"] >= cfg.train.total_steps,
        "fit_wall_s": round(ledger[name], 1), "fit_summary": summary, "precision": _precision(log),
        "training_returns": episode_returns(run_dir),
        "evaluation": {"episodes": len(returns), "policy": evaluation["policy"], "seed": evaluation["seed"],
                       "returns": returns, "lengths": evaluation["lengths"], "mean": mean,
                       "ci95_of_mean": [low, high], "human_normalized": human_normalized_score(g, mean),
                       "seconds": evaluation["seconds"], "path": evaluation_path},
        "random_score": RANDOM_SCORES[g], "human_score": HUMAN_SCORES[g],
        "above_random": bool(low > RANDOM_SCORES[g]),
        "drama_paper_100k": DRAMA_PAPER_100K.get(g),
    }


def _precision(log: Path) -> str | None:
    """The precision the fit reported on its ``# run ... | precision X |`` line (last one in the log)."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("# run ") and "| precision " in line:
            found = line.split("| precision ", 1)[1].split(" ", 1)[0]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Boxing", "Krull"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=40_000, help="env-step budget per run")
    parser.add_argument("--config", default="laptop", help="config name or file (default laptop)")
    parser.add_argument("--episodes", type=int, default=20, help="greedy evaluation episodes (default 20)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop the fits after this many seconds (they checkpoint) and evaluate what they reached")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/learning_atari"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="drama report output (default: beside --out, <out stem>_report)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for new runs")
    args = parser.parse_args()
    import torch

    from drama.device import cpu_features, device_name, resolve_precision
    from drama.scores import game_from_env_id

    args.games = [game_from_env_id(g) for g in args.games]
    args.output_dir = args.output_dir.resolve()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = args.output_dir / LEDGER
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    runs = Runs()
    timer = threading.Timer(args.time_limit, runs.stop) if args.time_limit else None
    if timer:
        timer.daemon = True
        timer.start()
    previous = signal.signal(signal.SIGTERM, lambda *_: runs.stop())
    start = time.perf_counter()
    jobs = [(g, s) for g in args.games for s in args.seeds]
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            rows = list(pool.map(lambda job: fit_and_evaluate(runs, *job, args, ledger), jobs))
    except KeyboardInterrupt:
        runs.stop()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if timer:
            timer.cancel()
        ledger_path.write_text(json.dumps(ledger, indent=2) + "\n")
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k not in ("training_returns", "fit_summary")}), flush=True)
    cpu = torch.device("cpu")
    result = {
        "benchmark": "learning_atari",
        "command": " ".join(["python", "benchmarks/learning_atari.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "config": args.config, "overrides": args.overrides, "budget_env_steps": args.steps,
        "machine": {"cpu": device_name(cpu), "cpu_count": os.cpu_count(), "cpu_features": sorted(cpu_features()),
                    "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "auto_precision": resolve_precision("auto", cpu), "threads_per_run": args.threads,
                    "runs_in_parallel": args.parallel, "torch": torch.__version__,
                    "python": platform.python_version()},
        "wall_s_this_invocation": round(time.perf_counter() - start, 1),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    evaluated = [row["run_dir"] for row in rows if "error" not in row]
    if evaluated:
        report_dir = args.report_dir or args.out.with_name(f"{args.out.stem}_report")
        subprocess.run([sys.executable, "-m", "drama", "report", *evaluated, "--out", str(report_dir)], check=False,
                       stdout=subprocess.DEVNULL)
    print(json.dumps({"benchmark": "learning_atari", "out": str(args.out),
                      "above_random": {f"{r['game']}-seed{r['seed']}": r.get("above_random") for r in rows}}))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
