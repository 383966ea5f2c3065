"""Compiled hot paths (``runtime.compile``): ``torch.compile`` of the world-model loss, the actor-critic loss and
one imagination step (backbone step + prior sample + policy; Mamba backbones).

Each traces as one graph (``fullgraph=True``: a graph break is an error, not a silent slowdown; a test
checks it) with static shapes (``dynamic=False``: every update has the same batch shape). Only the forward and
loss are compiled; backward runs through AOTAutograd's compiled graph, and the optimiser step, gradient clipping
and the bookkeeping around them stay eager. Inside a compiled step the Mamba stack does not write its new state
into preallocated buffers (``out=`` writes would break the graph); inductor fuses those passes itself. Mode
``none`` keeps everything eager.
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


STEP_COMPILED_BACKBONES = ("mamba2", "mamba")
"""Backbones whose imagination step is compiled: their recurrent state has a fixed shape. The Transformer's key/
value cache grows every step (a new graph per step) and dynamo does not trace ``nn.GRU``: those two imagine
eagerly (their losses are still compiled)."""


def compile_hot_paths(world_model, actor_critic, mode: str) -> None:
    """Route the world model's and the actor-critic's losses and the imagination step through their compiled
    forms for ``mode`` (eager for ``none``)."""
    world_model.loss_fn = maybe_compile(world_model.compute_losses, mode)
    actor_critic.loss_fn = maybe_compile(actor_critic.compute_losses, mode)
    backbone = world_model.cfg.backbone.name
    world_model.step_fn = maybe_compile(world_model.imagination_step,
                                        mode if backbone in STEP_COMPILED_BACKBONES else "none")
