"""Imagination videos and reconstruction images: alignment, shapes, files, the labelled (upscaled) pictures, and
the fit loop's MLflow artifacts."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import torch
from tensordict import TensorDict

from conftest import tiny_config
from drama.run import RunFolder
from drama.visuals import (
    LABELLED_FPS,
    band_height,
    imagination_frames,
    labelled_imagination,
    labelled_reconstruction,
    reconstruction_grid,
    to_frames,
    upscale,
    write_gif,
    write_png,
)
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


def _has_text(rows: np.ndarray) -> bool:
    """A header row holds text: dark (black text) pixels on its light background."""
    return int((rows.max(axis=-1) < 100).sum()) > 30 and rows.min() < 100 < rows.max()


def test_upscale_is_nearest_neighbour():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    big = upscale(frames, 4)
    assert big.shape == (3, 20, 28, 3) and big.dtype == np.uint8
    for dy in range(4):
        for dx in range(4):
            np.testing.assert_array_equal(big[:, dy::4, dx::4], frames)
    np.testing.assert_array_equal(upscale(frames[0], 1), frames[0])


def test_labelled_reconstruction_png_has_its_size_labelled_headers_and_the_upscaled_frames(tmp_path):
    wm = WorldModel(tiny_config().world_model, (3, 64, 64), 6)
    grid = reconstruction_grid(wm, _window(12)["observation"], columns=8)
    path = write_png(labelled_reconstruction(grid, step=60, scale=4), tmp_path / "reconstruction.png")
    image = iio.imread(path)
    band = band_height(4)
    assert image.shape == (3 * band + 2 * 4 * 64, 4 * (8 * 66 - 2), 3) and image.dtype == np.uint8
    title, real_header = image[:band], image[band:2 * band]
    real, reconstruction_header = image[2 * band:2 * band + 256], image[2 * band + 256:3 * band + 256]
    assert _has_text(title) and _has_text(real_header) and _has_text(reconstruction_header)
    assert not np.array_equal(real_header[:, :200], reconstruction_header[:, :200])  # "real" / "reconstruction"
    np.testing.assert_array_equal(real, upscale(grid[:64], 4))
    np.testing.assert_array_equal(image[3 * band + 256:], upscale(grid[66:], 4))
    assert not np.array_equal(_header(labelled_reconstruction(grid, step=60)), _header(labelled_reconstruction(grid)))


def _header(image: np.ndarray) -> np.ndarray:
    return image[:band_height()]


def test_labelled_imagination_gif_has_panel_labels_a_frame_counter_and_the_upscaled_frames(tmp_path):
    wm = WorldModel(tiny_config().world_model, (3, 64, 64), 6)
    frames = imagination_frames(wm, _window(8), context=3)
    labelled = labelled_imagination(frames, context=3, step=60, scale=4)
    band = band_height(4)
    assert labelled.shape == (8, 2 * band + 256, 4 * 130, 3) and labelled.dtype == np.uint8
    np.testing.assert_array_equal(labelled[:, 2 * band:], upscale(frames["comparison"], 4))
    titles, real_headers, model_headers = labelled[:, :band], labelled[:, band:2 * band, :256], \
        labelled[:, band:2 * band, 264:]
    assert all(len({t.tobytes() for t in headers}) == 1 for headers in (real_headers, model_headers[:3],
                                                                            model_headers[3:]))
    assert not np.array_equal(model_headers[2], model_headers[3])  # "context" -> "imagined"
    assert len({t.tobytes() for t in titles}) == 8  # the frame counter t=k/8
    back = iio.imread(write_gif(labelled, tmp_path / "imagination.gif", fps=LABELLED_FPS), index=None)
    assert back.shape == labelled.shape and back.dtype == np.uint8
    for frame in back:
        assert _has_text(frame[:band]) and _has_text(frame[band:2 * band, :256])
        assert _has_text(frame[band:2 * band, 264:])


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
