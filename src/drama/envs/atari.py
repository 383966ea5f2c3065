"""The Atari protocol as a gymnasium stack: 64x64 RGB channel-first uint8 frames, action repeat with summed
unclipped rewards and a max over the last 2 raw frames, a frame time limit, optional no-op starts, life losses.

Inner to outer: ALE ``frameskip=1``, no sticky actions, minimal action set, ``max_num_frames_per_episode``
(time limit -> ``truncated``) -> :class:`NoopReset` (optional random no-op raw frames after each reset) ->
:class:`MaxLast2FrameSkip` (action repeat, summed unclipped rewards, max over the last 2 raw frames) ->
``ResizeObservation`` (``cv2.resize`` INTER_AREA to 64x64 RGB) -> channel-first uint8 -> ``LifeLossInfo`` ->
``ReseedReset``.

Why not ``gymnasium.wrappers.AtariPreprocessing`` (gymnasium 1.4; ``noop_max=0, frame_skip=4,
screen_size=64, grayscale_obs=False, terminal_on_life_loss=False, scale_obs=False``) in place of the no-op,
frame-skip and resize wrappers: it does not reproduce the frames of this stack.

* The last step of an episode differs. Its ``step`` leaves the skip loop on ``terminated or truncated`` before
  it copies the screen, so it returns the max of stale buffers (the previous step's pooled frame and the
  previous step's 3rd raw frame, or this step's 3rd if the episode ended on the 4th) instead of the max of the
  last 2 raw frames (the single frame when the episode ended after 1 raw frame). Measured with seed 11 and
  uniform random actions, 3000 steps per game (500 with the 321-frame limit): every other step was identical
  (frames, rewards, terminated / truncated, life losses); the final frame differed at 3 of 3 episode ends of
  Pong, 6 of 6 time-limit ends of Pong with a 321-frame limit and 7 of 15 episode ends of Breakout, by up to 180
  (of 255) in a pixel. ``tests/envs/test_atari.py`` checks this.
* Its no-op starts come from ``env.unwrapped.np_random``, which every seeded reset reseeds: with
  ``env.reseed=same`` every episode would get the same count. It draws 1..noop_max (never 0), and after an
  episode end during the no-ops it resets and goes on with the no-ops. :class:`NoopReset` draws 0..noop_max
  from its own RNG seeded once per run (so the counts vary between episodes and the env runner can save and
  restore that RNG) and stops the no-ops after such a reset.
* It is not faster: ``benchmarks/env_steps.py`` (both stacks interleaved, 1 thread, 7 x 2000 steps) gave it
  0.89x (Pong) and 0.93x (Breakout) of this stack's steps/s in CPU-time medians on a shared x86-64 CPU.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from drama.config import ConfigError, EnvConfig
from drama.envs.gym import LifeLossInfo, ReseedReset, check_discrete_actions, gym_make
from drama.envs.spec import ATARI_IMAGE_SIZE


class NoopReset(gym.Wrapper):
    """After each reset take ``n ~ U{0..noop_max}`` NOOP raw steps (action 0); ``n`` comes from an RNG seeded once
    with ``seed``, so the sequence of counts is deterministic per run. If the episode ends during the no-ops the
    env is reset again (with the same arguments) and the no-ops stop."""

    def __init__(self, env: gym.Env, noop_max: int, seed: int):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if meanings[0] != "NOOP":
            raise ConfigError(f"env.noop_max needs action 0 = NOOP, but this game's action 0 is {meanings[0]!r}")
        self.noop_max = int(noop_max)
        self.rng = np.random.default_rng(seed)
        self.last_noops = 0
        """number of no-ops taken after the latest reset."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        n = int(self.rng.integers(self.noop_max + 1))
        self.last_noops = 0
        for _ in range(n):
            obs, _, terminated, truncated, info = self.env.step(0)
            self.last_noops += 1
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
                break
        return obs, info


class MaxLast2FrameSkip(gym.Wrapper):
    """Repeat the action ``skip`` times, sum the rewards, stop early when the episode ends, and return the
    pixel-wise max of the last 2 raw frames (the single frame if the episode ended after 1 raw frame)."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        if skip < 1:
            raise ValueError(f"action repeat must be >= 1, got {skip}")
        self.skip = int(skip)

    def step(self, action):
        total, before, last = 0.0, None, None
        terminated = truncated = False
        info = {}
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            before, last = last, obs
            if terminated or truncated:
                break
        frame = last if before is None else np.maximum(before, last)
        return frame, total, terminated, truncated, info


def channel_first(env: gym.Env) -> gym.Env:
    """HWC uint8 -> contiguous CHW uint8 (the key stays ``observation``; TorchRL would call HWC RGB ``pixels``)."""
    h, w, c = env.observation_space.shape
    space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)
    return gym.wrappers.TransformObservation(env, lambda o: np.ascontiguousarray(o.transpose(2, 0, 1)), space)


def quiet_ale():
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no start-up banner on stderr
    gym.register_envs(ale_py)


def make_atari_base(cfg: EnvConfig) -> gym.Env:
    """The raw ALE env of the protocol: 1 frame per step, no sticky actions, minimal set, frame time limit."""
    quiet_ale()
    env = gym_make(cfg.id, frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   max_num_frames_per_episode=cfg.max_episode_frames)
    check_discrete_actions(env, cfg.id)
    return env


def make_atari_gym(cfg: EnvConfig, seed: int, *, evaluation: bool = False) -> gym.Env:
    """The full Atari gymnasium stack of the module docstring; observations are (3, 64, 64) uint8 RGB."""
    env = make_atari_base(cfg)
    if cfg.noop_max > 0:
        env = NoopReset(env, cfg.noop_max, seed)
    env = MaxLast2FrameSkip(env, cfg.action_repeat)
    env = gym.wrappers.ResizeObservation(env, (ATARI_IMAGE_SIZE, ATARI_IMAGE_SIZE))  # cv2 INTER_AREA
    env = channel_first(env)
    env = LifeLossInfo(env, enabled=not evaluation)
    return ReseedReset(env, seed, cfg.reseed)
