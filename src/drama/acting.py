"""Acting in the real environment (docs/decisions.md, "Acting" and "re-encoded acting window").

The policy sees the last ``length`` (16) frames and actions of the current episode *before* the current one:
the world model runs its sequence model over them from a zero state, takes the last ``h_{t-1}``, samples a
prior ``ẑ_t ~ p(. | h_{t-1})`` and the actor acts on ``[ẑ_t, h_{t-1}]`` (the current frame ``o_t`` is not used
for the decision, as in the reference). Unlike the reference, each frame is encoded **once** when it arrives
and its posterior sample is cached in the window, so a step costs one short sequence-model pass.
The window is cleared at episode start (not at a life loss); with an empty window the caller acts randomly.

One acting path serves every caller: :class:`Acting` holds the windows of K environments and acts for any subset
of them in one batched forward (windows of equal length share one sequence-model pass); training and the notebook
use it with one env through :class:`ActingContext`, ``drama evaluate`` with K. Randomness (the random first
action, the posterior, prior and policy samples) comes from the global torch RNG, or per env from its own
``torch.Generator`` so that an env's actions do not depend on which other envs share the batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # the models are handed in; acting needs only their methods
    from drama.actor_critic import ActorCritic
    from drama.world_model import WorldModel


class Window:
    """The cached ``(z_k, a_k)`` of one environment's current episode (at most ``length``)."""

    def __init__(self, length: int) -> None:
        self.latents: deque[Tensor] = deque(maxlen=length)
        self.actions: deque[int] = deque(maxlen=length)

    def __len__(self) -> int:
        return len(self.latents)

    def clear(self) -> None:
        self.latents.clear()
        self.actions.clear()


class Acting:
    """The acting windows of ``envs`` environments and the shared acting step for any subset of them."""

    def __init__(self, world_model: WorldModel, actor_critic: ActorCritic, length: int = 16, envs: int = 1) -> None:
        self.world_model, self.actor_critic, self.length = world_model, actor_critic, length
        self.windows = [Window(length) for _ in range(envs)]

    def reset(self, env: int | None = None) -> None:
        """Clear env ``env``'s window (its episode starts), or every window."""
        for window in self.windows if env is None else [self.windows[env]]:
            window.clear()

    @torch.no_grad()
    def features(self, envs: Sequence[int], generators: Sequence[torch.Generator] | None = None) -> Tensor:
        """``[ẑ_t, h_{t-1}]`` (len(envs), latent + hidden) from the envs' windows, none of them empty. Windows of
        equal length go through the sequence model together; ``generators`` (one per env) draw the prior samples."""
        wm = self.world_model
        out: list[Tensor | None] = [None] * len(envs)
        by_length: dict[int, list[int]] = {}
        for i, env in enumerate(envs):
            if not self.windows[env]:
                raise ValueError(f"env {env}'s acting window is empty (act randomly instead)")
            by_length.setdefault(len(self.windows[env]), []).append(i)
        with wm.evaluating(), wm.autocast():
            for rows in by_length.values():
                windows = [self.windows[envs[i]] for i in rows]
                z = torch.stack([torch.stack(list(w.latents)) for w in windows])  # (G, K, latent)
                actions = torch.tensor([list(w.actions) for w in windows], device=z.device)
                h, _ = wm.hidden_states(z, actions)  # from a zero state
                h_last = h[:, -1].to(z.dtype)
                z_hat = wm.sample_prior(h_last, None if generators is None else [generators[i] for i in rows])
                features = torch.cat([z_hat.to(z.dtype), h_last], -1)
                if len(by_length) == 1:  # every window of one length (training's one env): already in order
                    return features
                for row, feature in zip(rows, features, strict=True):
                    out[row] = feature
        return torch.stack(out)  # type: ignore[arg-type]

    @torch.no_grad()
    def act(self, envs: Sequence[int], greedy: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> list[int | None]:
        """The policy's action for each of ``envs``, None where the window is empty (act randomly there)."""
        ready = [i for i, env in enumerate(envs) if self.windows[env]]
        actions: list[int | None] = [None] * len(envs)
        if ready:
            chosen = [generators[i] for i in ready] if generators is not None else None
            features = self.features([envs[i] for i in ready], chosen)
            for i, action in zip(ready, self.actor_critic.act(features, greedy=greedy, generators=chosen).tolist(),
                                 strict=True):
                actions[i] = int(action)
        return actions

    @torch.no_grad()
    def observe(self, envs: Sequence[int], observations: Tensor, actions: Sequence[int],
                generators: Sequence[torch.Generator] | None = None) -> None:
        """Encode each ``o_t`` once (one batched posterior sample) and append ``(z_t, a_t)`` to its env's window."""
        wm = self.world_model
        with wm.evaluating(), wm.autocast():
            z, _ = wm.sample_posterior(observations.to(wm.device), generators=generators)
        for env, latent, action in zip(envs, z.float(), actions, strict=True):
            self.windows[env].latents.append(latent)
            self.windows[env].actions.append(int(action))

    @torch.no_grad()
    def step(self, envs: Sequence[int], observations: Tensor, num_actions: int, *, greedy: bool = False,
             random: bool = False, generators: Sequence[torch.Generator] | None = None,
             random_generators: Sequence[torch.Generator] | None = None) -> list[int]:
        """One acting step for ``envs`` (their observations ``o_t`` stacked): choose each ``a_t``, then record it.

        With ``random`` (the warm-up: nothing is encoded, the windows stay empty) or an empty window (the first
        step of an episode) an env's action is uniform over ``num_actions``; otherwise it is the policy's
        (sampled, or the argmax with ``greedy``). Unless ``random``, ``(o_t, a_t)`` is then appended to each
        window (:meth:`observe`). ``generators`` (one per env) draw everything of their env: random action,
        prior, policy and posterior samples; without them the samples come from the global torch RNG and the
        random actions from ``random_generators`` (one per env) or the global RNG.
        """
        chosen = [None] * len(envs) if random else self.act(envs, greedy=greedy, generators=generators)
        draw = generators if generators is not None else random_generators
        actions = []
        for i, action in enumerate(chosen):
            if action is None:
                action = int(torch.randint(num_actions, (), generator=None if draw is None else draw[i]).item())
            actions.append(action)
        if not random:
            self.observe(envs, observations, actions, generators)
        return actions


class ActingContext:
    """The acting window of one environment (training's loop, the notebook): a view of :class:`Acting` with one env,
    so that training and evaluation act through the same batched step."""

    def __init__(self, world_model: WorldModel, actor_critic: ActorCritic, length: int = 16) -> None:
        self.world_model, self.actor_critic, self.length = world_model, actor_critic, length
        self.batch = Acting(world_model, actor_critic, length, envs=1)

    @property
    def latents(self) -> deque[Tensor]:
        return self.batch.windows[0].latents

    @property
    def actions(self) -> deque[int]:
        return self.batch.windows[0].actions

    def __len__(self) -> int:
        return len(self.batch.windows[0])

    def reset(self) -> None:
        """Clear the window (episode start)."""
        self.batch.reset()

    def features(self) -> Tensor:
        """``[ẑ_t, h_{t-1}]`` (1, latent + hidden) from the window; the window must not be empty."""
        return self.batch.features([0])

    def act(self, greedy: bool = False) -> int | None:
        """The policy's action for the current step, or None when the window is empty (act randomly)."""
        return self.batch.act([0], greedy=greedy)[0]

    def act_and_observe(self, observation: Tensor, num_actions: int, *, greedy: bool = False,
                        random: bool = False, generator: torch.Generator | None = None) -> int:
        """One acting step (:meth:`Acting.step` for this env): ``generator`` draws the random action (the global
        torch RNG when None); the samples come from the global RNG."""
        return self.batch.step([0], observation.unsqueeze(0), num_actions, greedy=greedy, random=random,
                               random_generators=None if generator is None else [generator])[0]

    def observe(self, observation: Tensor, action: int) -> None:
        """Encode ``o_t`` once (posterior sample) and append ``(z_t, a_t)`` after ``a_t`` was chosen."""
        self.batch.observe([0], observation.unsqueeze(0), [action])

    def state_dict(self) -> dict:
        return {"latents": [z.cpu() for z in self.latents], "actions": list(self.actions)}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        device = self.world_model.device
        self.latents.extend(z.to(device) for z in state["latents"])
        self.actions.extend(state["actions"])
