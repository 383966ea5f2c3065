"""Mamba-2 dynamics backbone (DRAMA's default), pure PyTorch with an optional mamba-ssm kernel path
(:mod:`drama.nn.backbones.kernels`).

The residual stack is :class:`~drama.nn.backbones.mixer_model.MixerModel`; the mixer mirrors
``mamba_ssm/modules/mamba2.py: Mamba2``: ``in_proj`` -> [z, xBC, dt]; depthwise causal conv + SiLU on xBC ->
[x, B, C]; ``dt = softplus(dt + dt_bias)``, ``A = -exp(A_log)``; chunked SSD scan (Dao & Gu 2024, Listing 1);
``y + D x``; gated RMSNorm ``RMSNorm(y * SiLU(z)) * w``; ``out_proj``.

The recurrent state is ``{"conv": (B, n_layer, d_conv - 1, conv_dim), "ssm": (B, n_layer, nheads, headdim,
d_state)}``: the last ``d_conv - 1`` pre-conv xBC inputs and the SSM state ``H``. ``L`` calls of
:meth:`Mamba2Backbone.step` equal one :meth:`Mamba2Backbone.forward`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drama.nn.backbones import kernels
from drama.nn.backbones.mixer_model import Mixer, MixerModel, causal_conv, causal_conv_step
from drama.nn.norm import RMSNorm, acc_dtype, rms_norm


def _segsum(a: Tensor) -> Tensor:
    """Segment sums ``out[..., i, j] = sum_{m=j+1..i} a[..., m]`` for ``i >= j`` and ``-inf`` for ``i < j``.

    Built as a masked cumulative sum: never ``exp`` of a positive difference, so neither
    overflow nor ``inf * 0`` NaN gradients. ``a`` (..., T) -> (..., T, T).
    """
    T = a.size(-1)
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    strictly_lower = torch.tril(ones, diagonal=-1)  # [m, j]: m > j
    terms = a.unsqueeze(-1).expand(*a.shape, T).masked_fill(~strictly_lower, 0.0)  # [..., m, j] = a_m (m > j)
    seg = terms.cumsum(dim=-2)  # [..., i, j] = sum_{j < m <= i} a_m
    return seg.masked_fill(~torch.tril(ones), float("-inf"))


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor,
                  C: Tensor) -> tuple[int, int, int, int, int, int]:
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    if dt.shape != (b, l, h) or A.shape != (h,) or B.shape != (b, l, g, n) or C.shape != B.shape:
        raise ValueError(f"bad SSD shapes x={tuple(x.shape)} dt={tuple(dt.shape)} A={tuple(A.shape)} "
                         f"B={tuple(B.shape)} C={tuple(C.shape)}")
    if h % g:
        raise ValueError(f"nheads {h} is not a multiple of ngroups {g}")
    return b, l, h, p, g, n


def _chunk_states(S: Tensor, s: Tensor, initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """Step 3 of :func:`ssd_chunked`: the recurrence H_k = exp(alpha_k) H_{k-1} + S_k over the chunk states ``S``
    (b, k, g, r, p, n; float32 or wider) with alpha_k the last cumulative log-decay of chunk k (``s``: b, k, g, r,
    q), as one (k+1)x(k+1) matrix over [H_init, S_0..S_{k-1}]: row z is the state entering chunk z, row k the final
    state. Returns (the states entering chunks 0..k-1, the final state (b, g, r, p, n))."""
    b, _, g, r, p, n = S.shape
    if initial_state is None:
        H0 = torch.zeros(b, g, r, p, n, dtype=S.dtype, device=S.device)
    else:
        H0 = initial_state.to(S.dtype).reshape(b, g, r, p, n)
    states = torch.cat([H0.unsqueeze(1), S], dim=1)  # (b, k+1, g, r, p, n)
    alpha = F.pad(s[..., -1], (0, 0, 0, 0, 1, 0))  # [0, alpha_0..alpha_{k-1}], (b, k+1, g, r)
    chunk_decay = torch.exp(_segsum(alpha.permute(0, 2, 3, 1)))  # (b, g, r, k+1, k+1)
    H_all = torch.einsum("bgrzc,bcgrpn->bzgrpn", chunk_decay, states)
    return H_all[:, :-1], H_all[:, -1]


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan (Dao & Gu 2024, Listing 1), an exact regrouping of the recurrence
    ``H_t = exp(dt_t A) H_{t-1} + (dt_t x_t) ⊗ B_t``, ``y_t = H_t C_t`` (the ``D x`` skip is not included).

    Args:
        x: inputs (b, l, h, p).
        dt: step sizes, already softplus-ed (b, l, h).
        A: negative per-head decay rates (h,).
        B, C: input / output projections shared by the heads of a group (b, l, g, n).
        chunk_size: chunk length Q >= 1 (any value gives the same result; ``min(Q, l)`` is used). The tail
            is padded with ``x̄ = 0, a = 0`` when Q does not divide l.
        initial_state: ``H`` entering the sequence (b, h, p, n); zeros if None.

    Returns:
        ``y`` (b, l, h, p) in x's dtype and the final state ``H`` (b, h, p, n) in at least float32.
    """
    b, l, h, p, g, n = _check_shapes(x, dt, A, B, C)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    r = h // g  # heads per group
    dtype, acc = x.dtype, acc_dtype(x.dtype)
    q = min(chunk_size, max(l, 1))
    pad = (-l) % q
    k = (l + pad) // q

    a = dt.to(acc) * A.to(acc)  # log-decay a_t = dt_t * A <= 0, (b, l, h)
    xbar = x * dt.to(dtype).unsqueeze(-1)  # x̄_t = dt_t * x_t, (b, l, h, p)
    if pad:  # padded steps have x̄ = 0 and a = 0: they change neither the outputs nor the final state
        a = F.pad(a, (0, 0, 0, pad))
        xbar = F.pad(xbar, (0, 0, 0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    xbar = xbar.reshape(b, k, q, g, r, p)
    B = B.reshape(b, k, q, g, n)
    C = C.reshape(b, k, q, g, n)
    a = a.reshape(b, k, q, g, r).permute(0, 1, 3, 4, 2)  # (b, k, g, r, q)
    s = a.cumsum(dim=-1)  # cumulative log-decay s_k(i)

    # 1. Intra-chunk term: ((C B^T) ⊙ Λ) X̄ with Λ = exp(segsum(a)).
    CB = torch.einsum("bkign,bkjgn->bkgij", C, B)  # (b, k, g, q, q)
    decay_mask = torch.exp(_segsum(a)).to(dtype)  # (b, k, g, r, q, q)
    y = torch.einsum("bkgrij,bkjgrp->bkigrp", CB.unsqueeze(3) * decay_mask, xbar)

    # 2. Chunk states S_k = sum_j exp(s(Q-1) - s(j)) x̄_j ⊗ B_j (exponent <= 0: safe).
    decay_to_end = torch.exp(s[..., -1:] - s).to(dtype).permute(0, 1, 4, 2, 3)  # (b, k, q, g, r)
    S = torch.einsum("bkjgn,bkjgrp->bkgrpn", B, xbar * decay_to_end.unsqueeze(-1)).to(acc)

    # 3. Inter-chunk recurrence (the states entering each chunk and the final one).
    H_enter, H_final = _chunk_states(S, s, initial_state)

    # 4. State-to-output term Y_off[k, i] = exp(s_k(i)) H_{k-1} C_{k,i}.
    decay_in = torch.exp(s).permute(0, 1, 4, 2, 3).unsqueeze(-1)  # (b, k, q, g, r, 1)
    y_off = torch.einsum("bkign,bkgrpn->bkigrp", C.to(acc), H_enter) * decay_in
    y = y + y_off.to(dtype)

    y = y.reshape(b, k * q, h, p)[:, :l]
    return y, H_final.reshape(b, h, p, n)


class Mamba2Mixer(Mixer):
    """One Mamba-2 mixer (``mamba_ssm/modules/mamba2.py: Mamba2``) with a parallel and a one-token path."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, headdim: int = 64, ngroups: int = 1,
                 d_conv: int = 4, chunk_size: int = 256, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, A_init_range: tuple[float, float] = (1.0, 16.0),
                 impl: str = "auto") -> None:
        super().__init__()
        self.d_model, self.d_state, self.ngroups, self.d_conv = d_model, d_state, ngroups, d_conv
        self.headdim, self.chunk_size, self.impl = headdim, chunk_size, impl
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of headdim {headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads {self.nheads} is not a multiple of ngroups {ngroups}")
        if d_conv < 1 or chunk_size < 1:
            raise ValueError("d_conv and chunk_size must be >= 1")
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.conv_shape = (d_conv - 1, self.conv_dim)
        self.ssm_shape = (self.nheads, headdim, d_state)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
                                bias=True, padding=0)

        # dt ~ log-uniform[dt_min, dt_max], floored, stored as its inverse softplus.
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNorm(self.d_inner, eps=1e-5)  # gated: RMSNorm(y * SiLU(z)) * w
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _split_xBC(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gn = self.ngroups * self.d_state
        x, B, C = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        lead = x.shape[:-1]
        return (x.reshape(*lead, self.nheads, self.headdim), B.reshape(*lead, self.ngroups, self.d_state),
                C.reshape(*lead, self.ngroups, self.d_state))

    def _gate_and_project(self, y: Tensor, z: Tensor) -> Tensor:
        gated = y * F.silu(z)
        return self.out_proj(rms_norm(gated, self.norm, z.dtype))

    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor,
                zero_state: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Parallel pass ``u`` (b, l, d_model) from (conv_state (b, d_conv-1, conv_dim), ssm_state
        (b, h, p, n)) -> (out (b, l, d_model), final conv_state, final ssm_state)."""
        b, l, _ = u.shape
        z, xBC, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC, new_conv_state = causal_conv(xBC, conv_state, self.conv1d)
        x, B, C = self._split_xBC(F.silu(xBC))
        acc = acc_dtype(u.dtype)
        A = -torch.exp(self.A_log.to(acc))
        if kernels.use_kernels(self.impl, u):
            y, H = kernels.ssd_scan(x, dt, A, B, C, self.D, self.dt_bias, self.chunk_size, ssm_state)
        else:
            dt = F.softplus(dt.to(acc) + self.dt_bias.to(acc))  # (b, l, h)
            y, H = ssd_chunked(x, dt, A, B, C, self.chunk_size, initial_state=ssm_state)
            y = y + x * self.D.to(y.dtype).unsqueeze(-1)
        out = self._gate_and_project(y.reshape(b, l, self.d_inner).to(z.dtype), z)
        return out, new_conv_state, H.to(ssm_state.dtype)

    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, conv_out: Tensor | None = None,
             ssm_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One token ``u`` (b, d_model) -> (out (b, d_model), new conv_state, new ssm_state).

        The given states are never modified. ``conv_out`` / ``ssm_out`` are optional preallocated buffers
        (shaped like the states, outside autograd) that the new states are written into, which saves a copy
        of the large SSM state when the caller stacks layers.
        """
        b = u.shape[0]
        g, r, p, n = self.ngroups, self.nheads // self.ngroups, self.headdim, self.d_state
        z, xBC, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC_conv, conv_out = causal_conv_step(xBC, conv_state, self.conv1d, conv_out)
        x, B, C = self._split_xBC(F.silu(xBC_conv))  # (b, h, p), (b, g, n), (b, g, n)
        acc = ssm_state.dtype
        A = -torch.exp(self.A_log.to(acc))

        if kernels.use_kernels(self.impl, u):
            y, H = kernels.ssd_step(ssm_state, x, dt, A, B, C, self.D, self.dt_bias)
            if ssm_out is not None:
                H = ssm_out.copy_(H)
        else:
            # H <- exp(dt A) H + (dt x) ⊗ B ;  y = H C + D x
            dt = F.softplus(dt.to(acc) + self.dt_bias.to(acc))  # (b, h)
            dA = torch.exp(dt * A)[..., None, None]  # (b, h, 1, 1)
            H = (ssm_state * dA).contiguous() if ssm_out is None else torch.mul(ssm_state, dA, out=ssm_out)
            H_rows = H.view(b, g, r * p, n)  # heads of a group share B and C
            xdt = (x.to(acc) * dt.unsqueeze(-1)).view(b, g, r * p, 1)
            H_rows.addcmul_(xdt, B.to(acc).unsqueeze(-2))
            y = torch.matmul(H_rows, C.to(acc).unsqueeze(-1)).view(b, self.nheads, p)
            y = y.to(x.dtype) + x * self.D.to(x.dtype).unsqueeze(-1)
        out = self._gate_and_project(y.reshape(b, self.d_inner).to(z.dtype), z)
        return out, conv_out, H


class Mamba2Backbone(MixerModel):
    """DRAMA's Mamba-2 dynamics model: stem, ``n_layer`` Mamba-2 blocks, final RMSNorm."""

    def __init__(self, input_dim: int, d_model: int = 512, n_layer: int = 2, d_state: int = 16,
                 expand: int = 2, headdim: int = 64, ngroups: int = 1, d_conv: int = 4,
                 chunk_size: int = 256, impl: str = "auto") -> None:
        super().__init__(input_dim, d_model, n_layer, lambda: Mamba2Mixer(
            d_model, d_state=d_state, expand=expand, headdim=headdim, ngroups=ngroups, d_conv=d_conv,
            chunk_size=chunk_size, impl=impl))
        mixer = self.layers[0].mixer
        self.conv_dim, self.d_conv = mixer.conv_dim, d_conv
        self.nheads, self.headdim, self.d_state = mixer.nheads, headdim, d_state
