"""Dynamics backbones behind one interface (:class:`~drama.nn.backbones.base.Backbone`)."""

from __future__ import annotations

from drama.config import BackboneConfig
from drama.nn.backbones.base import Backbone


def build_backbone(cfg: BackboneConfig, input_dim: int, hidden_dim: int) -> Backbone:
    """The backbone named by ``cfg.name``, reading ``input_dim`` features and producing ``hidden_dim``."""
    if cfg.name == "mamba2":
        from drama.nn.backbones.mamba2 import Mamba2Backbone

        return Mamba2Backbone(
            input_dim=input_dim,
            d_model=hidden_dim,
            n_layer=cfg.n_layer,
            d_state=cfg.d_state,
            expand=cfg.expand,
            headdim=cfg.headdim,
            ngroups=cfg.ngroups,
            d_conv=cfg.d_conv,
            chunk_size=cfg.chunk_size,
        )
    raise ValueError(f"unknown backbone {cfg.name!r}")


__all__ = ["Backbone", "build_backbone"]
