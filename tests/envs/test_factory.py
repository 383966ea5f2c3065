"""``make_env``: the TorchRL key contract for Atari and vector tasks, seeding, errors, consistency with probe_env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

from drama.config import ConfigError, EnvConfig
from drama.envs.factory import make_env, probe_env


@pytest.mark.parametrize("evaluation", [False, True])
@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "CartPole-v1"])
def test_check_env_specs(env_id, evaluation):
    check_env_specs(make_env(EnvConfig(env_id), 0, evaluation=evaluation))


@pytest.mark.parametrize(("env_id", "obs_shape", "obs_dtype", "n"), [
    ("ALE/Pong-v5", (3, 64, 64), torch.uint8, 6),
    ("CartPole-v1", (4,), torch.float32, 2),
])
def test_keys_shapes_and_dtypes(env_id, obs_shape, obs_dtype, n):
    env = make_env(EnvConfig(env_id), 0)
    assert env.batch_size == torch.Size([])
    assert env.action_spec.shape == () and env.action_spec.dtype == torch.int64 and env.action_spec.space.n == n
    td = env.rollout(30, break_when_any_done=False)
    assert td["observation"].shape == (30, *obs_shape) and td["observation"].dtype == obs_dtype
    assert td["action"].shape == (30,) and td["action"].dtype == torch.int64
    nxt = td["next"]
    assert nxt["observation"].shape == (30, *obs_shape) and nxt["observation"].dtype == obs_dtype
    assert nxt["reward"].shape == (30, 1) and nxt["reward"].dtype == torch.float32
    for key in ("terminated", "truncated", "done", "life_loss"):
        assert nxt[key].shape == (30, 1) and nxt[key].dtype == torch.bool, key
    assert not nxt["life_loss"].any()  # Pong has no lives, CartPole neither
    assert not env.reset()["life_loss"].any()


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Alien-v5", "CartPole-v1"])
def test_probe_env_agrees_with_make_env(env_id):
    spec, env = probe_env(EnvConfig(env_id)), make_env(EnvConfig(env_id), 0)
    assert tuple(env.observation_spec["observation"].shape) == spec.obs_shape
    assert env.action_spec.space.n == spec.num_actions
    assert env.reset()["observation"].shape == spec.obs_shape


@pytest.mark.parametrize(("mode", "offsets"), [("same", [0, 0, 0]), ("sequence", [0, 1, 2])])
def test_vector_reset_seeds(mode, offsets):
    env, raw = make_env(EnvConfig("CartPole-v1", reseed=mode), 100), gym.make("CartPole-v1")
    starts = [env.rollout(3, break_when_any_done=False)[0]["observation"] for _ in offsets]
    for k, obs in zip(offsets, starts, strict=True):
        assert torch.equal(obs, torch.from_numpy(raw.reset(seed=100 + k)[0]))
    assert torch.equal(starts[0], starts[1]) == (mode == "same")


def test_vector_episode_ends_by_termination_and_own_time_limit():
    env = make_env(EnvConfig("CartPole-v1"), 0)
    td = env.rollout(1000, policy=lambda td: td.set("action", torch.tensor(0)))
    assert td["next", "terminated"][-1].item() and td["next", "done"][-1].item() and len(td) < 50
    env = make_env(EnvConfig("MountainCar-v0"), 0)
    td = env.rollout(1000)
    assert len(td) == 200 and td["next", "truncated"][-1].item() and not td["next", "terminated"].any()


class _F64(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 3), 1.0, False, False, {}


class _DictObs(_F64):
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1.0, 1.0, (3,), np.float64)})


gym.register("DramaTestF64-v0", entry_point=_F64, max_episode_steps=10)
gym.register("DramaTestDict-v0", entry_point=_DictObs)


def test_float64_vector_observations_become_float32():
    env = make_env(EnvConfig("DramaTestF64-v0"), 0)
    check_env_specs(env)
    td = env.rollout(20, break_when_any_done=False)
    assert td["observation"].dtype == torch.float32 and td["observation"].shape == (20, 3)
    assert td["next", "truncated"].sum() == 2


@pytest.mark.parametrize(("env_id", "needle"), [
    ("NoSuchEnv-v0", "not a registered"),
    ("Pendulum-v1", "only Discrete actions"),
    ("DramaTestDict-v0", "need a flat Box"),
])
def test_unsupported_envs_raise_config_errors(env_id, needle):
    with pytest.raises(ConfigError, match=needle):
        make_env(EnvConfig(env_id), 0)


def test_unknown_reseed_mode_raises():
    with pytest.raises(ConfigError, match="reseed"):
        make_env(EnvConfig("CartPole-v1", reseed="random"), 0)
