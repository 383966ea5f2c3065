"""Imagination videos and reconstruction images: alignment, shapes, files, and the fit loop's MLflow artifacts."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import torch
from tensordict import TensorDict

from conftest import tiny_config
from drama.run import RunFolder
from drama.visuals import imagination_frames, reconstruction_grid, to_frames, write_gif
from drama.world_model import WorldModel


def _window(length: int = 10) -> TensorDict:
    return TensorDict({"observation": torch.randint(0, 256, (length, 3, 64, 64), dtype=torch.uint8),
                       "action": torch.randint(0, 6, (length,))}, batch_size=[length])


def test_imagination_video_starts_with_the_real_context_and_uses_the_real_later_actions():
    wm = WorldModel(tiny_config().world_model, (3, 64, 64), 6)
    window = _window()
    seen = []
    original = wm.dynamics.step

    def spy(x, state):
        seen.append(x[:, wm.latent_dim:].argmax(-1))
        return original(x, state)

    wm.dynamics.step = spy
    frames = imagination_frames(wm, window, context=4)
    assert frames["imagination"].shape == (10, 64, 64, 3) and frames["imagination"].dtype == np.uint8
    np.testing.assert_array_equal(frames["imagination"][:4], to_frames(window["observation"][:4]))
    np.testing.assert_array_equal(frames["real"], to_frames(window["observation"]))
    assert frames["comparison"].shape == (10, 64, 130, 3)
    assert torch.stack(seen)[:, 0].tolist() == window["action"][4:].tolist()  # a'_j = real a_{context+j}
    assert wm.training  # mode restored


def test_reconstruction_grid_and_gif_round_trip(tmp_path):
    wm = WorldModel(tiny_config().world_model, (3, 64, 64), 6)
    grid = reconstruction_grid(wm, _window(12)["observation"], columns=8)
    assert grid.shape == (130, 8 * 66 - 2, 3) and grid.dtype == np.uint8
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    path = write_gif(frames, tmp_path / "a" / "b.gif")
    back = iio.imread(path, index=None)
    assert back.shape == (5, 64, 64, 3) and back.dtype == np.uint8


def test_fit_logs_imagination_videos_of_64x64_rgb_frames(finished_debug_run):
    import mlflow

    info = RunFolder(finished_debug_run).read_info()
    client = mlflow.tracking.MlflowClient(tracking_uri=info["tracking_uri"])
    names = sorted(a.path for a in client.list_artifacts(info["mlflow_run_id"], "visuals"))
    assert names == [f"visuals/step000000{s}_{kind}" for s in (40, 60)
                     for kind in ("imagination.gif", "imagination_vs_real.gif", "reconstruction.png")]
    local = client.download_artifacts(info["mlflow_run_id"], "visuals/step00000060_imagination.gif",
                                      str(finished_debug_run / "download"))
    frames = iio.imread(local, index=None)
    assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.dtype == np.uint8
    assert frames.shape[0] == 8  # imagination.context_length 4 + horizon 4
