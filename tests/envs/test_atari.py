"""Atari protocol (64x64 RGB, action repeat with max-pool, life losses, no-op starts, reset seeding), measured
against a raw ALE env driven by hand with frameskip=1."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

from drama.config import EnvConfig
from drama.envs.atari import MaxLast2FrameSkip, channel_first, make_atari_base, make_atari_gym, quiet_ale
from drama.envs.factory import make_env
from drama.envs.gym import LifeLossInfo, ReseedReset

SEED = 11


def raw_ale(env_id: str, max_frames: int = 108_000) -> gym.Env:
    quiet_ale()
    return gym.make(env_id, frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                    max_num_frames_per_episode=max_frames)


def to_obs(frame: np.ndarray) -> torch.Tensor:
    small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))


def ale_of(env):
    """The ale_py AtariEnv inside a make_env TorchRL env."""
    return env._env.unwrapped


def step(env, td, action: int):
    td["action"] = torch.tensor(action)
    td = env.step(td)
    return td["next"], env.step_mdp(td)


def test_observation_and_reward_match_raw_frames():
    """obs = resize(max(last 2 raw frames)), reward = sum of the 4 raw rewards; the final step of a truncated
    episode (321 raw frames = 80 steps + 1 frame) returns the single remaining frame."""
    cfg = EnvConfig("ALE/Pong-v5", max_episode_frames=321)
    env, raw = make_env(cfg, SEED), raw_ale(cfg.id, cfg.max_episode_frames)
    frame, _ = raw.reset(seed=SEED)
    td = env.reset()
    assert torch.equal(td["observation"], to_obs(frame))
    rng = np.random.default_rng(0)
    rewards, pool_matters, last2_matters = [], False, False
    for t in range(81):
        a = int(rng.integers(6))
        nxt, td = step(env, td, a)
        frames, reward = [], 0.0
        for _ in range(4):
            frame, r, terminated, truncated, _ = raw.step(a)
            frames.append(frame)
            reward += r
            if terminated or truncated:
                break
        expected = to_obs(np.maximum(frames[-2], frames[-1]) if len(frames) > 1 else frames[-1])
        assert torch.equal(nxt["observation"], expected), t
        assert nxt["reward"].item() == reward and nxt["reward"].dtype == torch.float32
        assert nxt["truncated"].item() == truncated and nxt["terminated"].item() == terminated
        rewards.append(reward)
        pool_matters |= not torch.equal(expected, to_obs(frames[-1]))
        if len(frames) == 4:
            last2_matters |= not torch.equal(expected, to_obs(np.max(np.stack(frames), axis=0)))
    assert len(frames) == 1 and truncated, "the last step should hold the one frame left before the time limit"
    assert any(r != 0 for r in rewards), "no scoring step: the reward check was vacuous"
    assert pool_matters and last2_matters, "max-pooling never mattered: the check was vacuous"


class _Frames(gym.Env):
    """Frames are [t, 10 - t] at raw step t; reward t; terminates at raw step ``end``."""

    observation_space = gym.spaces.Box(0, 255, (2,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, end: int):
        self.end, self.t = end, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.array([0, 10], np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 10 - self.t], np.uint8), float(self.t), self.t >= self.end, False, {}


@pytest.mark.parametrize(("end", "obs", "reward", "done"), [
    (100, [4, 7], 1 + 2 + 3 + 4, False),  # max of frames 3 and 4 (not of all 4, not the last alone)
    (1, [1, 9], 1, True),  # ended after 1 raw frame: that frame alone
    (2, [2, 9], 1 + 2, True),  # stops early, max of the 2 frames
])
def test_max_last2_frame_skip_unit(end, obs, reward, done):
    env = MaxLast2FrameSkip(_Frames(end), 4)
    env.reset()
    o, r, terminated, _, _ = env.step(0)
    assert o.tolist() == obs and r == reward and terminated == done
    assert env.unwrapped.t == min(end, 4)


def test_life_loss_exactly_when_lives_drop_and_not_in_evaluation():
    cfg = EnvConfig("ALE/Breakout-v5")
    for evaluation in (False, True):
        env = make_env(cfg, SEED, evaluation=evaluation)
        ale = ale_of(env).ale
        td = env.reset()
        rng = np.random.default_rng(0)
        drops = flagged = 0
        for _ in range(400):
            before = ale.lives()
            nxt, td = step(env, td, int(rng.integers(4)))
            dropped = ale.lives() < before
            drops += dropped
            flagged += nxt["life_loss"].item()
            assert nxt["life_loss"].shape == (1,) and nxt["life_loss"].dtype == torch.bool
            if evaluation:
                assert not nxt["life_loss"].item()
            else:
                assert nxt["life_loss"].item() == dropped
            if dropped and ale.lives() > 0:
                assert not nxt["done"].item(), "a life loss must not end the episode"
            if nxt["done"].item():
                break
        assert drops >= 2, "no life lost: the test was vacuous"
        assert flagged == (0 if evaluation else drops)


def test_time_limit_truncates():
    env = make_env(EnvConfig("ALE/Pong-v5", max_episode_frames=400), SEED)
    td = env.reset()
    for t in range(1, 101):
        nxt, td = step(env, td, 0)
        assert nxt["done"].item() == (t == 100), t
    assert nxt["truncated"].item() and not nxt["terminated"].item()


def test_reseed_same_repeats_the_start():
    env = make_env(EnvConfig("ALE/Pong-v5", reseed="same"), SEED)
    first = env.reset()
    rollout = env.rollout(40, auto_reset=False, tensordict=first.clone(), break_when_any_done=False)
    again = env.reset()
    assert torch.equal(first["observation"], again["observation"])
    assert not torch.equal(rollout[-1]["next", "observation"], first["observation"])
    replay = env.rollout(40, auto_reset=False, tensordict=again, break_when_any_done=False,
                         policy=_replay(rollout["action"]))
    assert torch.equal(replay["next", "observation"], rollout["next", "observation"])


def _replay(actions):
    it = iter(actions)

    def policy(td):
        td["action"] = next(it)
        return td

    return policy


@pytest.mark.parametrize(("mode", "offsets"), [("same", [0, 0, 0]), ("sequence", [0, 1, 2])])
def test_reset_seeds_reach_the_emulator(mode, offsets):
    env = make_env(EnvConfig("ALE/Pong-v5", reseed=mode), SEED)
    ale_env = ale_of(env)
    seeds, reset = [], ale_env.reset

    def spy(*, seed=None, options=None):
        seeds.append(seed)
        return reset(seed=seed, options=options)

    ale_env.reset = spy
    for _ in offsets:
        env.reset()
    assert seeds == [SEED + k for k in offsets]


def noop_counts(seed: int, resets: int = 6) -> tuple[list[int], list[torch.Tensor]]:
    env = make_env(EnvConfig("ALE/Pong-v5", noop_max=30), seed)
    ale = ale_of(env).ale
    counts, obs = [], []
    for _ in range(resets):
        obs.append(env.reset()["observation"])
        counts.append(ale.getEpisodeFrameNumber())  # raw frames taken since the emulator's reset
    return counts, obs


def test_noop_starts_are_bounded_deterministic_and_match_raw_frames():
    counts, obs = noop_counts(SEED)
    assert all(0 <= n <= 30 for n in counts)
    assert len(set(counts)) > 1, "the no-op count never varied"
    assert noop_counts(SEED)[0] == counts
    assert noop_counts(SEED + 1)[0] != counts
    raw = raw_ale("ALE/Pong-v5")
    for n, o in zip(counts[:2], obs[:2], strict=True):
        frame, _ = raw.reset(seed=SEED)
        for _ in range(n):
            frame, *_ = raw.step(0)
        assert torch.equal(o, to_obs(frame))
    off_counts = []
    env = make_env(EnvConfig("ALE/Pong-v5"), SEED)
    for _ in range(2):
        env.reset()
        off_counts.append(ale_of(env).ale.getEpisodeFrameNumber())
    assert off_counts == [0, 0]


def gymnasium_stack(cfg: EnvConfig, seed: int) -> gym.Env:
    """``make_atari_gym`` with gymnasium's ``AtariPreprocessing`` in place of the no-op, skip and resize wrappers."""
    env = gym.wrappers.AtariPreprocessing(make_atari_base(cfg), noop_max=cfg.noop_max, frame_skip=cfg.action_repeat,
                                          screen_size=64, terminal_on_life_loss=False, grayscale_obs=False,
                                          scale_obs=False)
    return ReseedReset(LifeLossInfo(channel_first(env)), seed, cfg.reseed)


@pytest.mark.parametrize(("env_id", "max_frames", "steps"), [
    ("ALE/Pong-v5", 321, 250),  # time-limit ends (truncated) every 81 steps
    ("ALE/Breakout-v5", 108_000, 600),  # game overs (terminated) and life losses
])
def test_gymnasium_atari_preprocessing_differs_only_in_the_final_frame(env_id, max_frames, steps):
    """Why make_atari_gym keeps its own wrappers (atari module docstring): on a fixed seed and action sequence,
    gymnasium's AtariPreprocessing gives identical frames, rewards, terminated / truncated flags and life losses
    at every reset and every step except the last step of an episode, whose frame it does not copy (stale)."""
    cfg = EnvConfig(env_id, max_episode_frames=max_frames)
    ours, theirs = make_atari_gym(cfg, SEED), gymnasium_stack(cfg, SEED)
    assert np.array_equal(ours.reset()[0], theirs.reset()[0])
    rng = np.random.default_rng(0)
    ends = stale_ends = life_losses = reward_steps = 0
    for t in range(steps):
        a = int(rng.integers(ours.action_space.n))
        obs, reward, terminated, truncated, info = ours.step(a)
        obs2, reward2, terminated2, truncated2, info2 = theirs.step(a)
        assert (reward, terminated, truncated) == (reward2, terminated2, truncated2), t
        assert info["life_loss"].item() == info2["life_loss"].item(), t
        life_losses += info["life_loss"].item()
        reward_steps += reward != 0
        if terminated or truncated:
            ends += 1
            stale_ends += not np.array_equal(obs, obs2)
            assert np.array_equal(ours.reset()[0], theirs.reset()[0]), t
        else:
            assert np.array_equal(obs, obs2), t
    assert ends >= 2 and reward_steps > 0, "no episode end or no reward: the test was vacuous"
    assert stale_ends > 0, "AtariPreprocessing now returns the final frames too: adopt it (atari module docstring)"
    if env_id == "ALE/Breakout-v5":
        assert life_losses >= 2


def test_gymnasium_atari_preprocessing_noops_repeat_under_same_reseed():
    """Its no-op count is drawn from the emulator's np_random, reseeded by every seeded reset, in 1..noop_max:
    with reseed=same each episode starts after the same number of no-ops (NoopReset's counts vary)."""
    env = gymnasium_stack(EnvConfig("ALE/Pong-v5", noop_max=30), SEED)
    counts = []
    for _ in range(3):
        env.reset()
        counts.append(env.unwrapped.ale.getEpisodeFrameNumber())
    assert len(set(counts)) == 1 and 1 <= counts[0] <= 30
    assert len(set(noop_counts(SEED, resets=3)[0])) > 1
