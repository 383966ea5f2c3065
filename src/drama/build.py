"""Construct the models from a resolved config and an environment spec."""

from __future__ import annotations

from drama.actor_critic import ActorCritic
from drama.config import DramaConfig
from drama.envs.spec import EnvSpec
from drama.world_model import WorldModel


def build_models(cfg: DramaConfig, spec: EnvSpec) -> tuple[WorldModel, ActorCritic]:
    """The world model for ``spec``'s observations and actions, and the actor-critic on its features."""
    world_model = WorldModel(cfg.world_model, spec.obs_shape, spec.num_actions)
    actor_critic = ActorCritic(cfg.actor_critic, world_model.feature_dim, spec.num_actions,
                               cfg.world_model.two_hot)
    return world_model, actor_critic
