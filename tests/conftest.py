"""Shared fixtures: tiny configurations that run in seconds on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from drama.config import DramaConfig, load_config

TINY_OVERRIDES = [
    "world_model.stoch_dim=8",
    "world_model.class_dim=8",
    "world_model.hidden_dim=32",
    "world_model.encoder.depth=4",
    "world_model.encoder.mlp_hidden=32",
    "world_model.backbone.d_state=8",
    "world_model.backbone.headdim=16",
    "world_model.backbone.chunk_size=8",
    "world_model.reward_head.hidden=32",
    "world_model.termination_head.hidden=32",
    "actor_critic.actor_hidden=32",
    "actor_critic.critic_hidden=32",
    "actor_critic.num_layers=2",
]


def tiny_config(*extra: str) -> DramaConfig:
    """A small but complete configuration (same structure as the paper's)."""
    return load_config(None, [*TINY_OVERRIDES, *extra])


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
