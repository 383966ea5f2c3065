"""The one dynamics-backbone interface (docs/design.md, "Architecture").

A backbone maps the embedded world-model input ``[z_t, one_hot(a_t)]`` (B, L, D_in) to ``h`` (B, L, D_h) in
one parallel pass, and advances one token at a time with :meth:`Backbone.step`. Its recurrent state is a
:class:`tensordict.TensorDict` with batch size ``[B]`` so that imagination and acting can carry, index and
reset it without knowing which backbone is inside. For every backbone, ``L`` calls of ``step`` from a state
equal one parallel pass from that state (tests/nn/backbones).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from drama.nn.norm import RMSNorm


class Backbone(nn.Module, ABC):
    """Sequence model ``(B, L, input_dim) -> (B, L, output_dim)`` with a recurrent ``step``."""

    input_dim: int
    output_dim: int

    def _init_stem(self, input_dim: int, d_model: int, n_layer: int) -> None:
        """The sizes and the stem every backbone starts with: ``Linear(input_dim, d_model)`` then RMSNorm (eps
        1e-6), the reference's input projection of ``[z_t, a_t]``."""
        if n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {n_layer}")
        self.input_dim, self.output_dim = input_dim, d_model
        self.d_model, self.n_layer = d_model, n_layer
        self.stem_proj = nn.Linear(input_dim, d_model, bias=True)
        self.stem_norm = RMSNorm(d_model, eps=1e-6)

    def _state_placement(self, device: torch.device | None,
                         dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
        """``device`` / ``dtype`` for a new state, defaulting to those of the backbone's parameters."""
        weight = next(self.parameters())
        return (weight.device if device is None else device), (weight.dtype if dtype is None else dtype)

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TensorDict:
        """The zero state for ``batch_size`` sequences (a TensorDict with batch size ``[batch_size]``)."""

    @abstractmethod
    def forward(self, x: Tensor, state: TensorDict | None = None) -> tuple[Tensor, TensorDict]:
        """Parallel pass over ``x`` (B, L, input_dim) from ``state`` (zero if None) -> (h (B, L, output_dim),
        final state)."""

    @abstractmethod
    def step(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """Advance one token ``x`` (B, input_dim) -> (h (B, output_dim), new state). Does not modify ``state``."""
