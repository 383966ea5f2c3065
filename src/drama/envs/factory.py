"""``make_env``: one TorchRL env (batch size []) following the project's env protocol; ``probe_env``: its spec.

Keys: ``observation`` (uint8 (3, 64, 64) for ``ALE/*`` ids, float32 (D,) otherwise), ``action`` (int64 scalar,
categorical over the minimal action set), ``("next", "reward")`` float32 (1,) unclipped, ``terminated`` /
``truncated`` / ``done`` bool (1,), and ``life_loss`` bool (1,): True in the step where an Atari training env lost
a life, always False for vector tasks and for ``evaluation=True`` envs. A life loss never ends the episode.
The protocol's switches (no-op starts, reset seeding) and how they differ from the DRAMA reference are listed in
docs/decisions.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drama.config import EnvConfig
from drama.envs.spec import EnvSpec, is_atari

if TYPE_CHECKING:
    import gymnasium
    from torchrl.envs import EnvBase


def make_gym_env(cfg: EnvConfig, seed: int, *, evaluation: bool = False) -> gymnasium.Env:
    """The gymnasium stack behind :func:`make_env` (raises ``ConfigError`` for unknown/unsupported ids)."""
    if is_atari(cfg.id):
        from drama.envs.atari import make_atari_gym

        return make_atari_gym(cfg, seed, evaluation=evaluation)
    from drama.envs.gym import make_vector_gym

    return make_vector_gym(cfg, seed, evaluation=evaluation)


def make_env(cfg: EnvConfig, seed: int, *, evaluation: bool = False) -> EnvBase:
    """A single TorchRL env (``GymWrapper``) for ``cfg``; ``seed`` drives the reset seeds and the no-op counts."""
    from drama.envs.gym import to_torchrl

    return to_torchrl(make_gym_env(cfg, seed, evaluation=evaluation))


def probe_env(cfg: EnvConfig) -> EnvSpec:
    """Build the env's gymnasium stack once to read its spec (the same stack training uses).

    Raises :class:`ConfigError` for unknown or unsupported ids."""
    env = make_gym_env(cfg, seed=0)
    try:
        return EnvSpec(tuple(int(d) for d in env.observation_space.shape), int(env.action_space.n))
    finally:
        env.close()
