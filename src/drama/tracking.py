"""MLflow tracking through Lightning's ``MLFlowLogger`` (STACK.md 3, 4).

The default tracking store is a sqlite file inside the run directory (``<run_dir>/mlflow.db``) unless
``MLFLOW_TRACKING_URI`` is set; artifacts (videos, images, evaluation results) go to ``<run_dir>/mlartifacts`` when
the experiment is created there. MLflow >= 3.13 refuses the old ``./mlruns`` file store, so a URI is always
passed explicitly. Metrics are accumulated between logs and written as one batch (one sqlite round trip).
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

RUN_INFO_NAME = "run.json"
"""File in a run folder holding its MLflow run id and tracking URI (read on resume, by evaluate and report)."""


def tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs run_dir>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.resolve()}/mlflow.db"


def make_logger(run_dir: Path, experiment: str, run_name: str, run_id: str | None = None):
    """A Lightning ``MLFlowLogger`` for Fabric; ``run_id`` continues an existing run (resume)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow/sqlalchemy deprecation chatter at import
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=tracking_uri(run_dir),
                              run_id=run_id, artifact_location=str((run_dir / "mlartifacts").resolve()))
        _ = logger.experiment  # create the experiment and run now (fails early, not mid-run)
    return logger


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


def run_client(run_dir: Path):
    """``(MlflowClient, run_id)`` of the MLflow record of the run in ``run_dir``, or None without its run.json."""
    import json

    info_path = run_dir / RUN_INFO_NAME
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow/sqlalchemy deprecation chatter at import
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=info["tracking_uri"]), info["mlflow_run_id"]
