"""Compiled hot paths (``runtime.compile``): ``torch.compile`` of the world-model loss and the actor-critic loss.

Both losses trace as one graph each (``fullgraph=True``: a graph break is an error, not a silent slowdown; a test
checks it) with static shapes (``dynamic=False``: every update has the same batch shape). Only the forward and
loss are compiled; backward runs through AOTAutograd's compiled graph, and the optimiser step, gradient clipping
and the bookkeeping around them stay eager. Mode ``none`` keeps everything eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from drama.config import COMPILE_MODES

F = TypeVar("F", bound=Callable)


def maybe_compile(fn: F, mode: str) -> F:
    """``fn`` itself for mode ``none``, else ``torch.compile(fn, mode=mode, fullgraph=True, dynamic=False)``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "none":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode, fullgraph=True, dynamic=False)


def compile_hot_paths(world_model, actor_critic, mode: str) -> None:
    """Route both modules' training steps through (un)compiled losses for ``mode``."""
    world_model.loss_fn = maybe_compile(world_model.compute_losses, mode)
    actor_critic.loss_fn = maybe_compile(actor_critic.compute_losses, mode)
