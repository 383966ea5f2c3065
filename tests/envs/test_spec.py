import pytest

from drama.config import ConfigError, EnvConfig
from drama.envs.factory import probe_env
from drama.envs.spec import EnvSpec


def test_atari_minimal_action_set_and_64x64_rgb():
    assert probe_env(EnvConfig("ALE/Pong-v5")) == EnvSpec((3, 64, 64), 6)
    assert probe_env(EnvConfig("ALE/Breakout-v5")).num_actions == 4
    assert probe_env(EnvConfig("ALE/Alien-v5")).num_actions == 18
    assert probe_env(EnvConfig("ALE/Pong-v5")).pixels


def test_vector_observations():
    spec = probe_env(EnvConfig("CartPole-v1"))
    assert spec == EnvSpec((4,), 2) and not spec.pixels


@pytest.mark.parametrize(("env_id", "needle"), [
    ("NoSuchEnv-v0", "not a registered"),
    ("Pendulum-v1", "only Discrete actions"),
])
def test_unsupported_envs_raise_config_errors(env_id, needle):
    with pytest.raises(ConfigError, match=needle):
        probe_env(EnvConfig(env_id))
