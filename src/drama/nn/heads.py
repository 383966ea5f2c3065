"""Latent heads (32x32 categoricals, 1 % unimix, straight-through samples) and reward/termination heads.

The reference's ``DistHead`` is :class:`CategoricalHead`; its ``RewardHead`` and ``TerminationHead`` are
:class:`ScalarHead`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drama.nn.distributions import upcast
from drama.nn.init import fan_avg_trunc_normal_
from drama.nn.mlp import mlp


class CategoricalHead(nn.Module):
    """``Linear(in -> stoch*classes)`` logits, reshaped to (..., stoch, classes), with unimix.

    ``probs = (1 - unimix) * softmax(logits) + unimix / classes`` and the returned logits are ``log(probs)``.
    (The reference divides by the number of categoricals; both are 32 at the paper configuration, and
    dividing by the class count is what makes ``probs`` a distribution for any shape.)
    """

    def __init__(self, in_dim: int, stoch_dim: int = 32, class_dim: int = 32, unimix: float = 0.01) -> None:
        super().__init__()
        self.stoch_dim, self.class_dim, self.unimix = stoch_dim, class_dim, unimix
        self.linear = nn.Linear(in_dim, stoch_dim * class_dim)

    def forward(self, x: Tensor) -> Tensor:
        logits = upcast(self.linear(x).unflatten(-1, (self.stoch_dim, self.class_dim)))
        if self.unimix > 0:
            probs = (1.0 - self.unimix) * F.softmax(logits, dim=-1) + self.unimix / self.class_dim
            logits = torch.log(probs)
        return logits


def straight_through_sample(logits: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """One-hot sample of each categorical plus ``probs - stopgrad(probs)``.

    The sample stays float: it is never truncated to integers (docs/decisions.md, "integer latents").
    ``generators`` (one per row of the leading dimension) draws row i with its own generator, so a row's sample
    does not depend on which other rows share the batch; None draws everything from the global RNG at once.
    """
    probs = F.softmax(logits, dim=-1)
    index = sample_index(probs, generators)
    one_hot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return one_hot + probs - probs.detach()


def sample_index(probs: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """Class indices (probs.shape[:-1]) drawn from ``probs`` (..., classes): all at once from the global RNG, or row
    i of the leading dimension from ``generators[i]``."""
    classes = probs.shape[-1]
    if generators is None:
        return torch.multinomial(probs.reshape(-1, classes), 1).reshape(probs.shape[:-1])
    if len(generators) != probs.shape[0]:
        raise ValueError(f"{len(generators)} generators for {probs.shape[0]} rows")
    rows = [torch.multinomial(row.reshape(-1, classes), 1, generator=g) for row, g in zip(probs, generators,
                                                                                          strict=True)]
    return torch.stack(rows).reshape(probs.shape[:-1])


class ScalarHead(nn.Module):
    """``layers`` x [Linear -> RMSNorm -> SiLU] then ``Linear(hidden -> out_dim)`` on h.

    The reward head has ``out_dim`` = two-hot bins; the termination head one logit.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, layers: int = 1) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden, layers, out_dim=out_dim)
        self.apply(fan_avg_trunc_normal_)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)
