"""The MLP block shared by encoders, heads and the actor-critic: [Linear -> RMSNorm -> SiLU] x layers."""

from __future__ import annotations

from torch import nn

from drama.nn.norm import REFERENCE_EPS, RMSNorm


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int | None = None,
        eps: float = REFERENCE_EPS) -> nn.Sequential:
    """``layers`` x [Linear -> RMSNorm (float32, eps 1e-6 as the reference) -> SiLU], then an optional output
    Linear."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden), RMSNorm(hidden, eps=eps), nn.SiLU()]
        dim = hidden
    if out_dim is not None:
        modules.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*modules)
