"""RMSNorm computed in float32 whatever the input dtype: the one norm of heads, actor-critic and backbones.

The reference's RMSNorm layers (torchtune's in the MLP heads and the Mamba stem, mamba-ssm's Triton ones in the
Mamba blocks) all normalise in float32 and hand back the input's dtype, so a bf16 run differs from a float32
run only by the rounding of the norm's output. ``torch.nn.RMSNorm`` instead normalises in the input's dtype
(bf16 under autocast): :class:`RMSNorm` and :func:`rms_norm` do what the reference does. Float64 inputs stay
float64 (:func:`acc_dtype`), so the float64 parity tests keep their round-off.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REFERENCE_EPS = 1e-6
"""eps of the reference's torchtune RMSNorm (MLP heads, actor-critic, Mamba stem)."""


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: the dtype for decays, cumulative sums, norms and the carried SSM state."""
    return torch.promote_types(dtype, torch.float32)


def rms_norm(x: Tensor, norm: nn.RMSNorm, out_dtype: torch.dtype) -> Tensor:
    """``norm`` applied in at least float32 (weight included, autocast off), cast to ``out_dtype``."""
    acc = acc_dtype(x.dtype)
    weight = None if norm.weight is None else norm.weight.to(acc)
    no_autocast = (torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type)
                   else contextlib.nullcontext())
    with no_autocast:
        out = F.rms_norm(x.to(acc), norm.normalized_shape, weight, norm.eps)
    return out.to(out_dtype)


class RMSNorm(nn.RMSNorm):
    """``torch.nn.RMSNorm`` that normalises in at least float32 and returns the input's dtype (module docstring).

    Same parameters and ``state_dict`` keys as ``torch.nn.RMSNorm``; the default eps is the reference's 1e-6.
    """

    def __init__(self, normalized_shape: int, eps: float = REFERENCE_EPS, **kwargs) -> None:
        super().__init__(normalized_shape, eps=eps, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self, x.dtype)
