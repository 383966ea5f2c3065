"""What the models need to know about an environment: observation kind and shape, number of actions.

``ALE/*`` ids follow the Atari protocol (SPEC 1.1): 64x64 RGB pixels (stored channel-first, uint8) and the
game's minimal action set. Other gymnasium ids must have a flat ``Box`` observation (vector observations,
SPEC decision 5) and a ``Discrete`` action space.
"""

from __future__ import annotations

from dataclasses import dataclass

from drama.config import EnvConfig

ATARI_IMAGE_SIZE = 64
"""Side of the square RGB frame after resizing (pixels, SPEC 1.1)."""


@dataclass(frozen=True)
class EnvSpec:
    obs_shape: tuple[int, ...]
    """(3, 64, 64) for pixels, (D,) for vectors."""
    num_actions: int
    """size of the discrete action set."""

    @property
    def pixels(self) -> bool:
        return len(self.obs_shape) == 3


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def probe_env(cfg: EnvConfig) -> EnvSpec:
    """Build the env's gymnasium stack once to read its spec (the same stack training uses).

    Raises :class:`ConfigError` for unknown or unsupported ids."""
    from drama.envs.factory import make_gym_env

    env = make_gym_env(cfg, seed=0)
    try:
        return EnvSpec(tuple(int(d) for d in env.observation_space.shape), int(env.action_space.n))
    finally:
        env.close()
