"""Dynamics backbones behind one interface (:class:`~drama.nn.backbones.base.Backbone`).

``world_model.backbone.name`` picks one: ``mamba2`` (default), ``mamba`` (Mamba-1), ``gru`` or ``transformer``.
Each module is imported only when its backbone is built.
"""

from __future__ import annotations

import math

from drama.config import BackboneConfig
from drama.nn.backbones.base import Backbone


def build_backbone(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    """The backbone named by ``cfg.name``, reading ``input_dim`` features and producing ``hidden_dim``."""
    if cfg.name == "mamba2":
        from drama.nn.backbones.mamba2 import Mamba2Backbone

        return Mamba2Backbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, d_state=cfg.d_state,
                              expand=cfg.expand, headdim=cfg.headdim, ngroups=cfg.ngroups, d_conv=cfg.d_conv,
                              chunk_size=cfg.chunk_size, impl=cfg.impl)
    if cfg.name == "mamba":
        from drama.nn.backbones.mamba import MambaBackbone

        return MambaBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, d_state=cfg.d_state,
                             expand=cfg.expand, d_conv=cfg.d_conv,
                             dt_rank=cfg.dt_rank or math.ceil(hidden_dim / 16), impl=cfg.impl)
    if cfg.name == "gru":
        from drama.nn.backbones.gru import GRUBackbone

        return GRUBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer)
    if cfg.name == "transformer":
        from drama.nn.backbones.transformer import TransformerBackbone

        return TransformerBackbone(input_dim=input_dim, d_model=hidden_dim, n_layer=cfg.n_layer, heads=cfg.heads,
                                   ffn_dim=cfg.ffn_dim, dropout=cfg.dropout, max_length=cfg.max_length)
    raise ValueError(f"unknown backbone {cfg.name!r}")


__all__ = ["Backbone", "build_backbone"]
