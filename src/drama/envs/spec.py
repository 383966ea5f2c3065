"""What the models need to know about an environment: observation kind and shape, number of actions.

``ALE/*`` ids follow the Atari protocol (SPEC 1.1): 64x64 RGB pixels (stored channel-first, uint8) and the
game's minimal action set. Other gymnasium ids must have a flat ``Box`` observation (vector observations,
SPEC decision 5) and a ``Discrete`` action space.
"""

from __future__ import annotations

from dataclasses import dataclass

from drama.config import ConfigError, EnvConfig

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
    """Build the env once to read its spec. Raises :class:`ConfigError` for unknown or unsupported ids."""
    import gymnasium as gym

    kwargs = {}
    if is_atari(cfg.id):
        import ale_py

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no start-up banner on stderr
        gym.register_envs(ale_py)
        kwargs = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False}
    try:
        env = gym.make(cfg.id, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"env.id={cfg.id!r} is not a registered gymnasium environment ({type(exc).__name__})") \
            from None
    try:
        action_space, obs_space = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"env.id={cfg.id!r} has a {type(action_space).__name__} action space: "
                          "only Discrete actions are supported")
    if is_atari(cfg.id):
        return EnvSpec((3, ATARI_IMAGE_SIZE, ATARI_IMAGE_SIZE), int(action_space.n))
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(f"env.id={cfg.id!r} observations are {obs_space}: need a flat Box (or an ALE/* id)")
    return EnvSpec((int(obs_space.shape[0]),), int(action_space.n))
