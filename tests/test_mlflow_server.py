"""A finished run's MLflow record: its imagination video, read directly and through an MLflow server.

The server test starts ``mlflow server`` on loopback against the run's own sqlite store and checks through its REST
API that the run, its metrics and its video artifact are served. The runs' artifact URIs are absolute local paths
(``<run_dir>/mlartifacts/...``): the server reads them itself (``/get-artifact``, ``artifacts/list``); no
``--artifacts-destination`` is involved.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from drama.config import load_config

STARTUP_TIMEOUT = 120.0  # seconds; about 15 s on 2 busy cores
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY


def run_info(run_dir: Path) -> dict:
    from drama.run import RunFolder

    return RunFolder(run_dir).read_info()


def window_length(run_dir: Path) -> int:
    cfg = load_config(run_dir / "config.yaml", [])
    return cfg.imagination.context_length + cfg.imagination.horizon


def assert_64x64_rgb_video(frames: np.ndarray, length: int) -> None:
    assert frames.dtype == np.uint8
    assert frames.shape == (length, 64, 64, 3) and length > 1
    assert frames.std() > 0  # not a blank video


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_record_holds_a_64x64_rgb_imagination_video(finished_debug_run, tmp_path):
    """Without a server: the MLflow record lists the imagination GIFs under ``visuals/`` (at step 40 and at the end)
    and the evaluation's episode videos; downloaded, they decode to 64x64 RGB frames."""
    from mlflow.tracking import MlflowClient

    info = run_info(finished_debug_run)
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run_id = info["mlflow_run_id"]
    names = {Path(a.path).name for a in client.list_artifacts(run_id, "visuals")}
    assert {"step00000040_imagination.gif", "step00000060_imagination.gif",
            "step00000060_imagination_vs_real.gif", "step00000060_reconstruction.png"} <= names
    local = client.download_artifacts(run_id, "visuals/step00000060_imagination.gif", str(tmp_path))
    assert Path(local).is_relative_to(tmp_path)
    assert_64x64_rgb_video(iio.imread(local, index=None), window_length(finished_debug_run))

    comparison = iio.imread(client.download_artifacts(run_id, "visuals/step00000060_imagination_vs_real.gif",
                                                      str(tmp_path)), index=None)
    assert comparison.shape[1:] == (64, 2 * 64 + 2, 3)  # real | imagined with a 2-pixel gap
    episodes = [a.path for a in client.list_artifacts(run_id, "evaluations/videos")]
    assert len(episodes) == 2 and all(path.endswith(".gif") for path in episodes)
    frames = iio.imread(client.download_artifacts(run_id, episodes[0], str(tmp_path)), index=None)
    assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.shape[0] > 1


def signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


class MlflowServer:
    """``python -m mlflow server`` on 127.0.0.1 in its own process group (killed as a whole)."""

    def __init__(self, backend_store_uri: str, workdir: Path):
        self.backend_store_uri, self.workdir = backend_store_uri, workdir
        self.log_path = workdir / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    def start(self, attempts: int = 3) -> str:
        env = {**os.environ,
               # no job runner (huey consumers: 7 extra processes, twice the start-up time), no telemetry
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        for _ in range(attempts):  # a new port if another process took the free one before the server bound it
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(port), cwd=self.workdir, env=env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            self.url = f"http://127.0.0.1:{port}"
            if self.wait_ready():
                return self.url
            self.stop()
            if "address already in use" not in self.log().lower():
                break
        raise AssertionError(f"mlflow server did not start: {' '.join(self.command(port))}\n{self.log()[-4000:]}")

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
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
        """SIGTERM to the whole process group (the CLI process and its uvicorn worker), SIGKILL if still there."""
        if self.proc is None:
            return
        group = self.proc.pid
        signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        signal_group(group, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def mlflow_server(finished_debug_run, tmp_path_factory):
    server = MlflowServer(run_info(finished_debug_run)["tracking_uri"], tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server.start()
    finally:
        server.stop()


def get(url: str) -> bytes:
    with LOOPBACK.open(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()


def api(base: str, endpoint: str, **query: str) -> dict:
    return json.loads(get(f"{base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"))


@pytest.mark.slow
def test_mlflow_server_serves_the_run_its_metrics_and_its_video(mlflow_server, finished_debug_run):
    base = mlflow_server
    run_id = run_info(finished_debug_run)["mlflow_run_id"]

    run = api(base, "runs/get", run_id=run_id)["run"]
    assert run["info"]["run_id"] == run_id and run["info"]["status"] == "FINISHED"
    assert run["info"]["run_name"] == finished_debug_run.name
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["world_model.backbone.name"] == "mamba2" and params["train.total_steps"] == "60"

    returns = api(base, "metrics/get-history", run_id=run_id, metric_key="episode/return")["metrics"]
    assert returns and all(m["key"] == "episode/return" and 0 < m["step"] <= 60 for m in returns)
    loss = api(base, "metrics/get-history", run_id=run_id, metric_key="world_model/loss/total")["metrics"]
    assert loss and all(np.isfinite(m["value"]) for m in loss)
    evaluation = api(base, "metrics/get-history", run_id=run_id, metric_key="eval/greedy/return_mean")["metrics"]
    assert any(m["step"] == 60 for m in evaluation)  # the checkpoint's env step

    listing = api(base, "artifacts/list", run_id=run_id, path="visuals")
    files = {f["path"]: f for f in listing["files"]}
    video = "visuals/step00000060_imagination.gif"
    assert video in files and not files[video]["is_dir"] and int(files[video]["file_size"]) > 0

    data = get(f"{base}/get-artifact?{urllib.parse.urlencode({'run_id': run_id, 'path': video})}")
    assert len(data) == int(files[video]["file_size"])
    assert_64x64_rgb_video(iio.imread(data, index=None, extension=".gif"), window_length(finished_debug_run))
