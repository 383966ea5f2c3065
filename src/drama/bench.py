"""``drama bench``: time the training loop's real phases at a config's shapes, variants side by side.

Each variant is the config plus its own ``key=value`` overrides (``--compare``). For every variant the models,
env, replay and :class:`~drama.loop.DramaLoop` are built exactly as ``drama fit`` builds them (same seed, so the
same initial weights), but on a Fabric without loggers: no MLflow, no run folder, no checkpoints. The replay is
filled with real random-policy rows until both batch kinds can be drawn (and the warm-up is over), and the
acting window is filled by a few policy steps. Then the variants run **interleaved**, one loop iteration each in
turn, so that the noise of a shared machine falls on all of them alike. One iteration times, in order, with a
device synchronisation at each boundary:

* ``act``: the policy's action (the shared acting step of :mod:`drama.acting`);
* ``env``: the env step and writing the row to the replay;
* ``replay``: drawing one world-model batch and one imagination context (DFS) and moving them to the device;
* ``world_model``: one world-model update;
* ``actor_critic``: one imagination and one actor-critic update.

``env_steps_per_s`` is what the loop would reach with the config's update schedule:
``1 / (act + env + (replay_world_model + world_model) * wm_updates / wm_every + (replay_imagination +
actor_critic) * ac_updates / ac_every)`` from the per-phase medians (at the paper's 1:1 schedule, one over the
sum of the medians). The first
``--warmup`` iterations are not timed; ``first_iteration_s - median`` is reported as ``warmup_overhead_s``
(compilation and first-call costs). Peak memory is the largest resident set size sampled during the variant's
timed iterations on CPU (all variants live in one process, so it includes the others' resident state; with
glibc tuned to keep freed memory it is the process's high-water mark so far), and
``torch.cuda.max_memory_allocated`` over them on CUDA (exact per variant).

The output is one JSON object (the last line printed; also written to ``--out``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drama.config import ConfigError, DramaConfig, batch_shape, load_config
from drama.device import device_name

PHASES = ("act", "env", "replay", "world_model", "actor_critic")
"""Timed phases of one loop iteration; ``replay`` is the sum of its two draws (``DRAWS``)."""
DRAWS = ("replay_world_model", "replay_imagination")
"""The two replay draws of ``replay``, also reported apart."""
_TIMED = ("act", "env", "replay_world_model", "replay_imagination", "world_model", "actor_critic")
"""What one iteration measures, in order."""


def parse_compare(spec: str) -> list[str]:
    """``"k=v k=v"`` -> ``["k=v", "k=v"]`` (shell-style quoting allowed)."""
    items = shlex.split(spec)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--compare {spec!r}: {item!r} is not of the form key=value")
    return items


class _PeakRss:
    """Largest resident set size of this process while active, sampled every 5 ms (Linux; else ru_maxrss)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            import resource

            scale = 1 if sys.platform == "darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> _PeakRss:
        self.peak = self.current()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.current())


@dataclass
class _Variant:
    """One configuration under test: its loop, device and the samples taken so far."""

    name: str
    overrides: list[str]
    cfg: DramaConfig
    device: torch.device
    precision: str
    loop: Any = None
    samples: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in _TIMED})
    first_iteration_s: float | None = None
    peak_memory_bytes: int = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def build(self, run_dir: Path) -> None:
        """Models, env, replay and loop as ``drama fit`` builds them (:func:`drama.build.build_training_system`),
        on a Fabric without loggers."""
        import lightning as L

        from drama.build import build_training_system
        from drama.loop import DramaLoop

        cfg = self.cfg
        L.seed_everything(cfg.runtime.seed, verbose=False)
        s = build_training_system(cfg, self.device, self.precision)
        self.loop = DramaLoop(cfg, s.fabric, s.world_model, s.actor_critic, s.replay, s.env, run_dir)
        self.loop.observation = s.env.reset()
        self.loop.acting.reset()

    def fill(self) -> int:
        """Random-policy rows until both batch kinds can be drawn and the warm-up is over, then policy steps
        until the acting window is full. Returns the rows written."""
        loop = self.loop
        shapes = [(mode, *batch_shape(loop.cfg, mode)) for mode in ("world_model", "imagination")]
        limit = max(self.cfg.replay.capacity, 1)
        while loop.state.step < self.cfg.train.prefill_steps or not all(
                loop.replay.ready(mode, size, length) for mode, size, length in shapes):
            if loop.state.step >= limit:
                raise ConfigError(f"bench: after {limit} random env steps the replay (replay.capacity="
                                  f"{self.cfg.replay.capacity}) still cannot draw {shapes}: episodes too short "
                                  "for train.batch_length / imagination.context_length, or too few rows")
            loop.step_env(loop.acting.act_and_observe(loop.observation, loop.env.num_actions, random=True))
        for _ in range(self.cfg.train.acting_context):
            loop.env_step()
        loop.metrics.pop()
        return loop.state.step

    def iteration(self, timed: bool) -> None:
        """One loop iteration, phase by phase with a device synchronisation at each boundary."""
        loop, seconds = self.loop, {}

        @contextmanager
        def phase(name: str) -> Iterator[None]:
            self.sync()
            start = time.perf_counter()
            yield
            self.sync()
            seconds[name] = time.perf_counter() - start

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with _PeakRss() as rss:
            with phase("act"):
                action = loop.choose_action()
            with phase("env"):
                loop.step_env(action)
            with phase("replay_world_model"):
                batch = loop.draw("world_model")
            with phase("replay_imagination"):
                context = loop.draw("imagination")
            if batch is None or context is None:
                raise RuntimeError("bench: the replay can no longer draw a batch (too few valid starts)")
            with phase("world_model"):
                loop.train_world_model(batch)
            with phase("actor_critic"):
                loop.train_actor_critic(context)
        loop.metrics.pop()  # the loop's own metrics are not needed (untimed)
        if self.first_iteration_s is None:
            self.first_iteration_s = sum(seconds.values())
        if not timed:
            return
        for name in _TIMED:
            self.samples[name].append(seconds[name])
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else rss.peak
        self.peak_memory_bytes = max(self.peak_memory_bytes, peak)

    def summary(self) -> dict[str, Any]:
        train = self.cfg.train
        median = {key: statistics.median(values) for key, values in self.samples.items()}
        wm_share = train.world_model_updates / train.world_model_every
        ac_share = train.actor_critic_updates / train.actor_critic_every
        per_step = (median["act"] + median["env"] + (median["replay_world_model"] + median["world_model"]) * wm_share
                    + (median["replay_imagination"] + median["actor_critic"]) * ac_share)
        iterations = [sum(values) for values in zip(*self.samples.values(), strict=True)]
        iteration = statistics.median(iterations)
        replay = [a + b for a, b in zip(*(self.samples[d] for d in DRAWS), strict=True)]
        phases = {"act": median["act"], "env": median["env"], "replay": statistics.median(replay),
                  "world_model": median["world_model"], "actor_critic": median["actor_critic"]}
        return {
            "name": self.name,
            "overrides": self.overrides,
            "device": str(self.device),
            "precision": self.precision,
            "compile": self.cfg.runtime.compile,
            "replay_device": str(self.loop.replay.device),
            "env_steps_per_s": 1.0 / per_step,
            "seconds_per_env_step": per_step,
            "median_s": phases,
            "median_draw_s": {draw: median[draw] for draw in DRAWS},
            "median_iteration_s": iteration,
            "samples_s": {**self.samples, "iteration": iterations},
            "first_iteration_s": self.first_iteration_s,
            "warmup_overhead_s": (self.first_iteration_s or 0.0) - iteration,
            "peak_memory_mb": self.peak_memory_bytes / 2**20,
            "memory": "cuda_max_memory_allocated" if self.device.type == "cuda" else "process_peak_rss",
        }


def bench(config: str, overrides: list[str], compares: list[str], iterations: int = 3, warmup: int = 1,
          threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Benchmark the config (first variant) and each ``--compare`` variant; returns the JSON-ready result."""
    from drama.device import resolve_device, resolve_precision
    from drama.envs.factory import probe_env

    if iterations < 1:
        raise ConfigError(f"--iterations={iterations} is invalid: must be a positive integer")
    if warmup < 0:
        raise ConfigError(f"--warmup={warmup} is invalid: must be a non-negative integer")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads={threads} is invalid: must be a positive integer")
    specs = [("config", [])] + [(spec, parse_compare(spec)) for spec in compares]
    variants = []
    for name, extra in specs:  # every variant is validated before anything is built
        cfg = load_config(config, [*overrides, *extra])
        device = resolve_device(cfg.runtime.device)
        variants.append(_Variant(name, extra, cfg, device, resolve_precision(cfg.runtime.precision, device)))
    probe_env(variants[0].cfg.env)
    import torchrl  # noqa: F401  (imported first: its import sets its logger's level)

    logging.getLogger("torchrl").setLevel(logging.WARNING)  # no storage-init chatter per variant
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(config, overrides, variants, iterations, warmup, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(config: str, overrides: list[str], variants: list[_Variant], iterations: int, warmup: int,
         progress: bool) -> dict[str, Any]:
    import tempfile

    def say(message: str) -> None:
        if progress:
            print(f"# bench: {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drama-bench-") as tmp:
        for variant in variants:
            variant.build(Path(tmp))
            rows = variant.fill()
            say(f"{variant.name}: built, replay filled with {rows} rows ({variant.precision} on {variant.device})")
        for i in range(warmup + iterations):
            for variant in variants:
                timed = i >= warmup
                variant.iteration(timed=timed)
                seconds = sum(s[-1] for s in variant.samples.values()) if timed else variant.first_iteration_s
                say(f"iteration {i + 1}/{warmup + iterations} {variant.name}: {seconds:.3f} s"
                    f"{'' if timed else ' (warm-up, not timed)'}")
        for variant in variants:
            variant.loop.env.close()
    results = [variant.summary() for variant in variants]
    first = results[0]
    for result in results:
        result["speedup_vs_first"] = result["env_steps_per_s"] / first["env_steps_per_s"]
        result["phase_speedup_vs_first"] = {
            phase: first["median_s"][phase] / result["median_s"][phase] if result["median_s"][phase] > 0 else None
            for phase in PHASES}
    best = max(results, key=lambda r: r["env_steps_per_s"])
    return {
        "bench": "drama",
        "config": config,
        "overrides": list(overrides),
        "iterations": iterations,
        "warmup_iterations": warmup,
        "device": str(variants[0].device),
        "device_name": device_name(variants[0].device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": time.perf_counter() - start,
        "best": best["name"],
        "variants": results,
    }


def write_result(result: dict[str, Any], out: str | None) -> None:
    """Print the result as one JSON line; also write it (indented) to ``out`` if given."""
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
