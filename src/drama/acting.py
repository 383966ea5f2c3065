"""Acting in the real environment (docs/decisions.md, "Acting" and "re-encoded acting window").

The policy sees the last ``length`` (16) frames and actions of the current episode *before* the current one:
the world model runs its sequence model over them from a zero state, takes the last ``h_{t-1}``, samples a
prior ``ẑ_t ~ p(. | h_{t-1})`` and the actor acts on ``[ẑ_t, h_{t-1}]`` (the current frame ``o_t`` is not used
for the decision, as in the reference). Unlike the reference, each frame is encoded **once** when it arrives
and its posterior sample is cached in the window, so a step costs one short sequence-model pass.
The window is cleared at episode start (not at a life loss); with an empty window the caller acts randomly.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

from drama.actor_critic import ActorCritic
from drama.world_model import WorldModel


class ActingContext:
    """The cached window of ``(z_k, a_k)`` for one environment."""

    def __init__(self, world_model: WorldModel, actor_critic: ActorCritic, length: int = 16) -> None:
        self.world_model, self.actor_critic, self.length = world_model, actor_critic, length
        self.latents: deque[Tensor] = deque(maxlen=length)
        self.actions: deque[int] = deque(maxlen=length)

    def __len__(self) -> int:
        return len(self.latents)

    def reset(self) -> None:
        """Clear the window (episode start)."""
        self.latents.clear()
        self.actions.clear()

    @torch.no_grad()
    def features(self) -> Tensor:
        """``[ẑ_t, h_{t-1}]`` (1, latent + hidden) from the window; the window must not be empty."""
        wm = self.world_model
        wm.eval()
        with wm.autocast():
            z = torch.stack(list(self.latents), dim=0).unsqueeze(0)  # (1, K, latent)
            actions = torch.tensor([list(self.actions)], device=z.device)
            h, _ = wm.hidden_states(z, actions)  # from a zero state
            h_last = h[:, -1].to(z.dtype)
            z_hat = wm.sample_prior(h_last).to(z.dtype)
        return torch.cat([z_hat, h_last], dim=-1)

    @torch.no_grad()
    def act(self, greedy: bool = False) -> int | None:
        """The policy's action for the current step, or None when the window is empty (act randomly)."""
        if not self.latents:
            return None
        return int(self.actor_critic.act(self.features(), greedy=greedy).item())

    @torch.no_grad()
    def act_and_observe(self, observation: Tensor, num_actions: int, *, greedy: bool = False,
                        random: bool = False, generator: torch.Generator | None = None) -> int:
        """One acting step, the one that training, evaluation and the notebook share: choose ``a_t`` for ``o_t``.

        With ``random`` (the warm-up: nothing is encoded, the window stays empty) or an empty window (the first
        step of an episode) the action is uniform over ``num_actions``, drawn from ``generator`` (the global
        torch RNG when None); otherwise it is the policy's (sampled, or the argmax with ``greedy``). Unless
        ``random``, ``(o_t, a_t)`` is then appended to the window (:meth:`observe`).
        """
        action = None if random else self.act(greedy=greedy)
        if action is None:
            action = int(torch.randint(num_actions, (), generator=generator).item())
        if not random:
            self.observe(observation, action)
        return action

    @torch.no_grad()
    def observe(self, observation: Tensor, action: int) -> None:
        """Encode ``o_t`` once (posterior sample) and append ``(z_t, a_t)`` after ``a_t`` was chosen."""
        wm = self.world_model
        wm.eval()
        with wm.autocast():
            z, _ = wm.sample_posterior(observation.to(wm.device).unsqueeze(0))
        self.latents.append(z[0].float())
        self.actions.append(int(action))

    def state_dict(self) -> dict:
        return {"latents": [z.cpu() for z in self.latents], "actions": list(self.actions)}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        device = self.world_model.device
        self.latents.extend(z.to(device) for z in state["latents"])
        self.actions.extend(state["actions"])
