"""Generic protocol wrappers: the reset-seeding switch and the life-loss signal."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from drama.config import ConfigError
from drama.envs.gym import LifeLossInfo, ReseedReset


class _SeedSpy(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.seeds = []

    def reset(self, *, seed=None, options=None):
        self.seeds.append(seed)
        return self.env.reset(seed=seed, options=options)


@pytest.mark.parametrize(("mode", "expected"), [("same", [5, 5, 5, 9, 9]), ("sequence", [5, 6, 7, 9, 10])])
def test_reseed_modes(mode, expected):
    spy = _SeedSpy(gym.make("CartPole-v1"))
    env = ReseedReset(spy, 5, mode)
    for _ in range(3):
        env.reset()
    env.reset(seed=9)  # an explicit seed (TorchRL set_seed) re-bases the sequence
    env.reset()
    assert spy.seeds == expected


def test_reseed_seeds_the_action_space_once():
    a = ReseedReset(gym.make("CartPole-v1"), 3)
    b = ReseedReset(gym.make("CartPole-v1"), 3)
    draws_a = [a.action_space.sample() for _ in range(32)]
    assert draws_a == [b.action_space.sample() for _ in range(32)]
    assert len(set(draws_a)) == 2


def test_unknown_reseed_mode():
    with pytest.raises(ConfigError, match="reseed"):
        ReseedReset(gym.make("CartPole-v1"), 0, "fresh")


class _Lives(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    LIVES = [3, 3, 2, 2, 1, 0]

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {"lives": self.LIVES[0]}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.0, self.t == len(self.LIVES) - 1, False, {"lives": self.LIVES[self.t]}


@pytest.mark.parametrize(("enabled", "expected"), [(True, [False, True, False, True, True]), (False, [False] * 5)])
def test_life_loss_info(enabled, expected):
    env = LifeLossInfo(_Lives(), enabled=enabled)
    _, info = env.reset()
    assert info["life_loss"].tolist() == [False]
    flags = []
    for _ in range(5):
        *_, info = env.step(0)
        assert info["life_loss"].shape == (1,) and info["life_loss"].dtype == bool
        flags.append(bool(info["life_loss"][0]))
    assert flags == expected
    # a reset re-reads the lives: no spurious loss at the first step of the next episode
    env.reset()
    *_, info = env.step(0)
    assert not info["life_loss"][0]


def test_life_loss_without_lives_is_false():
    env = LifeLossInfo(gym.make("CartPole-v1"))
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["life_loss"].tolist() == [False]
