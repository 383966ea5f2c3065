"""What the world model sees and imagines, as images and videos (logged during ``fit``, written by ``evaluate``).

* :func:`imagination_frames`: from a real window of the replay, the real context frames, then frames decoded
  from the world model's *open-loop* imagination driven by the window's real later actions, next to the real
  continuation (so the two can be compared frame by frame).
* :func:`reconstruction_grid`: real frames above their reconstructions from posterior samples.
* :func:`labelled_imagination` / :func:`labelled_reconstruction`: the same pictures made readable at a glance for
  the files a user looks at: upscaled (nearest neighbour, :data:`SCALE`) with header rows carrying the labels
  ("real", "context", "imagined", "reconstruction"), the env step and, on GIF frames, a frame counter. The raw
  functions above keep returning the 64x64 frames (tests check those).
* :func:`write_gif` / :func:`write_png`: RGB uint8 frames to files (imageio; GIFs play in the MLflow UI).
* :func:`write_training_visuals`: the three files ``drama fit`` writes every ``train.visuals_every`` env steps.
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
SCALE = 4
"""Default nearest-neighbour upscaling of the labelled pictures (64x64 frames -> 256x256)."""
LABELLED_FPS = 4
"""Frames per second of the labelled imagination GIF (slow enough to read the labels and follow the frames)."""
REAL_COLOUR = (200, 235, 200)
"""Header background (green) over real frames: the real window, the context the model was given, real frames above
their reconstructions."""
MODEL_COLOUR = (255, 215, 170)
"""Header background (orange) over frames the model produced: imagined, reconstructed."""


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


def upscale(frames: np.ndarray, factor: int = SCALE) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) frames by an integer ``factor`` -> (..., fH, fW, C)."""
    if factor < 1:
        raise ValueError(f"upscale factor must be a positive integer, got {factor}")
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def band_height(scale: int = SCALE) -> int:
    """Height in pixels of one header row of text in the labelled pictures."""
    return _font_size(scale) + 2 * max(2, scale)


def _font_size(scale: int) -> int:
    return max(10, 4 * scale)


def band(width: int, labels: list[tuple[int, str]], scale: int = SCALE, right: str | None = None,
         background: tuple[int, ...] | list[tuple[int, ...]] = (255, 255, 255)) -> np.ndarray:
    """One (band_height, width, 3) uint8 header row: black text ``labels`` ((x, text) pairs, left-aligned at x, a
    margin added), ``right`` right-aligned; ``background`` one RGB colour or a list of (x0, x1, r, g, b) spans
    over white."""
    from PIL import Image, ImageDraw, ImageFont

    height, margin = band_height(scale), max(2, scale)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    spans = [(0, width, *background)] if isinstance(background, tuple) else background
    for x0, x1, *colour in spans:
        draw.rectangle((x0, 0, x1 - 1, height - 1), fill=tuple(colour))
    font = ImageFont.load_default(size=_font_size(scale))  # Pillow's built-in font (Aileron, FreeType)
    items = [(x + margin, text) for x, text in labels]
    if right:
        items.append((width - margin - int(draw.textlength(right, font=font)), right))
    for x, text in items:
        top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
        draw.text((x, (height - (bottom - top)) // 2 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(image, dtype=np.uint8)


def labelled_reconstruction(grid: np.ndarray, step: int | None = None, scale: int = SCALE) -> np.ndarray:
    """A :func:`reconstruction_grid` image upscaled ``scale`` times under a title row (with the env ``step``) and
    with a header row over each row of frames: "real" above the real frames, "reconstruction" above theirs."""
    height = (grid.shape[0] - GAP) // 2
    real, reconstruction = upscale(grid[:height], scale), upscale(grid[height + GAP:], scale)
    width = real.shape[1]
    title = "reconstruction from posterior samples" + ("" if step is None else f", env step {step:,}")
    return np.concatenate([band(width, [(0, title)], scale, background=(235, 235, 235)),
                           band(width, [(0, "real")], scale, background=REAL_COLOUR), real,
                           band(width, [(0, "reconstruction")], scale, background=MODEL_COLOUR), reconstruction])


def labelled_imagination(frames: dict[str, np.ndarray], context: int, step: int | None = None,
                         scale: int = SCALE) -> np.ndarray:
    """The real window next to the model's sequence (``frames`` as :func:`imagination_frames` returns them),
    upscaled ``scale`` times: per frame a title row (env ``step``, frame counter "t=k/T") and a header row over
    each panel: "real" over the real window, "context" over the frames the model was given, "imagined" (another
    background colour) over the frames it imagined. -> (T, 2 * band_height + scale * H, scale * (2W + GAP), 3)."""
    body = upscale(side_by_side(frames["real"], frames["imagination"]), scale)
    length, panel = body.shape[0], scale * frames["real"].shape[2]
    width, right = body.shape[2], panel + GAP * scale
    title = "imagination (open loop, real actions)" + ("" if step is None else f", env step {step:,}")
    out = []
    for t in range(length):
        kind, colour = ("context", REAL_COLOUR) if t < context else ("imagined", MODEL_COLOUR)
        head = band(width, [(0, "real"), (right, kind)], scale,
                    background=[(0, panel, *REAL_COLOUR), (right, width, *colour)])
        out.append(np.concatenate([band(width, [(0, title)], scale, right=f"t={t + 1}/{length}",
                                        background=(235, 235, 235)), head, body[t]]))
    return np.stack(out)


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


def write_training_visuals(world_model: WorldModel, window: TensorDict, context: int, step: int,
                           folder: Path) -> list[Path]:
    """The pictures ``drama fit`` keeps of env ``step``, from the latest replay ``window`` (``context`` real frames,
    then open-loop imagination): the imagination GIF (raw 64x64 frames), its labelled comparison with reality and
    the labelled reconstruction image, written to ``folder`` as ``step########_*``. The global RNG state is
    restored afterwards, so training is unaffected."""
    device = world_model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        frames = imagination_frames(world_model, window, context)
        grid = reconstruction_grid(world_model, window["observation"])
    tag = f"step{step:08d}"
    return [write_gif(frames["imagination"], folder / f"{tag}_imagination.gif"),
            write_gif(labelled_imagination(frames, context, step), folder / f"{tag}_imagination_vs_real.gif",
                      fps=LABELLED_FPS),
            write_png(labelled_reconstruction(grid, step), folder / f"{tag}_reconstruction.png")]
