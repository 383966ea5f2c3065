"""What the models need to know about an environment: observation kind and shape, number of actions.

``ALE/*`` ids follow the Atari protocol: 64x64 RGB pixels (stored channel-first, uint8) and the game's minimal
action set. Other gymnasium ids must have a flat ``Box`` observation (vector observations, see
docs/decisions.md) and a ``Discrete`` action space. This module imports nothing of :mod:`drama.envs`; the spec
of a configured env is read by :func:`drama.envs.factory.probe_env`.
"""

from __future__ import annotations

from dataclasses import dataclass

ATARI_IMAGE_SIZE = 64
"""Side of the square RGB frame after resizing (pixels)."""


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
