"""Tracking: the :class:`Tracker` through which the loop, ``drama evaluate`` and ``drama report`` reach a run's
MLflow record; the only module that talks to MLflow for one run (the metric keys: :mod:`drama.metrics`; the
loopback server of ``drama sweep``: :mod:`drama.sweep.server`).

The record is found through the run folder's run-info file (:attr:`drama.run.RunFolder.info`); the store is the
folder's sqlite file unless ``MLFLOW_TRACKING_URI`` is set, and artifacts go to the folder's artifact directory
when the experiment is created there. MLflow 3 refuses the old ``./mlruns`` file store, so a URI is always passed.
A new sqlite store starts as a copy of an empty one MLflow migrated once per MLflow version (:func:`new_store`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from drama.metrics import RESUMED_KEY
from drama.run import RunFolder

_PARAMS_PER_BATCH = 100
"""MLflow accepts at most 100 params per ``log_batch``."""


def _relocate(folder: RunFolder) -> None:
    """Point the artifact paths in the folder's own sqlite store at this folder when it was copied or moved (they
    are absolute in MLflow). Nothing happens when they already point here.

    Why SQL: MLflow has no public API that changes an experiment's ``artifact_location`` or a run's
    ``artifact_uri`` once created (``MlflowClient`` sets both only at creation; ``mlflow gc`` and the REST API have
    nothing either), and a copied run must keep its id, metrics and params, so it cannot be re-created instead."""
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


def store_template() -> Path | None:
    """An empty sqlite store that MLflow created and migrated, kept in the user cache
    (``$XDG_CACHE_HOME/drama``, default ``~/.cache/drama``) per MLflow version: made on first use, None when the
    cache cannot be written (then MLflow migrates each new store itself)."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "drama"
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    partial = cache / f".{template.name}.{os.getpid()}.partial"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _client(f"sqlite:///{partial}").search_experiments()  # creates the tables and runs the migrations
        os.replace(partial, template)  # atomic: a concurrent maker's copy is as good as this one
    except Exception:  # noqa: BLE001 - an unwritable cache or a sqlite error: MLflow creates the store itself
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return None
    return template


def new_store(db: Path) -> None:
    """Start the sqlite store ``db`` (not there yet) as a copy of :func:`store_template`. MLflow otherwise runs its
    schema migrations on every new store: 1.2 s of each new run against 0.05 s for the copy
    (``benchmarks/tracking_store.py``); the copy is the same store MLflow would make, so MLflow opens it as its own.
    Nothing happens when ``db`` exists or there is no template."""
    template = None if db.exists() else store_template()
    if template is None:
        return
    partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, db)


def ensure_experiment(client, name: str, artifacts: Path) -> str:
    """The id of experiment ``name``, created with its artifacts under ``artifacts`` if it does not exist yet
    (``client``: an ``MlflowClient``, or a tracking URI)."""
    if isinstance(client, str):
        client = _client(client)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=str(artifacts.resolve()))


def _replace_unsaved(client, folder: RunFolder, uri: str) -> None:
    """Before a new run starts in ``folder``: delete (MLflow's soft delete) the record a run-info file left there by
    a start that was stopped before its first checkpoint, when it lives in this store. Nothing of it can be
    resumed, and one folder keeps one MLflow run (a sweep trial killed while setting up starts over without leaving
    a second, ``KILLED`` run of the same name). The run-info file goes too, so the new run's provenance is its own."""
    left = folder.read_info()
    if left is None:
        return
    if left["tracking_uri"] == uri:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already gone (a store replaced or cleaned): nothing to delete
            client.delete_run(left["mlflow_run_id"])
    folder.info.unlink(missing_ok=True)


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
        if uri == folder.own_store_uri():
            new_store(folder.mlflow_db)
        client = _client(uri)
        _replace_unsaved(client, folder, uri)
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
            # original's id: forget it, so this process writes into this folder (the cache is private and has no
            # public way to be cleared; without this, a process that opened the original first writes there).
            from mlflow.tracking._tracking_service import utils

            getattr(utils, "_artifact_repos_cache", {}).pop(info["mlflow_run_id"], None)
        return cls(client, info["mlflow_run_id"])

    @classmethod
    def at(cls, uri: str, run_id: str) -> Tracker:
        """The record ``run_id`` in the store at ``uri`` (the sweep reads and tags its trials' records this way)."""
        return cls(_client(uri), run_id)

    def latest_metrics(self) -> dict[str, float]:
        """The latest value of each of the run's metrics."""
        return dict(self.client.get_run(self.run_id).data.metrics)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set the run's ``tags`` in one round trip."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in tags.items()])

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
