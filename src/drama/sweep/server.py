"""The MLflow server ``drama sweep`` runs on loopback (one per sweep), so that its Ray workers log to one store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from drama.config import ConfigError
from drama.processes import terminate_with_parent

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

    def launch(self) -> None:
        """Start the server process on a free port without waiting for it (:meth:`start` waits), so that the
        caller can do something else meanwhile (the sweep starts Ray)."""
        env = {**os.environ,
               # no job runner (huey consumers: 7 extra processes, twice the start-up time), no telemetry
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(port), cwd=self.workdir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=terminate_with_parent())
        self.url = f"http://127.0.0.1:{port}"

    def start(self, attempts: int = 3) -> str:
        """Start it (unless :meth:`launch` did) and wait for ``/health``; returns its URL. A new port is tried if
        another process took the free one before the server bound it."""
        for _ in range(attempts):
            if self.proc is None:
                self.launch()
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
