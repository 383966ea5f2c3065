"""EnvRunner: the training loop's single environment, with a resumable state.

Wraps the TorchRL env of :func:`drama.envs.factory.make_env` behind ``reset() -> observation`` and
``step(action) -> StepResult`` (which also gives the step's replay row). Its :meth:`state_dict` records what the
env's own RNGs looked like before the running episode's reset (reset-seed counter, no-op RNG) and the actions taken
since, so that :meth:`load_state_dict` rebuilds the exact emulator state by resetting and replaying them: ALE with
sticky actions off and seeded resets is deterministic, and so are the seeded gymnasium control tasks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor

from drama.config import EnvConfig
from drama.envs.atari import NoopReset
from drama.envs.factory import make_env
from drama.envs.gym import ReseedReset
from drama.envs.spec import EnvSpec


@dataclass
class StepResult:
    observation: Tensor
    """observation after the step (the next o_{t+1})."""
    reward: float
    terminated: bool
    truncated: bool
    life_loss: bool
    acted_on: Tensor
    """the observation the action was taken on (o_t)."""
    action: int
    """the action taken (a_t)."""

    @property
    def episode_end(self) -> bool:
        """The episode's last step: terminated or truncated."""
        return self.terminated or self.truncated

    def replay_row(self) -> TensorDict:
        """The step as one replay row (batch ``[1]``; keys and meaning: :mod:`drama.data.replay`): ``o_t``,
        ``a_t``, ``r_t``, the training target ``termination`` (terminated or a life lost) and ``episode_end``."""
        return TensorDict({
            "observation": self.acted_on.unsqueeze(0),
            "action": torch.tensor([self.action]),
            "reward": torch.tensor([self.reward], dtype=torch.float32),
            "termination": torch.tensor([self.terminated or self.life_loss]),
            "episode_end": torch.tensor([self.episode_end]),
        }, batch_size=[1])


def _find_wrapper(env, kind):
    while env is not None:
        if isinstance(env, kind):
            return env
        env = getattr(env, "env", None)
    return None


class EnvRunner:
    """One TorchRL env stepped action by action; resumable (see module docstring)."""

    def __init__(self, cfg: EnvConfig, seed: int, *, evaluation: bool = False) -> None:
        self.env = make_env(cfg, seed, evaluation=evaluation)
        gym_env = self.env._env
        self._reseed = _find_wrapper(gym_env, ReseedReset)
        self._noop = _find_wrapper(gym_env, NoopReset)
        obs_spec = self.env.observation_spec["observation"]
        self.spec = EnvSpec(tuple(obs_spec.shape), int(self.env.action_spec.space.n))
        self._td = None
        self._before_reset: dict[str, Any] = {}
        self._episode_actions: list[int] = []

    @property
    def num_actions(self) -> int:
        return self.spec.num_actions

    def _rng_snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"seed": self._reseed.seed, "resets": self._reseed.resets}
        if self._noop is not None:
            snap["noop_rng"] = copy.deepcopy(self._noop.rng.bit_generator.state)
        return snap

    def reset(self) -> Tensor:
        self._before_reset = self._rng_snapshot()
        self._episode_actions = []
        self._td = self.env.reset()
        return self._td["observation"]

    def reset_with_seed(self, seed: int) -> Tensor:
        """Start an episode reset with exactly ``seed``, its no-op count (if any) drawn from an RNG seeded with
        ``seed`` too: evaluation's episode k, whichever env plays it and whatever it played before."""
        self._reseed.seed, self._reseed.resets, self._reseed.mode = int(seed), 0, "same"
        if self._noop is not None:
            self._noop.rng = np.random.default_rng(seed)
        return self.reset()

    def step(self, action: int) -> StepResult:
        """Take ``action`` on the current observation; the result also gives the step's replay row."""
        acted_on = self._td["observation"]
        self._td["action"] = torch.tensor(action, dtype=torch.int64)
        out = self.env.step(self._td)["next"]
        self._episode_actions.append(int(action))
        self._td = out.exclude("reward", "terminated", "truncated", "done", "life_loss")
        return StepResult(out["observation"], float(out["reward"].item()), bool(out["terminated"].item()),
                          bool(out["truncated"].item()), bool(out["life_loss"].item()), acted_on, int(action))

    def state_dict(self) -> dict[str, Any]:
        return {"before_reset": copy.deepcopy(self._before_reset), "episode_actions": list(self._episode_actions)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Reset with the saved RNG state and replay the running episode's actions."""
        before = state["before_reset"]
        self._reseed.seed, self._reseed.resets = before["seed"], before["resets"]
        if self._noop is not None and "noop_rng" in before:
            self._noop.rng.bit_generator.state = copy.deepcopy(before["noop_rng"])
        self.reset()
        for action in state["episode_actions"]:
            self.step(action)

    def close(self) -> None:
        self.env.close()
