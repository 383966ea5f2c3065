"""Transformer dynamics backbone with a real key/value cache.

Inherited from STORM (``sub_models/transformer_model.py: StochasticTransformerKVCache`` and
``sub_models/attention_blocks.py``), with the same parameter layout (5,059,584 parameters at the paper shape)
and PyTorch default init:

* stem ``Linear(input_dim -> d_model, no bias) -> LayerNorm -> ReLU -> Linear(no bias) -> LayerNorm``;
* a learned position embedding ``Embedding(max_length, d_model)`` added at the absolute position, then
  ``LayerNorm(eps 1e-6)``;
* ``n_layer`` post-LN blocks: causal multi-head attention (``w_qs``, ``w_ks``, ``w_vs``, ``fc``, no bias;
  dropout on the attention weights and on the output) then ``LayerNorm(residual + out)``; a ReLU FFN
  (``w_1``, ``w_2`` with bias, dropout) then ``LayerNorm(residual + out)``. ``h`` is the last block's output.

Unlike the reference, which caches each layer's *input features* and re-projects the whole cache at every
step (docs/decisions.md, "re-projected Transformer cache"), the recurrent state holds the *projected* keys and
values, a TensorDict ``{"k": (B, n_layer, T, heads, d_k), "v": (B, n_layer, T, heads, d_k)}`` of the ``T``
tokens read so far (``T = 0`` in the initial state). The next token sits at position ``T``; reading past
``max_length`` tokens raises a ``ValueError``. ``L`` calls of :meth:`TransformerBackbone.step` equal one
:meth:`TransformerBackbone.forward` (dropout is active in training mode only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from drama.nn.backbones.base import Backbone


class MultiHeadAttention(nn.Module):
    """STORM's post-LN multi-head attention (``attention_blocks.py: MultiHeadAttention``) over a KV cache."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.heads, self.d_k, self.p_drop = heads, d_model // heads, dropout
        self.w_qs = nn.Linear(d_model, d_model, bias=False)
        self.w_ks = nn.Linear(d_model, d_model, bias=False)
        self.w_vs = nn.Linear(d_model, d_model, bias=False)
        self.fc = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (B, L, d_model) at positions ``T..T+L-1`` after the cached (B, T, heads, d_k) keys/values ->
        (out (B, L, d_model), keys (B, T+L, heads, d_k), values (B, T+L, heads, d_k)).

        Each new token attends to the cache and to the new tokens up to itself (causal)."""
        b, l, d = x.shape
        t = k_cache.shape[1]
        q = self.w_qs(x).view(b, l, self.heads, self.d_k)
        k_new = self.w_ks(x).view(b, l, self.heads, self.d_k)
        v_new = self.w_vs(x).view(b, l, self.heads, self.d_k)
        k = torch.cat([k_cache.to(k_new.dtype), k_new], dim=1)
        v = torch.cat([v_cache.to(v_new.dtype), v_new], dim=1)
        # Query i (position t + i) sees keys 0..t + i; a single query sees the whole cache.
        mask = None if l == 1 else torch.ones(l, t + l, dtype=torch.bool, device=x.device).tril(diagonal=t)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=mask, dropout_p=self.p_drop if self.training else 0.0)
        out = self.dropout(self.fc(attn.transpose(1, 2).reshape(b, l, d)))
        return self.layer_norm(x + out), k, v


class PositionwiseFeedForward(nn.Module):
    """STORM's post-LN FFN (``attention_blocks.py: PositionwiseFeedForward``)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, ffn_dim)
        self.w_2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """``LayerNorm(x + Dropout(w_2(ReLU(w_1(x)))))``."""
        return self.layer_norm(x + self.dropout(self.w_2(F.relu(self.w_1(x)))))


class AttentionBlock(nn.Module):
    """One post-LN block (``attention_blocks.py: AttentionBlockKVCache``): attention then FFN."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.slf_attn = MultiHeadAttention(d_model, heads, dropout)
        self.pos_ffn = PositionwiseFeedForward(d_model, ffn_dim, dropout)

    def forward(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (B, L, d_model) after the cached keys/values -> (out, keys, values); see
        :meth:`MultiHeadAttention.forward`."""
        x, k, v = self.slf_attn(x, k_cache, v_cache)
        return self.pos_ffn(x), k, v


class TransformerBackbone(Backbone):
    """DRAMA's Transformer dynamics model: stem, position embedding, ``n_layer`` post-LN
    attention blocks, with a cache of projected keys and values as its recurrent state."""

    def __init__(self, input_dim: int, d_model: int = 512, n_layer: int = 2, heads: int = 8, ffn_dim: int = 1024,
                 dropout: float = 0.1, max_length: int = 128) -> None:
        super().__init__()
        if n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {n_layer}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim, self.output_dim = input_dim, d_model
        self.d_model, self.n_layer, self.heads, self.max_length = d_model, n_layer, heads, max_length
        self.stem = nn.Sequential(
            nn.Linear(input_dim, d_model, bias=False),
            nn.LayerNorm(d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model, bias=False),
            nn.LayerNorm(d_model),
        )
        self.position_embedding = nn.Embedding(max_length, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-6)
        self.layers = nn.ModuleList(AttentionBlock(d_model, heads, ffn_dim, dropout) for _ in range(n_layer))
        self.d_k = d_model // heads

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TensorDict:
        """An empty cache: keys and values of shape (batch_size, n_layer, 0, heads, d_k)."""
        device, dtype = self._state_placement(device, dtype)
        empty = torch.zeros(batch_size, self.n_layer, 0, self.heads, self.d_k, dtype=dtype, device=device)
        return TensorDict({"k": empty, "v": empty.clone()}, batch_size=[batch_size])

    def _run(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """``x`` (B, L, input_dim) read after the ``T`` cached tokens -> (h (B, L, d_model), new state)."""
        b, l, _ = x.shape
        t = state["k"].shape[2]
        if t + l > self.max_length:
            raise ValueError(f"the Transformer backbone can read at most max_length={self.max_length} tokens; "
                             f"{t} are cached and {l} more were given")
        positions = torch.arange(t, t + l, device=x.device)
        hidden = self.layer_norm(self.stem(x) + self.position_embedding(positions))
        ks, vs = [], []
        for i, block in enumerate(self.layers):
            hidden, k, v = block(hidden, state["k"][:, i], state["v"][:, i])
            ks.append(k)
            vs.append(v)
        return hidden, TensorDict({"k": torch.stack(ks, dim=1), "v": torch.stack(vs, dim=1)}, batch_size=[b])

    def forward(self, x: Tensor, state: TensorDict | None = None) -> tuple[Tensor, TensorDict]:
        """Parallel causal pass ``x`` (B, L, input_dim) at positions ``T..T+L-1`` after ``state``'s ``T``
        cached tokens (none if None) -> (h (B, L, d_model), the cache extended by the ``L`` tokens)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self._run(x, state)

    def step(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """One token ``x`` (B, input_dim) at position ``T`` -> (h (B, d_model), the cache extended by it);
        only the new token is projected, and ``state`` is left unchanged."""
        h, new_state = self._run(x.unsqueeze(1), state)
        return h.squeeze(1), new_state
