"""Dynamics backbones behind one interface (:class:`~drama.nn.backbones.base.Backbone`).

``world_model.backbone.name`` picks one: ``mamba2`` (default), ``mamba`` (Mamba-1), ``gru`` or ``transformer``.
Each module is imported only when its backbone is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from drama.config import BACKBONES, BackboneConfig
from drama.nn.backbones.base import Backbone


def _mamba2(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    from drama.nn.backbones.mamba2 import Mamba2Backbone

    return Mamba2Backbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, d_state=cfg.d_state,
                          expand=cfg.expand, headdim=cfg.headdim, ngroups=cfg.ngroups, d_conv=cfg.d_conv,
                          chunk_size=cfg.chunk_size, impl=cfg.impl)


def _mamba(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    from drama.nn.backbones.mamba import MambaBackbone

    return MambaBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, d_state=cfg.d_state,
                         expand=cfg.expand, d_conv=cfg.d_conv, dt_rank=cfg.dt_rank or math.ceil(hidden_dim / 16),
                         impl=cfg.impl)


def _gru(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    from drama.nn.backbones.gru import GRUBackbone

    return GRUBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer)


def _transformer(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    from drama.nn.backbones.transformer import TransformerBackbone

    return TransformerBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, heads=cfg.heads,
                               ffn_dim=cfg.ffn_dim, dropout=cfg.dropout, max_length=cfg.max_length)


BUILDERS: dict[str, Callable[[BackboneConfig, int, int], Backbone]] = {
    "mamba2": _mamba2, "mamba": _mamba, "gru": _gru, "transformer": _transformer}
"""Builder of each backbone of ``drama.config.BACKBONES`` (the same names, checked by the tests)."""


def build_backbone(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    """The backbone named by ``cfg.name``, reading ``input_dim`` features and producing ``hidden_dim``."""
    if cfg.name not in BUILDERS:
        raise ValueError(f"unknown backbone {cfg.name!r} (allowed: {', '.join(BACKBONES)})")
    return BUILDERS[cfg.name](cfg, input_dim, hidden_dim)


__all__ = ["Backbone", "build_backbone"]
