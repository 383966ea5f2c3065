"""Environments: observation/action specs now; TorchRL env factories (SPEC 1) build on these."""

from drama.envs.spec import EnvSpec, probe_env

__all__ = ["EnvSpec", "probe_env"]
