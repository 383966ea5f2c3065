"""A finished run's MLflow record: its imagination video, read directly and through an MLflow server.

The server test starts ``mlflow server`` on loopback against the run's own sqlite store and checks through its REST
API that the run, its metrics and its video artifact are served. The runs' artifact URIs are absolute local paths
(``<run_dir>/mlartifacts/...``): the server reads them itself (``/get-artifact``, ``artifacts/list``); no
``--artifacts-destination`` is involved.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from drama.config import load_config
from drama.sweep.server import LOOPBACK, MlflowServer
from drama.visuals import band_height

pytestmark = pytest.mark.xdist_group("mlflow_server")  # its module fixture is built once, on one worker


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
    # real | context, imagined: two header rows over the 4x upscaled panels with a 2-pixel gap
    assert comparison.shape[1:] == (2 * band_height() + 4 * 64, 4 * (2 * 64 + 2), 3)
    episodes = [a.path for a in client.list_artifacts(run_id, "evaluations/videos")]
    assert len(episodes) == 2 and all(path.endswith(".gif") for path in episodes)
    frames = iio.imread(client.download_artifacts(run_id, episodes[0], str(tmp_path)), index=None)
    assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.shape[0] > 1


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
