"""The sweep's driver: its MLflow server, Ray, the trials as Ray tasks, ``sweep.json``, the live table, the report.

The sweep folder's layout is :mod:`drama.sweep.folder`'s; ``sweep.json`` (every trial's status, grid values,
attempts, result or one-line error, and the latest value of each of its metrics as read back from the tracking server
named by its ``tracking_uri``) is written here. Running the same command again continues: a trial with an evaluation
JSON is skipped, one with a checkpoint continues with ``drama fit --resume``.

MLflow: unless ``MLFLOW_TRACKING_URI`` is set, the driver starts ``mlflow server`` on loopback against the sweep's
sqlite store for the sweep's duration (stopped at the end, also on Ctrl-C or an error; it gets SIGTERM should the
driver be killed); the trials log to it, and each finished trial's ``run.json`` is pointed at the sqlite file
afterwards, so ``drama report``, the notebook and ``drama fit --resume`` keep working without the server.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from drama.run import RunFolder, write_atomic
from drama.sweep.file import Sweep, Trial, format_value
from drama.sweep.folder import SweepFolder
from drama.sweep.progress import SweepProgress
from drama.sweep.server import MlflowServer
from drama.sweep.trial import TrialCrashed, run_trial
from drama.tracking import ensure_experiment, new_store

OBJECT_STORE_BYTES = 100 * 1024 ** 2
"""Ray's object store of a local sweep: the trials pass only small JSON results."""


class _Record:
    """``sweep.json``: the sweep's trials and their statuses, rewritten atomically at every change."""

    def __init__(self, sweep: Sweep) -> None:
        self.path = SweepFolder(sweep.folder).record
        old = {}
        if self.path.is_file():
            try:
                old = {t["name"]: t for t in json.loads(self.path.read_text()).get("trials", [])}
            except (OSError, ValueError, KeyError, TypeError):
                old = {}
        self.data: dict[str, Any] = {"name": sweep.name, "sweep_file": str(sweep.path), "base": str(sweep.base),
                                     "trials": []}
        for trial in sweep.trials:
            before = old.get(trial.name, {})
            entry = {"name": trial.name, "grid": trial.grid, "status": before.get("status", "pending"),
                     "attempts": before.get("attempts", 0)}
            entry.update({k: v for k, v in before.items() if k not in entry})
            self.data["trials"].append(entry)
        self.by_name = {t["name"]: t for t in self.data["trials"]}

    def set(self, name: str, **fields: Any) -> None:
        self.by_name[name].update(fields)
        self.write()

    def write(self) -> None:
        write_atomic(self.path, (json.dumps(self.data, indent=1) + "\n").encode())


def _point_run_at(trial_dir: Path, uri: str) -> None:
    """Re-point a trial's run-info file at ``uri`` (the same store: the sweep's sqlite file or its server)."""
    folder = RunFolder(trial_dir)
    info = folder.read_info()
    if info is not None and info["tracking_uri"] != uri:
        folder.write_info(info["mlflow_run_id"], uri)


def _unpoint_from_servers(trial_dir: Path, own_uri: str) -> None:
    """Point a finished trial that still names an MLflow server at the sweep's sqlite store (``own_uri``, what that
    server served): a driver killed between a trial's evaluation and its :meth:`_Driver.collect` leaves the trial on
    a server that died with it, and the next driver, which skips evaluated trials, would report from there."""
    folder = RunFolder(trial_dir)
    info = folder.read_info()
    if info is not None and info["tracking_uri"].startswith(("http://", "https://")):
        folder.write_info(info["mlflow_run_id"], own_uri)


def _create_experiment(uri: str, name: str, artifacts: Path) -> None:
    """The sweep's experiment, created once before the trials (two trials creating it at once would race, and the
    first one would put every trial's artifacts into its own folder)."""
    ensure_experiment(uri, name, artifacts)


def _start_ray(sweep: Sweep, address: str | None, max_concurrent: int | None) -> None:
    """Join ``address``, or start a local Ray that fits this machine (no dashboard, a small object store, as many
    CPUs as the machine has or ``max_concurrent`` trials need)."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
        return
    cpus = os.cpu_count() or 1
    if max_concurrent:
        cpus = max(cpus, math.ceil(max_concurrent * max(sweep.cpus, 0.01)))
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
             logging_level="ERROR")


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


class _Driver:
    """One run of ``drama sweep``: submits the trials not yet evaluated and collects them with ``ray.wait``."""

    def __init__(self, sweep: Sweep, uri: str, own_uri: str, with_server: bool, max_concurrent: int | None,
                 progress: SweepProgress, record: _Record) -> None:
        import ray

        self.sweep, self.uri, self.own_uri, self.with_server = sweep, uri, own_uri, with_server
        self.max_concurrent, self.progress, self.record = max_concurrent, progress, record
        threads = str(max(1, int(sweep.cpus)))
        self.env = {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        self.task = ray.remote(run_trial).options(num_cpus=sweep.cpus, num_gpus=sweep.gpus,
                                                  max_retries=sweep.retries, retry_exceptions=[TrialCrashed])
        self.pending: dict[Any, Trial] = {}
        self.done: list[str] = []
        self.failed: list[str] = []
        self.tagged: set[str] = set()  # MLflow run ids

    def trial_dir(self, trial: Trial) -> Path:
        return SweepFolder(self.sweep.folder).trial(trial.name).resolve()

    def log(self, trial: Trial) -> Path:
        return SweepFolder(self.sweep.folder).trial_log(trial.name).resolve()

    def run(self, todo: list[Trial], finished: int) -> None:
        import ray

        queue, total = list(todo), len(self.sweep.trials)
        while queue or self.pending:
            while queue and (not self.max_concurrent or len(self.pending) < self.max_concurrent):
                self.submit(queue.pop(0), finished + len(self.pending) + 1, total)
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.progress.refresh)
            self.progress.poll(force=bool(ready))
            for trial in self.pending.values():
                self.tag(trial)
            for ref in ready:
                finished += 1
                self.collect(ref, finished, total)

    def submit(self, trial: Trial, index: int, total: int) -> None:
        if self.with_server:
            _point_run_at(self.trial_dir(trial), self.uri)  # a resumed trial logs to this server
        attempts = self.record.by_name[trial.name].get("attempts", 0) + 1
        self.record.set(trial.name, status="running", attempts=attempts, error=None)
        ref = self.task.remote(str(self.sweep.base.resolve()), self.sweep.trial_overrides(trial),
                               str(self.trial_dir(trial)), self.sweep.episodes, str(self.log(trial)), self.env)
        self.pending[ref] = trial
        self.progress.set(trial.name, "starting")
        self.progress.say(f"[{index}/{total}] start {trial.name}")

    def tag(self, trial: Trial) -> None:
        """Tag the trial's MLflow run once it exists: ``sweep``, ``sweep.trial`` and each grid value as
        ``sweep.<key>`` (its params hold the whole config already)."""
        run_id = self.progress.run_id(trial.name)
        if run_id is None or run_id in self.tagged:  # by record: a trial that starts over gets a new one
            return
        tags = {"sweep": self.sweep.name, "sweep.trial": trial.name,
                **{f"sweep.{key}": format_value(value) for key, value in trial.grid.items()}}
        try:
            self.progress.record(run_id).set_tags(tags)
        except Exception:  # noqa: BLE001 - a busy server: tagged at the next poll
            return
        self.tagged.add(run_id)

    def collect(self, ref: Any, finished: int, total: int) -> None:
        import ray

        trial = self.pending.pop(ref)
        self.tag(trial)
        metrics = self.progress.metrics(trial.name)  # read back through the server, before it is unpointed
        if self.with_server:
            _point_run_at(self.trial_dir(trial), self.own_uri)
        try:
            result = ray.get(ref)
        except Exception as exc:  # the task's last error (RayTaskError) or a lost worker
            cause = getattr(exc, "cause", None) or exc
            message = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
            self.failed.append(trial.name)
            self.record.set(trial.name, status="failed", error=message, metrics=metrics)
            self.progress.set(trial.name, "failed", error=message)
            self.progress.say(f"[{finished}/{total}] failed {trial.name}: {message}")
            return
        self.done.append(trial.name)
        self.record.set(trial.name, status="done", error=None, mean_return=result.get("mean"),
                        evaluation=result.get("path"), metrics=metrics)
        self.progress.set(trial.name, "done", result=result.get("mean"))
        self.progress.say(f"[{finished}/{total}] done {trial.name} (return {result.get('mean')})")


def _start_tracking_and_ray(folder: SweepFolder, progress: SweepProgress, sweep: Sweep, address: str | None,
                            max_concurrent: int | None, timings: dict[str, float]) -> MlflowServer | None:
    """Ray and, unless ``MLFLOW_TRACKING_URI`` names a server, the sweep's own MLflow server on loopback against its
    own store (the table reads from it), started side by side: each takes seconds, much of it waiting."""
    t0, own_uri, server = time.monotonic(), folder.own_store_uri(), None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        new_store(folder.mlflow_db)  # the server would otherwise migrate a new store before it answers
        server = MlflowServer(own_uri, folder.root.resolve(), artifact_root=folder.artifacts.resolve(),
                              log_path=folder.server_log.resolve())
        server.launch()
    try:
        _start_ray(sweep, address, max_concurrent)
        timings["ray_start_s"] = round(time.monotonic() - t0, 1)
        if server is not None:
            progress.uri = server.start()
            timings["mlflow_server_start_s"] = round(time.monotonic() - t0, 1)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    if server is not None:
        progress.say(f"MLflow server {server.url} (store {own_uri}); open it with: mlflow ui --backend-store-uri "
                     f"{own_uri}")
    return server


def run_sweep(sweep: Sweep, address: str | None = None, max_concurrent: int | None = None,
              refresh: float = 10.0) -> dict[str, Any]:
    """Run every trial not yet evaluated; write ``sweep.json`` and the report; return the summary."""
    folder = SweepFolder(sweep.folder)
    folder.logs.mkdir(parents=True, exist_ok=True)
    record = _Record(sweep)
    todo = [t for t in sweep.trials if not folder.evaluated(t.name)]
    skipped = [t.name for t in sweep.trials if t not in todo]
    own_uri = folder.own_store_uri()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or own_uri
    server: MlflowServer | None = None
    timings: dict[str, float] = {}
    driver: _Driver | None = None
    progress = SweepProgress(sweep.trials, folder.root, uri, refresh=refresh)
    handlers = _signal_handlers()  # ray.init installs its own and leaves them behind: restored at the end
    try:
        with progress:
            for name in skipped:
                if not os.environ.get("MLFLOW_TRACKING_URI"):  # else the trials' store is that one, and stays
                    _unpoint_from_servers(folder.trial(name), own_uri)
                if record.by_name[name]["status"] != "done":
                    record.set(name, status="done")
                progress.set(name, "done", result=record.by_name[name].get("mean_return"))
                progress.say(f"skip {name} (already evaluated)")
            if todo:
                server = _start_tracking_and_ray(folder, progress, sweep, address, max_concurrent, timings)
                uri = server.url if server is not None else uri
                _create_experiment(uri, sweep.name, folder.artifacts)
                record.data["tracking_uri"] = uri  # where this driver's trials log and their metrics are read
                record.write()
                import ray

                how = "joined" if address else "started"
                progress.say(f"Ray {how} in {timings['ray_start_s']} s: {ray.cluster_resources()}")
                driver = _Driver(sweep, uri, own_uri, server is not None, max_concurrent, progress, record)
                t0 = time.monotonic()
                driver.run(todo, finished=len(skipped))
                timings["trials_s"] = round(time.monotonic() - t0, 1)
        finished_dirs = [folder.trial(t.name) for t in sweep.trials if folder.evaluated(t.name)]
        report_paths: dict[str, str] = {}
        if finished_dirs:
            from drama.report import report

            report_paths = report(finished_dirs, out=folder.report)
    finally:
        if todo:
            import ray

            if ray.is_initialized():  # also when the MLflow server failed after Ray had started
                ray.shutdown()
        if server is not None:
            server.stop()
        _restore_signal_handlers(handlers)
    done, failed = (driver.done, driver.failed) if driver else ([], [])
    return {"sweep_dir": str(folder.root), "trials": len(sweep.trials), "done": len(done), "failed": len(failed),
            "skipped": len(skipped), "failed_trials": failed, "report": report_paths.get("markdown"),
            "sweep_json": str(record.path), **timings}
