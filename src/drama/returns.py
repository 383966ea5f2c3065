"""The lambda-return and the percentile return scale of the actor-critic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from drama.config import BOOTSTRAPS

"""Allowed ``bootstrap`` modes of :func:`lambda_return`."""


def lambda_return(
    reward: Tensor,
    termination: Tensor,
    value: Tensor,
    gamma: float,
    lambda_: float,
    bootstrap: str = "textbook",
) -> Tensor:
    """TD(lambda) returns ``G[0..H-1]`` of an imagined rollout.

    Args:
        reward: (B, H) reward of the action taken at index t (not of the one before it).
        termination: (B, H) termination of the action taken at index t, bool or {0, 1}.
        value: (B, H+1) values of the states s_0..s_H.
        gamma: discount per step.
        lambda_: the lambda of TD(lambda).
        bootstrap: ``textbook`` (default; docs/decisions.md, "v[t] bootstrap"):
            ``G[t] = r[t] + gamma (1 - d[t]) ((1 - lambda) v[t+1] + lambda G[t+1])``; ``reference``: the
            STORM/DRAMA formula with ``v[t]`` in place of ``v[t+1]``. Both start from ``G[H] = v[H]``.

    Returns:
        (B, H) returns in the promoted floating dtype of ``reward`` and ``value`` (at least float32).
    """
    if bootstrap not in BOOTSTRAPS:
        raise ValueError(f"bootstrap must be one of {', '.join(BOOTSTRAPS)}, got {bootstrap!r}")
    if reward.dim() != 2 or reward.shape != termination.shape:
        raise ValueError(f"reward and termination must both be (B, H), got {tuple(reward.shape)} and "
                         f"{tuple(termination.shape)}")
    batch, horizon = reward.shape
    if tuple(value.shape) != (batch, horizon + 1):
        raise ValueError(f"value must be (B, H+1) = {(batch, horizon + 1)}, got {tuple(value.shape)}")
    dtype = torch.promote_types(torch.promote_types(reward.dtype, value.dtype), torch.float32)
    reward = reward.to(dtype)
    value = value.to(dtype)
    discount = gamma * (1.0 - termination.to(dtype))
    bootstrap_value = value[:, 1:] if bootstrap == "textbook" else value[:, :-1]
    next_return = value[:, -1]
    out = []
    for t in reversed(range(horizon)):
        next_return = reward[:, t] + discount[:, t] * ((1.0 - lambda_) * bootstrap_value[:, t]
                                                       + lambda_ * next_return)
        out.append(next_return)
    if not out:
        return value.new_zeros(batch, 0)
    return torch.stack(out[::-1], dim=1)


class PercentileReturnScale(nn.Module):
    """Return normalisation ``scale = max(1, U - L)`` with ``L``, ``U`` EMAs of return percentiles.

    ``low`` and ``high`` are buffers (checkpointed) that start at 0.0 with no bias correction. Each
    :meth:`update` takes the percentiles over all returns of the batch (:meth:`percentile`, the reference's
    rank), then ``low = decay * low + (1 - decay) * P_low``, same for high.
    """

    low: Tensor
    high: Tensor

    def __init__(self, decay: float = 0.99, percentiles: Sequence[float] = (0.05, 0.95)) -> None:
        super().__init__()
        lo, hi = (float(p) for p in percentiles)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 1, got {(lo, hi)}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.percentiles = (lo, hi)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @staticmethod
    def percentile(x: Tensor, fraction: float) -> Tensor:
        """The reference's percentile of the flattened ``x``: ``torch.kthvalue(x, int(fraction * N))``.

        That is the element of 0-based rank ``int(fraction * N) - 1`` in sorted order (kthvalue counts from 1),
        with no interpolation, unlike ``torch.quantile``: for the paper's N = 1024 * 16 returns, P5 is the
        819th smallest (rank 818) and P95 the 15564th (rank 15563). Where ``int(fraction * N)`` is 0 (the
        reference would fail) the smallest element is taken.
        """
        flat = x.detach().flatten().float()
        if flat.numel() == 0:
            raise ValueError("cannot take a percentile of an empty tensor")
        index = min(max(int(fraction * flat.numel()) - 1, 0), flat.numel() - 1)
        if flat.device.type == "mps":  # kthvalue is not implemented on MPS; sorting gives the same element
            return torch.sort(flat).values[index]
        return torch.kthvalue(flat, index + 1).values

    @torch.no_grad()
    def update(self, returns: Tensor) -> Tensor:
        """EMA-update ``low`` and ``high`` from a batch of returns; returns the new :attr:`scale`."""
        p_low = self.percentile(returns, self.percentiles[0]).to(self.low)
        p_high = self.percentile(returns, self.percentiles[1]).to(self.high)
        self.low.mul_(self.decay).add_((1.0 - self.decay) * p_low)
        self.high.mul_(self.decay).add_((1.0 - self.decay) * p_high)
        return self.scale

    @property
    def scale(self) -> Tensor:
        """``max(1, high - low)`` (a 0-d tensor)."""
        return torch.clamp(self.high - self.low, min=1.0)
