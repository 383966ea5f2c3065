"""symlog / symexp, the symlog two-hot distribution, and categorical KL with free bits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drama.config import FREE_BITS_MODES


def upcast(x: Tensor) -> Tensor:
    """``x`` in at least float32 (half/bfloat16 -> float32; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def symlog(x: Tensor) -> Tensor:
    """sign(x) * ln(1 + |x|)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """sign(x) * (exp(|x|) - 1), the inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(x.abs())


class SymlogTwoHot(nn.Module):
    """Two-hot distribution over ``bins`` equally spaced symlog-space bins in [low, high].

    ``loss(logits, target)`` is the cross-entropy against the two-hot encoding of ``symlog(target)``; targets
    outside the range are clipped to it (not asserted). ``decode(logits)`` is ``symexp(sum softmax * bins)``.
    The bins follow the arguments (docs/decisions.md, "hard-coded two-hot bins").
    """

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0) -> None:
        super().__init__()
        if bins < 2 or not low < high:
            raise ValueError(f"two-hot needs bins >= 2 and low < high, got {bins} bins over [{low}, {high}]")
        self.register_buffer("bins", torch.linspace(low, high, bins), persistent=False)


    def encode(self, target: Tensor) -> Tensor:
        """Two-hot weights (..., bins) of ``symlog(target)``, clipped to the bin range."""
        bins = self.bins.to(target.dtype)
        y = symlog(target).clamp(bins[0], bins[-1])
        # index of the right neighbour: first bin >= y; y == low maps to bin 0 with all weight on it
        upper = torch.bucketize(y, bins).clamp(1, bins.numel() - 1)
        lower = upper - 1
        width = bins[upper] - bins[lower]
        w_upper = ((y - bins[lower]) / width).clamp(0.0, 1.0)
        out = torch.zeros(*y.shape, bins.numel(), dtype=target.dtype, device=target.device)
        out.scatter_(-1, lower.unsqueeze(-1), (1.0 - w_upper).unsqueeze(-1))
        out.scatter_add_(-1, upper.unsqueeze(-1), w_upper.unsqueeze(-1))
        return out

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-element cross-entropy (shape of ``target``) between ``logits`` and two-hot(symlog(target))."""
        logits = upcast(logits)
        return -(self.encode(upcast(target)).to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1)

    def decode(self, logits: Tensor) -> Tensor:
        """Expected value in symlog space, mapped back with symexp."""
        probs = F.softmax(upcast(logits), dim=-1)
        return symexp((probs * self.bins.to(probs.dtype)).sum(-1))


def categorical_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p || q) of categoricals given as logits (..., K, C), summed over the K variables -> (...)."""
    p_log = F.log_softmax(upcast(p_logits), dim=-1)
    q_log = F.log_softmax(upcast(q_logits), dim=-1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=(-2, -1))


def free_bits_kl(kl: Tensor, free_bits: float, mode: str = "batch") -> Tensor:
    """Free bits on a KL tensor (B, T) summed over variables.

    ``batch`` (reference, default): ``max(free_bits, mean_{B,T} KL)``. ``step`` (DreamerV3): ``mean max(free_bits,
    KL)``.
    """
    if mode == "batch":
        return torch.clamp(kl.mean(), min=free_bits)
    if mode == "step":
        return torch.clamp(kl, min=free_bits).mean()
    raise ValueError(f"free_bits mode must be one of {', '.join(FREE_BITS_MODES)}, got {mode!r}")
