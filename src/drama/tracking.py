"""Tracking: the :class:`Tracker` through which the loop, ``drama evaluate`` and ``drama report`` reach a run's
MLflow record, and the :class:`MetricAccumulator` that keeps metrics on the device between two logs.

The record is found through the run folder's run-info file (:attr:`drama.run.RunFolder.info`); the store is the
folder's sqlite file unless ``MLFLOW_TRACKING_URI`` is set, and artifacts go to the folder's artifact directory
when the experiment is created there. MLflow 3 refuses the old ``./mlruns`` file store, so a URI is always passed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from drama.config import ConfigError
from drama.processes import terminate_with_parent
from drama.run import RunFolder

_PARAMS_PER_BATCH = 100
"""MLflow accepts at most 100 params per ``log_batch``."""
RESUMED_KEY = "run/resumed_from_step"
"""Metric logged at each resume (value and step: the checkpoint's env step); see :meth:`Tracker.metric_history`."""
EPISODE_RETURN, EPISODE_LENGTH = "episode/return", "episode/length"
"""Metric keys of each finished training episode: its return and length (agent steps), at the env step it ended."""
ENV_STEPS, STEPS_PER_SECOND = "progress/env_steps", "time/steps_per_second"
"""Metric keys of the run's progress at each log: env steps done and the training rate (env steps/s)."""


def _relocate(folder: RunFolder) -> None:
    """Point the artifact paths in the folder's own sqlite store at this folder when it was copied or moved (they
    are absolute in MLflow). Nothing happens when they already point here."""
    import sqlite3

    here = str(folder.artifacts.resolve())
    with sqlite3.connect(folder.mlflow_db) as db:
        rows = db.execute("SELECT artifact_location FROM experiments").fetchall()
        for (location,) in rows:
            if location and location != here and location.endswith("/" + folder.artifacts.name):
                db.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                           "WHERE substr(artifact_uri, 1, ?) = ?", (here, len(location) + 1, len(location), location))
                db.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?",
                           (here, location))


def _client(uri: str):
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow/sqlalchemy deprecation chatter at import
        from mlflow.tracking import MlflowClient

        # after mlflow's import, which sets its logger up: no "Creating initial MLflow database tables" lines
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        return MlflowClient(tracking_uri=uri)


def ensure_experiment(client, name: str, artifacts: Path) -> str:
    """The id of experiment ``name``, created with its artifacts under ``artifacts`` if it does not exist yet."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=str(artifacts.resolve()))


class Tracker:
    """One run's MLflow record: params, metrics (batched), artifacts, metric histories and its final status."""

    def __init__(self, client, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    @classmethod
    def start(cls, folder: RunFolder, experiment: str, resume: bool = False, step: int = 0) -> Tracker:
        """Create the run's record (or, with ``resume``, continue the one named in the run-info file from env
        ``step``, the checkpoint's) and write the run-info file. Connects now, so an unusable store fails before
        training starts."""
        info = folder.read_info() if resume else None
        if info is not None:
            tracker = cls.open(folder)
            tracker.client.update_run(tracker.run_id, status="RUNNING")
            tracker.log_metrics({RESUMED_KEY: step}, step)
            return tracker
        uri = folder.tracking_uri()
        client = _client(uri)
        experiment_id = ensure_experiment(client, experiment, folder.artifacts)
        run_id = client.create_run(experiment_id, run_name=folder.name).info.run_id
        folder.write_info(run_id, uri)
        return cls(client, run_id)

    @classmethod
    def open(cls, folder: RunFolder) -> Tracker | None:
        """The record named by the folder's run-info file, or None without one. A copied or moved folder with
        its own store gets that store's artifact paths pointed at itself first (:func:`_relocate`)."""
        info = folder.read_info()
        if info is None:
            return None
        client = _client(info["tracking_uri"])
        if info["tracking_uri"] == folder.own_store_uri():
            _relocate(folder)
            # MLflow caches each run's artifact location per process by run id, and a copied folder's run has its
            # original's id: forget it, so this process writes into this folder.
            from mlflow.tracking._tracking_service import utils

            getattr(utils, "_artifact_repos_cache", {}).pop(info["mlflow_run_id"], None)
        return cls(client, info["mlflow_run_id"])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for first in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[first:first + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """All ``metrics`` at ``step`` in one round trip."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), timestamp, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def metric_history(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of metric ``key``, by step, as the finished run holds them: a point logged before a
        resume at a step past the checkpoint that run resumed from is superseded (the resumed run logs that
        step again, from the same state), so it is left out."""
        resumes = [(m.timestamp, m.step) for m in self.client.get_metric_history(self.run_id, RESUMED_KEY)]
        history = [m for m in self.client.get_metric_history(self.run_id, key)
                   if not any(m.timestamp < at and m.step > step for at, step in resumes)]
        history.sort(key=lambda m: (m.step, m.timestamp))
        return [m.step for m in history], [m.value for m in history]

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status)


class MetricAccumulator:
    """Running means of scalar metrics between two logging points, without host syncs until :meth:`pop`.

    Tensor values are summed as (detached, float32) tensors on their own device, so adding a training step's
    metrics never waits for the device; :meth:`pop` reads all sums back at once (one transfer per device).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, Any], prefix: str = "") -> None:
        for key, value in metrics.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            name = prefix + key
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] += 1

    def pop(self) -> dict[str, float]:
        """The means since the last pop; resets."""
        tensors = {key: value for key, value in self.sums.items() if isinstance(value, torch.Tensor)}
        values = {key: float(value) for key, value in self.sums.items() if not isinstance(value, torch.Tensor)}
        by_device: dict[torch.device, list[str]] = defaultdict(list)
        for key, value in tensors.items():
            by_device[value.device].append(key)
        for keys in by_device.values():
            values.update(zip(keys, torch.stack([tensors[k].reshape(()) for k in keys]).tolist(), strict=True))
        out = {key: values[key] / self.counts[key] for key in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


# ---------------------------------------------------------------------- an MLflow server on loopback
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""URL opener that never goes through an HTTP(S)_PROXY (the server is on 127.0.0.1)."""
SERVER_TIMEOUT = 120.0
"""Seconds for ``mlflow server`` to answer ``/health`` (about 15 s on 2 busy cores)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``python -m mlflow server`` on 127.0.0.1 against ``backend_store_uri``, in its own process group (stopped as
    a whole: the CLI process and its uvicorn worker; SIGTERM should the process that started it die). Used by
    ``drama sweep`` (one server per sweep) and the tests."""

    def __init__(self, backend_store_uri: str, workdir: Path, artifact_root: Path | None = None,
                 log_path: Path | None = None) -> None:
        self.backend_store_uri, self.workdir, self.artifact_root = backend_store_uri, workdir, artifact_root
        self.log_path = log_path or workdir / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def command(self, port: int) -> list[str]:
        root = ["--default-artifact-root", str(self.artifact_root)] if self.artifact_root else []
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri, *root,
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    def start(self, attempts: int = 3) -> str:
        """Start it and wait for ``/health``; returns its URL. A new port is tried if another process took the free
        one before the server bound it."""
        env = {**os.environ,
               # no job runner (huey consumers: 7 extra processes, twice the start-up time), no telemetry
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(port), cwd=self.workdir, env=env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, preexec_fn=terminate_with_parent())
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready():
                return self.url
            self.stop()
        raise ConfigError(f"mlflow server did not start (see {self.log_path})")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with LOOPBACK.open(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL if it is still there."""
        if self.proc is None:
            return
        group = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(group, signal.SIGKILL)  # the worker, should it outlive the CLI process
        except ProcessLookupError:
            pass
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
