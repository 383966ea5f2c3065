"""Imagination: rollouts of the policy inside the world model.

1. Encode the C real context frames to posterior samples ``z_0..z_{C-1}``.
2. One **parallel** backbone pass over ``(z_k, a_k)`` (real actions) gives ``h_0..h_{C-1}`` and the backbone
   state; the context is never recomputed per step.
3. ``ẑ_C ~ p(. | h_{C-1})``; state ``s_0 = [ẑ_C, h_{C-1}]``.
4. For j = 0..H-1: ``a'_j = policy(s_j)``; ``h_{C+j} = step([ẑ_{C+j}, a'_j])`` (float straight-through latents,
   never truncated to integers: docs/decisions.md, "integer latents"); ``ẑ_{C+j+1} ~ p(. | h_{C+j})``;
   ``s_{j+1} = [ẑ_{C+j+1}, h_{C+j}]``.
5. ``reward[j] = R(h_{C+j})`` and ``termination[j] = T(h_{C+j}) > 0``: both belong to the action ``a'_j`` taken
   at index j, for every backbone (docs/decisions.md, "Imagined rewards belong to the action just taken").

The output TensorDict (batch ``[B]``) holds ``features`` (B, H+1, latent+hidden) = ``s_0..s_H``, ``action``
(B, H), ``reward`` (B, H), ``termination`` (B, H) bool, and ``context_latent`` (B, C, latent) = ``z_0..z_{C-1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict
from torch import Tensor

from drama.nn.distributions import upcast

if TYPE_CHECKING:
    from drama.world_model import WorldModel


ENCODE_CHUNK_FRAMES = 1024
"""Context frames encoded at a time (bounds memory: the paper batch has 1024 x 8 = 8192 frames)."""


@torch.no_grad()
def imagine(world_model: WorldModel, context: TensorDict, policy: Callable[[Tensor], Tensor],
            horizon: int) -> TensorDict:
    """Imagine ``horizon`` steps from ``context`` (keys ``observation`` (B, C, ...), ``action`` (B, C)).

    ``policy`` maps features (B, latent+hidden) to actions (B,) (e.g. ``ActorCritic.act``). The world model
    runs in eval mode (BatchNorm running statistics) and is restored to its previous mode afterwards.
    """
    with world_model.evaluating(), world_model.autocast():
        z, _ = world_model.sample_posterior(context["observation"], max_frames=ENCODE_CHUNK_FRAMES)
        h_context, state = world_model.hidden_states(z, context["action"])
        h = upcast(h_context[:, -1])
        z_hat = world_model.sample_prior(h)
        features, actions, hs = [torch.cat([z_hat, h], -1)], [], []
        step = world_model.step_fn or world_model.imagination_step  # compiled or eager (runtime.compile)
        for _ in range(horizon):
            action, h, z_hat, state = step(policy, features[-1], z_hat, state)
            features.append(torch.cat([z_hat, h], -1))
            actions.append(action.long())
            hs.append(h)
        h_imagined = torch.stack(hs, 1)  # h_{C+j}, j = 0..H-1: has read a'_j
        reward = world_model.predict_reward(h_imagined)
        termination = world_model.predict_termination(h_imagined)
    batch_size = z.shape[0]
    return TensorDict(
        {
            "features": torch.stack(features, 1),
            "action": torch.stack(actions, 1),
            "reward": reward,
            "termination": termination,
            "context_latent": upcast(z),
        },
        batch_size=[batch_size],
    )
