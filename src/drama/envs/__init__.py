"""Environments: observation/action specs and the TorchRL env factory of the env protocol."""

from drama.envs.factory import make_env, make_gym_env, probe_env
from drama.envs.spec import EnvSpec

__all__ = ["EnvSpec", "make_env", "make_gym_env", "probe_env"]
