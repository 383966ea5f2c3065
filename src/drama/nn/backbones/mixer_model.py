"""The residual stack that wraps DRAMA's Mamba mixers (``mamba_ssm/models/mixer_seq_simple.py: MixerModel``),
shared by Mamba-2 and Mamba-1:

* stem ``Linear(input_dim -> d_model, bias)`` -> RMSNorm (eps 1e-6) -> SiLU;
* ``n_layer`` "add then norm" blocks without MLP (``block.py: Block``): ``residual <- x + residual`` (kept in
  float32 for lower-precision inputs, ``residual_in_fp32``), ``x <- Mixer(RMSNorm(residual))``;
* ``h = norm_f(x + residual)``;
* init (``_init_weights``): every Linear bias zeroed except those marked ``_no_reinit`` (Mamba-1's
  ``dt_proj.bias``); each mixer's ``out_proj.weight`` kaiming-uniform divided by sqrt(n_layer).

A mixer carries a causal-conv buffer and an SSM state; the backbone state stacks them over layers as a
TensorDict ``{"conv": (B, n_layer, *conv_shape), "ssm": (B, n_layer, *ssm_shape)}``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from drama.nn.backbones.base import Backbone
from drama.nn.norm import RMSNorm, acc_dtype, rms_norm


def stem(x: Tensor, proj: nn.Linear, norm: nn.RMSNorm) -> Tensor:
    """The Mamba stem ``SiLU(RMSNorm(proj(x)))`` (norm in at least float32), in x's dtype."""
    return F.silu(rms_norm(proj(x), norm, x.dtype))


def causal_conv(x: Tensor, conv_state: Tensor, conv1d: nn.Conv1d) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv over ``x`` (b, l, c) continuing from ``conv_state`` (b, d_conv-1, c), the last
    inputs before ``x`` (time-major) -> (pre-activation output (b, l, c), new buffer (b, d_conv-1, c))."""
    seq = torch.cat([conv_state.to(x.dtype), x], dim=1)  # (b, d_conv-1+l, c)
    keep = conv1d.kernel_size[0] - 1
    new_state = seq[:, seq.size(1) - keep:]
    out = F.conv1d(seq.transpose(1, 2), conv1d.weight, conv1d.bias, groups=conv1d.groups)  # (b, c, l)
    return out.transpose(1, 2), new_state


def causal_conv_step(x: Tensor, conv_state: Tensor, conv1d: nn.Conv1d,
                     conv_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One token of :func:`causal_conv`: ``x`` (b, c) -> (pre-activation output (b, c), new buffer).

    The buffer is time-major, so each tap is one multiply-add over contiguous (b, c) rows (5x faster than a
    reduction over a trailing axis of d_conv-1 at the paper shape, one thread). ``conv_state`` is not modified;
    ``conv_out`` is an optional preallocated buffer for the new one.
    """
    conv_state = conv_state.to(x.dtype)
    weight = conv1d.weight.squeeze(1).t()  # (d_conv, c)
    out = torch.addcmul(conv1d.bias, x, weight[-1])
    for tap in range(conv_state.size(1)):
        out = out.addcmul_(conv_state[:, tap], weight[tap])
    if conv_out is None:
        conv_out = torch.cat([conv_state, x.unsqueeze(1)], dim=1)[:, 1:]
    elif conv_out.size(1) > 0:
        conv_out[:, :-1].copy_(conv_state[:, 1:])
        conv_out[:, -1].copy_(x)
    return out, conv_out


class Mixer(nn.Module, ABC):
    """A Mamba mixer: parallel and one-token paths over a (conv buffer, SSM state) pair."""

    conv_shape: tuple[int, ...]
    """Shape of the conv buffer without the batch dimension."""
    ssm_shape: tuple[int, ...]
    """Shape of the SSM state without the batch dimension (kept in at least float32)."""
    out_proj: nn.Linear

    @abstractmethod
    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor,
                zero_state: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``u`` (b, l, d_model) -> (out (b, l, d_model), final conv buffer, final SSM state). ``zero_state``
        says the given states are zeros (lets a kernel without an initial-state input run)."""

    @abstractmethod
    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, conv_out: Tensor | None = None,
             ssm_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One token ``u`` (b, d_model) -> (out, new conv buffer, new SSM state); inputs are not modified.
        ``conv_out`` / ``ssm_out`` are optional preallocated buffers (outside autograd) for the new states."""


class _Block(nn.Module):
    """``mamba_ssm/modules/block.py: Block`` without MLP: the block norm and the mixer."""

    def __init__(self, d_model: int, mixer: Mixer) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model, eps=1e-5)
        self.mixer = mixer


class MixerModel(Backbone):
    """Stem, ``n_layer`` residual mixer blocks and a final RMSNorm (module docstring)."""

    def __init__(self, input_dim: int, d_model: int, n_layer: int, make_mixer: Callable[[], Mixer]) -> None:
        super().__init__()
        self._init_stem(input_dim, d_model, n_layer)
        self.layers = nn.ModuleList(_Block(d_model, make_mixer()) for _ in range(n_layer))
        self.norm_f = RMSNorm(d_model, eps=1e-5)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None \
                    and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        for block in self.layers:
            weight = block.mixer.out_proj.weight
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            with torch.no_grad():
                weight /= math.sqrt(self.n_layer)

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TensorDict:
        """Zero conv buffers (dtype) and zero SSM states (at least float32)."""
        device, dtype = self._state_placement(device, dtype)
        mixer = self.layers[0].mixer
        conv = torch.zeros(batch_size, self.n_layer, *mixer.conv_shape, dtype=dtype, device=device)
        ssm = torch.zeros(batch_size, self.n_layer, *mixer.ssm_shape, dtype=acc_dtype(dtype), device=device)
        return TensorDict({"conv": conv, "ssm": ssm}, batch_size=[batch_size])

    def _run(self, x: Tensor, state: TensorDict, single: bool, zero_state: bool = False) -> tuple[Tensor, TensorDict]:
        hidden = stem(x, self.stem_proj, self.stem_norm)
        residual: Tensor | None = None
        res_dtype = acc_dtype(hidden.dtype)  # residual_in_fp32
        # Without autograd, step writes each layer's new state straight into the stacked output.
        buffered = single and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if buffered:
            conv_new, ssm_new = torch.empty_like(state["conv"]), torch.empty_like(state["ssm"])
        convs, ssms = [], []
        for i, block in enumerate(self.layers):
            residual = hidden.to(res_dtype) if residual is None else residual + hidden
            normed = rms_norm(residual, block.norm, hidden.dtype)
            conv_i, ssm_i = state["conv"][:, i], state["ssm"][:, i]
            if buffered:
                hidden, _, _ = block.mixer.step(normed, conv_i, ssm_i, conv_new[:, i], ssm_new[:, i])
                continue
            if single:
                hidden, conv_i, ssm_i = block.mixer.step(normed, conv_i, ssm_i)
            else:
                hidden, conv_i, ssm_i = block.mixer(normed, conv_i, ssm_i, zero_state=zero_state)
            convs.append(conv_i)
            ssms.append(ssm_i)
        residual = hidden.to(res_dtype) if residual is None else residual + hidden
        h = rms_norm(residual, self.norm_f, hidden.dtype)
        if not buffered:
            conv_new, ssm_new = torch.stack(convs, dim=1), torch.stack(ssms, dim=1)
        return h, TensorDict({"conv": conv_new, "ssm": ssm_new}, batch_size=[x.shape[0]])

    def forward(self, x: Tensor, state: TensorDict | None = None) -> tuple[Tensor, TensorDict]:
        """Parallel pass ``x`` (B, L, input_dim) from ``state`` (zeros if None) -> (h (B, L, d_model),
        final state)."""
        zero_state = state is None
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self._run(x, state, single=False, zero_state=zero_state)

    def step(self, x: Tensor, state: TensorDict) -> tuple[Tensor, TensorDict]:
        """One token ``x`` (B, input_dim) -> (h (B, d_model), new state); ``state`` is left unchanged."""
        return self._run(x, state, single=True)
