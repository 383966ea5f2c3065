"""Trainable-parameter counts by component."""

from __future__ import annotations

from torch import nn

from drama.actor_critic import ActorCritic
from drama.world_model import WorldModel


def count_trainable(*modules: nn.Module) -> int:
    """Number of trainable (requires_grad) parameters, each counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def parameter_counts(world_model: WorldModel, actor_critic: ActorCritic) -> dict[str, int]:
    """Counts for ``encoder``, ``decoder``, ``latent_heads``, ``dynamics``, ``reward_head``,
    ``termination_head``, ``world_model_total``, ``actor`` and ``critic`` (the slow critic is not trainable)."""
    wm = world_model
    return {
        "encoder": count_trainable(wm.encoder),
        "decoder": count_trainable(wm.decoder),
        "latent_heads": count_trainable(wm.posterior_head, wm.prior_head),
        "dynamics": count_trainable(wm.dynamics),
        "reward_head": count_trainable(wm.reward_head),
        "termination_head": count_trainable(wm.termination_head),
        "world_model_total": count_trainable(wm),
        "actor": count_trainable(actor_critic.actor),
        "critic": count_trainable(actor_critic.critic),
    }
