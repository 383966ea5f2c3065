"""The MLP block shared by encoders, heads and the actor-critic: [Linear -> RMSNorm -> SiLU] x layers."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int | None = None, eps: float = 1e-5) -> nn.Sequential:
    """``layers`` x [Linear -> RMSNorm -> SiLU], then an optional output Linear."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden), nn.RMSNorm(hidden, eps=eps), nn.SiLU()]
        dim = hidden
    if out_dim is not None:
        modules.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*modules)
