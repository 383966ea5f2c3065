"""What the world model sees and imagines, as images and videos (logged during ``fit``, written by ``evaluate``).

* :func:`imagination_frames`: from a real window of the replay, the real context frames, then frames decoded
  from the world model's *open-loop* imagination driven by the window's real later actions, next to the real
  continuation (so the two can be compared frame by frame).
* :func:`reconstruction_grid`: real frames above their reconstructions from posterior samples.
* :func:`write_gif` / :func:`write_png`: 64x64 RGB uint8 frames to files (imageio; GIFs play in the MLflow UI).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor

from drama.imagination import imagine

if TYPE_CHECKING:
    from drama.world_model import WorldModel

GAP = 2
"""Pixels of white between side-by-side panels."""


def to_frames(images: Tensor) -> np.ndarray:
    """(T, 3, H, W) uint8 or float in [0, 1] -> (T, H, W, 3) uint8."""
    if images.dtype != torch.uint8:
        images = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Concatenate (T, H, W, 3) frame sequences horizontally with a white gap."""
    t, h = panels[0].shape[:2]
    gap = np.full((t, h, GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for panel in panels:
        parts += [gap, panel] if parts else [panel]
    return np.concatenate(parts, axis=2)


@torch.no_grad()
def imagination_frames(world_model: WorldModel, window: TensorDict, context: int) -> dict[str, np.ndarray]:
    """Open-loop imagination over a real ``window`` (batch ``(L,)``, keys ``observation``, ``action``).

    The first ``context`` frames are encoded and read in one parallel pass; the world model then imagines
    ``L - context`` steps taking the window's real actions ``a_context..a_{L-1}``, so imagined frame ``j`` is the
    prediction of real frame ``context + j``. Returns uint8 (T, H, W, 3) arrays: ``imagination`` (real context,
    then imagined frames; 64x64 for Atari), ``real`` (the real window) and ``comparison`` (real | imagined).
    """
    length = window.batch_size[0]
    if not 1 <= context < length:
        raise ValueError(f"need 1 <= context < window length, got context={context}, length={length}")
    device = world_model.device
    observation, action = window["observation"].to(device), window["action"].to(device)
    later = action[context:]
    step = iter(range(length - context))

    def replay_actions(features: Tensor) -> Tensor:
        return later[next(step)].reshape(1).expand(features.shape[0])

    ctx = TensorDict({"observation": observation[None, :context], "action": action[None, :context]},
                     batch_size=[1, context])
    rollout = imagine(world_model, ctx, replay_actions, horizon=length - context)
    latents = rollout["features"][0, :-1, : world_model.latent_dim]  # ẑ_{context+j}, j = 0..L-context-1
    with world_model.evaluating(), world_model.autocast():
        imagined = world_model.decode(latents.to(world_model.dtype))
    real = to_frames(observation)
    sequence = np.concatenate([real[:context], to_frames(imagined)])
    return {"imagination": sequence, "real": real, "comparison": side_by_side(real, sequence)}


@torch.no_grad()
def reconstruction_grid(world_model: WorldModel, observation: Tensor, columns: int = 8) -> np.ndarray:
    """Up to ``columns`` evenly spaced frames of ``observation`` (T, 3, H, W) uint8 above their reconstructions
    from posterior samples: one (2H + GAP, columns * (W + GAP) - GAP, 3) uint8 image."""
    picks = torch.linspace(0, observation.shape[0] - 1, min(columns, observation.shape[0])).round().long()
    frames = observation[picks].to(world_model.device)
    with world_model.evaluating(), world_model.autocast():
        z, _ = world_model.sample_posterior(frames)
        reconstruction = world_model.decode(z)
    top = side_by_side(*[f[None] for f in to_frames(frames)])[0]
    bottom = side_by_side(*[f[None] for f in to_frames(reconstruction)])[0]
    gap = np.full((GAP, top.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([top, gap, bottom], axis=0)


def write_gif(frames: np.ndarray, path: Path, fps: int = 15) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    return path


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 image as PNG."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image, extension=".png")
    return path
