"""Metric keys and the on-device accumulator of the metrics between two logs.

This module owns the names of the metrics that more than one module reads (the loop writes them; ``drama report``,
the sweep's progress table, the benchmarks and the notebook read them): use the constants, never the strings.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

RESUMED_KEY = "run/resumed_from_step"
"""Metric logged at each resume (value and step: the checkpoint's env step); see :meth:`Tracker.metric_history`."""
EPISODE_RETURN, EPISODE_LENGTH = "episode/return", "episode/length"
"""Metric keys of each finished training episode: its return and length (agent steps), at the env step it ended."""
ENV_STEPS, STEPS_PER_SECOND = "progress/env_steps", "time/steps_per_second"
"""Metric keys of the run's progress at each log: env steps done and the training rate (env steps/s)."""
EVAL_PREFIX = "eval"
"""``drama evaluate`` logs ``eval/<policy>/return_mean`` etc. at the checkpoint's env step (:func:`eval_key`)."""


def eval_key(policy: str, name: str) -> str:
    """The metric key of an evaluation's ``name`` (``return_mean``, ...) under ``policy`` (greedy, sample)."""
    return f"{EVAL_PREFIX}/{policy}/{name}"


class MetricAccumulator:
    """Running means of scalar metrics between two logging points, without host syncs until :meth:`pop`.

    Tensor values are summed as (detached, float32) tensors on their own device, so adding a training step's
    metrics never waits for the device; :meth:`pop` reads all sums back at once (one transfer per device).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, Any], prefix: str = "") -> None:
        for key, value in metrics.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            name = prefix + key
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] += 1

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the wall seconds the block took as ``key`` (when it ends without an error)."""
        start = time.perf_counter()
        yield
        self.add({key: time.perf_counter() - start})

    def pop(self) -> dict[str, float]:
        """The means since the last pop; resets."""
        tensors = {key: value for key, value in self.sums.items() if isinstance(value, torch.Tensor)}
        values = {key: float(value) for key, value in self.sums.items() if not isinstance(value, torch.Tensor)}
        by_device: dict[torch.device, list[str]] = defaultdict(list)
        for key, value in tensors.items():
            by_device[value.device].append(key)
        for keys in by_device.values():
            values.update(zip(keys, torch.stack([tensors[k].reshape(()) for k in keys]).tolist(), strict=True))
        out = {key: values[key] / self.counts[key] for key in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out
