"""Shared fixtures: tiny configurations that run in seconds on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDictBase

from drama.config import DramaConfig, load_config

TINY_OVERRIDES = [
    "world_model.stoch_dim=8",
    "world_model.class_dim=8",
    "world_model.hidden_dim=32",
    "world_model.encoder.depth=4",
    "world_model.encoder.mlp_hidden=32",
    "world_model.backbone.d_state=8",
    "world_model.backbone.headdim=16",
    "world_model.backbone.chunk_size=8",
    "world_model.reward_head.hidden=32",
    "world_model.termination_head.hidden=32",
    "actor_critic.actor_hidden=32",
    "actor_critic.critic_hidden=32",
    "actor_critic.num_layers=2",
]


def tiny_config(*extra: str) -> DramaConfig:
    """A small but complete configuration (same structure as the paper's)."""
    return load_config(None, [*TINY_OVERRIDES, *extra])


def pytest_configure(config):
    """One pytest-xdist worker per core (``-n auto``): each worker, and the processes its tests start, gets its
    share of the cores as torch threads. Without this every worker runs torch's default (all cores) and their
    OpenMP threads spin against each other: 4x slower on 2 cores (a 180-step fit: 158 s against 38 s)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable otherwise): with the work shared out test by test, a minutes-long test that starts
    last keeps one worker busy after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


ROOT = Path(__file__).resolve().parents[1]
# conf/debug.yaml made smaller still: 50-step Pong episodes (200 raw frames), a 60-row buffer that wraps around
SMALL_DEBUG = [
    "env.max_episode_frames=200", "replay.capacity=60", "train.prefill_steps=20", "train.batch_size=2",
    "train.batch_length=8", "imagination.batch_size=8", "imagination.context_length=4", "imagination.horizon=4",
    "train.log_every=10", "train.checkpoint_every=0", "runtime.progress=false",
]


@pytest.fixture(scope="session")
def finished_debug_run(tmp_path_factory) -> Path:
    """A finished tiny Pong run (60 env steps, visuals at 40 and at the end) evaluated greedily for 2 episodes with
    videos: the run folder (config, checkpoint, MLflow store with metrics, visuals and evaluation artifacts)."""
    from drama.cli import main

    out = tmp_path_factory.mktemp("runs")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert main(["fit", "--config", str(ROOT / "conf/debug.yaml"), *SMALL_DEBUG, "train.total_steps=60",
                 "train.visuals_every=40", f"runtime.output_dir={out}", "runtime.run_name=finished"]) == 0
    run_dir = out / "finished"
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--video", "--no-progress"]) == 0
    return run_dir


# ------------------------------------------------------------------ backbone test helpers (tests/nn/backbones)
def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max absolute difference of two same-shape tensors (0 for empty ones)."""
    assert a.shape == b.shape
    return (a - b).abs().max().item() if a.numel() else 0.0


def run_steps(model, x: torch.Tensor, state):
    """``x.shape[1]`` calls of ``model.step`` from ``state`` -> (stacked h (B, L, D), final state)."""
    hs = []
    for t in range(x.shape[1]):
        h_t, state = model.step(x[:, t], state)
        hs.append(h_t)
    return torch.stack(hs, dim=1), state


def random_state(model, batch: int, seed: int = 1, dtype: torch.dtype = torch.float64):
    """A backbone state shaped like ``model.initial_state(batch)`` filled with standard normal values."""
    gen = torch.Generator().manual_seed(seed)
    return model.initial_state(batch, dtype=dtype).apply(lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype))


def assert_identical(a, b, path: str = "") -> int:
    """Recursively compare checkpoint trees bitwise; returns the number of tensors and arrays compared."""
    if isinstance(a, TensorDictBase):
        a, b = a.to_dict(), b.to_dict()
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
        return 1
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        return sum(assert_identical(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        return sum(assert_identical(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
        return 1
    assert a == b, path
    return 0
