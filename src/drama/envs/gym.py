"""Generic gymnasium pieces of the env protocol (reset seeding, life-loss signal) and the TorchRL conversion.

* :class:`ReseedReset` - the reset-seeding switch: ``same`` passes the run seed to every ``reset()`` (the
  reference ``SeedEnvWrapper``), ``sequence`` passes ``seed + k`` at the k-th reset.
* :class:`LifeLossInfo` - ``info["life_loss"]``: True when ``info["lives"]`` dropped during the step (the
  reference ``LifeLossInfo``); always False when disabled (evaluation) or when the env has no lives.
* :func:`make_vector_gym` - a vector-observation task (flat ``Box`` float32, ``Discrete`` actions).
* :func:`to_torchrl` - ``GymWrapper`` with int64 categorical actions and a ``life_loss`` (1,) bool key.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from drama.config import RESEED_MODES, ConfigError, EnvConfig

LIFE_LOSS_KEY = "life_loss"


class ReseedReset(gym.Wrapper):
    """Chooses the seed of every ``reset()``: ``seed`` (``same``) or ``seed + k`` at reset k (``sequence``).

    The action space is seeded once with ``seed``. An explicit ``reset(seed=s)`` (e.g. TorchRL's
    ``set_seed``) re-bases the sequence: it uses ``s`` and later resets continue from ``s``.
    """

    def __init__(self, env: gym.Env, seed: int, mode: str = "same"):
        if mode not in RESEED_MODES:
            raise ConfigError(f"env.reseed={mode!r}: expected one of {', '.join(RESEED_MODES)}")
        super().__init__(env)
        self.seed, self.mode, self.resets = int(seed), mode, 0
        self.action_space.seed(self.seed)

    def next_seed(self) -> int:
        return self.seed if self.mode == "same" else self.seed + self.resets

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            self.seed, self.resets = int(seed), 0
        reset_seed = self.next_seed()
        self.resets += 1
        return self.env.reset(seed=reset_seed, options=options)


class LifeLossInfo(gym.Wrapper):
    """Adds ``info["life_loss"]`` (a (1,) bool array): lives dropped during this step. Never ends the episode."""

    def __init__(self, env: gym.Env, enabled: bool = True):
        super().__init__(env)
        self.enabled = enabled
        self.lives = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives", 0)
        info[LIFE_LOSS_KEY] = np.zeros(1, dtype=bool)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lost = False
        if self.enabled and "lives" in info:
            lives = info["lives"]
            lost, self.lives = lives < self.lives, lives
        info[LIFE_LOSS_KEY] = np.array([lost], dtype=bool)
        return obs, reward, terminated, truncated, info


def gym_make(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` that turns an unknown id into a one-line :class:`ConfigError` (without gymnasium's warnings
    about that id, e.g. an out-of-date version: the error says it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = gym.make(env_id, **kwargs)
        except gym.error.Error as exc:
            raise ConfigError(f"env.id={env_id!r} is not a registered gymnasium environment "
                              f"({type(exc).__name__})") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return env


def check_discrete_actions(env: gym.Env, env_id: str) -> None:
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete) or int(space.start) != 0:
        env.close()
        raise ConfigError(f"env.id={env_id!r} has a {space} action space: only Discrete actions (from 0) are supported")


def make_vector_gym(cfg: EnvConfig, seed: int, *, evaluation: bool = False) -> gym.Env:
    """A vector task with its own time limit: float32 (D,) observations, Discrete actions, reseed switch."""
    env = gym_make(cfg.id)
    check_discrete_actions(env, cfg.id)
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        env.close()
        raise ConfigError(f"env.id={cfg.id!r} observations are {space}: need a flat Box (or an ALE/* id)")
    if space.dtype != np.float32:
        space32 = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        env = gym.wrappers.TransformObservation(env, lambda o: np.asarray(o, dtype=np.float32), space32)
    env = LifeLossInfo(env, enabled=False)  # no lives: the key is always False
    return ReseedReset(env, seed, cfg.reseed)


def to_torchrl(env: gym.Env):
    """Wrap a protocol gymnasium stack as a TorchRL env: int64 ``action``, ``observation``, ``life_loss`` (1,)."""
    import torch
    from torchrl.data import Categorical
    from torchrl.envs import GymWrapper, default_info_dict_reader

    tenv = GymWrapper(env, categorical_action_encoding=True)
    reader = default_info_dict_reader([LIFE_LOSS_KEY], spec={LIFE_LOSS_KEY: Categorical(2, (1,), dtype=torch.bool)})
    return tenv.set_info_dict_reader(reader)
