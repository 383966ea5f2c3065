"""Construct the models from a resolved config and an environment spec."""

from __future__ import annotations

from drama.actor_critic import ActorCritic
from drama.config import DramaConfig
from drama.envs.spec import EnvSpec
from drama.nn.encoders import set_memory_format
from drama.world_model import WorldModel


def build_models(cfg: DramaConfig, spec: EnvSpec) -> tuple[WorldModel, ActorCritic]:
    """The world model for ``spec``'s observations and actions, and the actor-critic on its features; conv layers
    in the layout of ``runtime.channels_last``."""
    world_model = WorldModel(cfg.world_model, spec.obs_shape, spec.num_actions)
    if world_model.pixels:
        set_memory_format(world_model.encoder, cfg.runtime.channels_last)
        set_memory_format(world_model.decoder, cfg.runtime.channels_last)
    actor_critic = ActorCritic(cfg.actor_critic, world_model.feature_dim, spec.num_actions,
                               cfg.world_model.two_hot)
    return world_model, actor_critic
