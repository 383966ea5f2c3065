"""Replay buffer and window-start samplers (DFS and uniform)."""

from drama.data.dfs import MODES, DynamicFrequencySampler, UniformSampler, WindowSampler
from drama.data.replay import Replay, make_sampler

__all__ = ["MODES", "DynamicFrequencySampler", "Replay", "UniformSampler", "WindowSampler", "make_sampler"]
