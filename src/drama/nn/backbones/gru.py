"""GRU dynamics backbone, a simple recurrent baseline behind the backbone interface.

The stem is the Mamba backbones' one: ``Linear(input_dim -> d_model, bias)`` (zeroed bias) -> RMSNorm
(eps 1e-6, computed in at least float32) -> SiLU. A multi-layer ``nn.GRU(d_model, d_model, n_layer)`` follows,
and ``h`` is its output. The recurrent state is a TensorDict ``{"h": (B, n_layer, d_model)}``, the hidden
state of every layer. :meth:`GRUBackbone.step` runs the GRU over a length-1 sequence, so ``L`` steps equal one
:meth:`GRUBackbone.forward`.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from drama.nn.backbones.base import Backbone
from drama.nn.backbones.mixer_model import stem


class GRUBackbone(Backbone):
    """Stem, then an ``n_layer`` GRU over ``d_model`` features."""

    def __init__(self, input_dim: int, d_model: int = 512, n_layer: int = 2) -> None:
        super().__init__()
        self._init_stem(input_dim, d_model, n_layer)
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layer, batch_first=True)
        nn.init.zeros_(self.stem_proj.bias)

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TensorDict:
        """Zero hidden states (batch_size, n_layer, d_model)."""
        device, dtype = self._state_placement(device, dtype)
        h = torch.zeros(batch_size, self.n_layer, self.d_model, dtype=dtype, device=device)
        return TensorDict({"h": h}, batch_size=[batch_size])

    def _run(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        u = stem(x, self.stem_proj, self.stem_norm)
        h0 = state["h"].transpose(0, 1).to(u.dtype).contiguous()  # (n_layer, B, d_model)
        out, h_n = self.gru(u, h0)
        return out, TensorDict({"h": h_n.transpose(0, 1).contiguous()}, batch_size=[x.shape[0]])

    def forward(self, x: Tensor, state: TensorDict | None = None) -> tuple[Tensor, TensorDict]:
        """Parallel pass ``x`` (B, L, input_dim) from ``state`` (zeros if None) -> (h (B, L, d_model),
        final state)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self._run(x, state)

    def step(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """One token ``x`` (B, input_dim) -> (h (B, d_model), new state); ``state`` is left unchanged."""
        out, new_state = self._run(x.unsqueeze(1), state)
        return out.squeeze(1), new_state
