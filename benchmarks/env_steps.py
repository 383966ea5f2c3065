"""Env steps/s of drama's Atari gymnasium stack versus one built on ``gymnasium.wrappers.AtariPreprocessing``.

Usage (from the repository root): ``python benchmarks/env_steps.py [--games ALE/Pong-v5 ALE/Breakout-v5]
[--steps 2000] [--repeats 7]``. One thread (torch, OpenCV and the BLAS pools are pinned to 1 before the
imports). For each game both stacks are built once; each repeat resets them (same seed: identical emulation
every repeat) and times ``--steps`` agent steps (4 raw frames each) of one fixed random action sequence,
resets at episode ends included. The stacks alternate A B A B within the process, so drifts of the machine hit
both alike. Prints one JSON object: per game the median steps/s of each stack and their ratio
(``gymnasium / drama``, > 1 means the gymnasium wrapper is faster), by the wall clock and by CPU time.

``drama`` is :func:`drama.envs.atari.make_atari_gym` (what :func:`drama.envs.factory.make_env` wraps);
``gymnasium`` replaces its no-op, frame-skip/max-pool and resize wrappers by ``AtariPreprocessing(noop_max=0,
frame_skip=4, screen_size=64, grayscale_obs=False)`` and keeps channel-first, life-loss and reset seeding. It is
not used by the package: the atari module's docstring says why.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from drama.config import EnvConfig  # noqa: E402
from drama.envs.atari import channel_first, make_atari_base, make_atari_gym  # noqa: E402
from drama.envs.gym import LifeLossInfo, ReseedReset  # noqa: E402
from drama.envs.spec import ATARI_IMAGE_SIZE  # noqa: E402

SEED = 0


def make_gymnasium_stack(cfg: EnvConfig, seed: int) -> gym.Env:
    """The candidate stack: gymnasium's AtariPreprocessing in place of drama's no-op/skip/resize wrappers."""
    env = make_atari_base(cfg)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=cfg.noop_max, frame_skip=cfg.action_repeat,
                                          screen_size=ATARI_IMAGE_SIZE, terminal_on_life_loss=False,
                                          grayscale_obs=False, scale_obs=False)
    env = channel_first(env)
    env = LifeLossInfo(env)
    return ReseedReset(env, seed, cfg.reseed)


def timed_steps(env: gym.Env, actions: np.ndarray) -> tuple[float, float]:
    """Steps/s of ``actions`` from a fresh reset (the reset itself is not timed, episode-end resets are), by the
    wall clock and by this process's CPU time (less sensitive to other jobs on a shared machine)."""
    env.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - wall), len(actions) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["ALE/Pong-v5", "ALE/Breakout-v5"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    result = {"threads": 1, "steps_per_repeat": args.steps, "repeats": args.repeats, "frames_per_step": 4,
              "order": "interleaved drama, gymnasium, drama, gymnasium, ...", "cpu": platform.processor() or
              platform.machine(), "gymnasium": gym.__version__, "opencv": cv2.__version__, "games": {}}
    for game in args.games:
        cfg = EnvConfig(game)
        stacks = {"drama": make_atari_gym(cfg, SEED), "gymnasium": make_gymnasium_stack(cfg, SEED)}
        actions = np.random.default_rng(SEED).integers(stacks["drama"].action_space.n, size=args.steps)
        rates: dict[str, list[float]] = {name: [] for name in stacks}
        cpu_rates: dict[str, list[float]] = {name: [] for name in stacks}
        for _ in range(args.repeats):
            for name, env in stacks.items():
                wall, cpu = timed_steps(env, actions)
                rates[name].append(wall)
                cpu_rates[name].append(cpu)
        medians = {name: statistics.median(r) for name, r in rates.items()}
        cpu_medians = {name: statistics.median(r) for name, r in cpu_rates.items()}
        result["games"][game] = {
            "median_steps_per_s": {name: round(m, 1) for name, m in medians.items()},
            "ratio_gymnasium_over_drama": round(medians["gymnasium"] / medians["drama"], 3),
            "median_cpu_steps_per_s": {name: round(m, 1) for name, m in cpu_medians.items()},
            "cpu_ratio_gymnasium_over_drama": round(cpu_medians["gymnasium"] / cpu_medians["drama"], 3),
            "steps_per_s": {name: [round(x, 1) for x in r] for name, r in rates.items()},
        }
        for env in stacks.values():
            env.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
