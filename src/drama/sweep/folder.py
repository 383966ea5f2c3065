"""The sweep folder: the one module that owns its layout (trial run folders inside it are :mod:`drama.run`'s).

``<runtime.output_dir, default runs/sweeps>/<name>/``::

    sweep.json             every trial's status, grid values, attempts, result or one-line error, latest metrics
    <trial>/               one run folder per trial
    logs/<trial>.log       each ``$ drama fit|evaluate ...`` line, then that command's output
    logs/mlflow-server.log the sweep's MLflow server
    mlflow.db              the sweep's MLflow store (sqlite), unless MLFLOW_TRACKING_URI is set
    mlartifacts/           its artifacts
    report/                ``drama report`` of the finished trials
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drama.run import ARTIFACTS_DIR, MLFLOW_DB_FILE, InFolder, RunFolder, store_uri

SWEEP_FILE = "sweep.json"
LOGS_DIR = "logs"
REPORT_DIR = "report"


@dataclass(frozen=True)
class SweepFolder:
    """The paths of one sweep folder (the layout above)."""

    root: Path

    def trial(self, name: str) -> Path:
        """The run folder of trial ``name``."""
        return self.root / name

    def trial_log(self, name: str) -> Path:
        """The log of trial ``name``'s commands."""
        return self.root / LOGS_DIR / f"{name}.log"

    def own_store_uri(self) -> str:
        """The URI of the sweep's own sqlite store."""
        return store_uri(self.mlflow_db)

    def evaluated(self, name: str) -> bool:
        """Whether trial ``name`` has an evaluation (a sweep run again skips it)."""
        evaluations = RunFolder(self.trial(name)).evaluations
        return evaluations.is_dir() and any(evaluations.glob("*.json"))

    # the files and folders of the layout above
    record = InFolder(SWEEP_FILE)
    mlflow_db = InFolder(MLFLOW_DB_FILE)
    logs = InFolder(LOGS_DIR)
    report = InFolder(REPORT_DIR)
    artifacts = InFolder(ARTIFACTS_DIR)
    server_log = InFolder(f"{LOGS_DIR}/mlflow-server.log")
