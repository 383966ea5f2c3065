"""Mamba-1 dynamics backbone, pure PyTorch with an optional mamba-ssm kernel path.

The residual stack is :class:`~drama.nn.backbones.mixer_model.MixerModel`; the mixer mirrors
``mamba_ssm/modules/mamba_simple.py: Mamba``: ``in_proj`` -> [x, z]; depthwise causal conv + SiLU on x;
``x_proj`` -> [dt (rank ``dt_rank``), B, C]; ``Δ = softplus(dt_proj(dt))``; per-channel selective scan

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t,    y_t = h_t C_t + D x_t,

with S4D-real ``A = -[1..d_state]`` per channel; gating ``y · SiLU(z)``; ``out_proj``. At the paper shape
(d_model 512, expand 2, d_state 16, dt_rank 32) a layer has 1,695,232 parameters.

The recurrent state is ``{"conv": (B, n_layer, d_conv - 1, d_inner), "ssm": (B, n_layer, d_inner, d_state)}``.
The pure-PyTorch scan is a sequential loop over time (like mamba-ssm's ``selective_scan_ref``): a chunked
regrouping as in Mamba-2 would need a (d_inner x d_state x Q x Q) decay tensor per chunk, because A is
per-channel, not per-head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drama.nn.backbones import kernels
from drama.nn.backbones.mixer_model import Mixer, MixerModel, causal_conv, causal_conv_step
from drama.nn.norm import acc_dtype


def selective_scan(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t``, ``y_t = h_t C_t`` (no ``D x`` skip, no gate).

    Args:
        x: inputs (b, l, d).
        delta: step sizes Δ, already softplus-ed (b, l, d).
        A: negative decay rates (d, n).
        B, C: input / output projections (b, l, n).
        initial_state: ``h`` entering the sequence (b, d, n); zeros if None.

    Returns:
        ``y`` (b, l, d) in x's dtype and the final state (b, d, n) in at least float32.
    """
    b, l, d = x.shape
    acc = acc_dtype(x.dtype)
    delta = delta.to(acc)
    decay = torch.exp(delta.unsqueeze(-1) * A.to(acc))  # (b, l, d, n)
    inject = (delta * x.to(acc)).unsqueeze(-1) * B.to(acc).unsqueeze(2)  # (b, l, d, n)
    h = x.new_zeros(b, d, A.shape[-1], dtype=acc) if initial_state is None else initial_state.to(acc)
    states = []
    # unbind, not decay[:, t]: the backward of L slices would each materialise a full (b, l, d, n) gradient
    for decay_t, inject_t in zip(decay.unbind(1), inject.unbind(1), strict=True):
        h = decay_t * h + inject_t
        states.append(h)
    if not states:
        return x.new_zeros(b, 0, d), h
    y = torch.einsum("bldn,bln->bld", torch.stack(states, dim=1), C.to(acc))
    return y.to(x.dtype), h


class MambaMixer(Mixer):
    """One Mamba-1 mixer (``mamba_ssm/modules/mamba_simple.py: Mamba``) with a parallel and a one-token path."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, impl: str = "auto") -> None:
        super().__init__()
        if d_conv < 1:
            raise ValueError("d_conv must be >= 1")
        self.d_model, self.d_state, self.d_conv, self.impl = d_model, d_state, d_conv, impl
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.conv_shape = (d_conv - 1, self.d_inner)
        self.ssm_shape = (self.d_inner, d_state)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, bias=True,
                                padding=0)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # dt_proj: weight ~ U(±dt_rank^-0.5); bias = inverse softplus of dt ~ log-uniform[dt_min, dt_max], floored.
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]  # kept by MixerModel's init
        # S4D-real: A = -[1, ..., d_state] for every channel.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw step sizes (before bias and softplus), B and C from the conv output."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor,
                zero_state: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Parallel pass ``u`` (b, l, d_model) from (conv_state (b, d_conv-1, d_inner), ssm_state
        (b, d_inner, d_state)) -> (out (b, l, d_model), final conv_state, final ssm_state)."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x, new_conv_state = causal_conv(x, conv_state, self.conv1d)
        x = F.silu(x)
        dt, B, C = self._project(x)
        acc = acc_dtype(u.dtype)
        A = -torch.exp(self.A_log.to(acc))
        # The kernel has no initial-state input: it serves passes from the zero state (training, contexts).
        if zero_state and kernels.use_kernels(self.impl, u):
            y, H = kernels.selective_scan(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2),
                                          C.transpose(1, 2), self.D, z.transpose(1, 2), self.dt_proj.bias)
            y = y.transpose(1, 2)
        else:
            delta = F.softplus(dt.to(acc) + self.dt_proj.bias.to(acc))
            y, H = selective_scan(x, delta, A, B, C, initial_state=ssm_state)
            y = (y + x * self.D.to(y.dtype)) * F.silu(z)
        return self.out_proj(y.to(z.dtype)), new_conv_state, H.to(ssm_state.dtype)

    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, conv_out: Tensor | None = None,
             ssm_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One token ``u`` (b, d_model) -> (out (b, d_model), new conv_state, new ssm_state); the given states
        are never modified (``conv_out`` / ``ssm_out``: optional preallocated buffers for the new ones)."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x, conv_out = causal_conv_step(x, conv_state, self.conv1d, conv_out)
        x = F.silu(x)
        dt, B, C = self._project(x)
        acc = ssm_state.dtype
        A = -torch.exp(self.A_log.to(acc))
        if kernels.use_kernels(self.impl, u):
            y, H = kernels.selective_step(ssm_state, x, dt, A, B, C, self.D, z, self.dt_proj.bias)
            if ssm_out is not None:
                H = ssm_out.copy_(H)
        else:
            delta = F.softplus(dt.to(acc) + self.dt_proj.bias.to(acc))  # (b, d)
            dA = torch.exp(delta.unsqueeze(-1) * A)  # (b, d, n)
            H = ssm_state * dA if ssm_out is None else torch.mul(ssm_state, dA, out=ssm_out)
            H.addcmul_((delta * x.to(acc)).unsqueeze(-1), B.to(acc).unsqueeze(1))
            y = torch.einsum("bdn,bn->bd", H, C.to(acc)).to(x.dtype)
            y = (y + x * self.D.to(x.dtype)) * F.silu(z)
        return self.out_proj(y.to(z.dtype)), conv_out, H


class MambaBackbone(MixerModel):
    """DRAMA's Mamba-1 dynamics model: stem, ``n_layer`` Mamba blocks, final RMSNorm."""

    def __init__(self, input_dim: int, d_model: int = 512, n_layer: int = 2, d_state: int = 16, expand: int = 2,
                 d_conv: int = 4, dt_rank: int | None = None, impl: str = "auto") -> None:
        super().__init__(input_dim, d_model, n_layer, lambda: MambaMixer(
            d_model, d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank, impl=impl))
        mixer = self.layers[0].mixer
        self.d_inner, self.d_conv, self.d_state, self.dt_rank = mixer.d_inner, d_conv, d_state, mixer.dt_rank
