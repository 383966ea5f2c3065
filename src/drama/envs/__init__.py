"""Environments: observation/action specs and the TorchRL env factory of the env protocol (SPEC 1)."""

from drama.envs.factory import make_env, make_gym_env
from drama.envs.spec import EnvSpec, probe_env

__all__ = ["EnvSpec", "make_env", "make_gym_env", "probe_env"]
