"""Time saving and loading a training-state checkpoint at the paper config's replay size.

Usage (from the repository root, after installing the package):

    python benchmarks/checkpoint_save.py [--rows 100000] [--repeats 3] [--dir checkpoint-bench] [--keep]

Fills a Replay (``conf/atari.yaml``: 100,000 rows) with ``--rows`` random uint8 3x64x64 frames and builds the
paper-size models (Pong's 6 actions, optimiser moments filled by one step), then writes the run folder's checkpoint
with ``drama.run.save_training_state`` and reads it back with ``load_training_state`` ``--repeats`` times each
(every save after the first also turns the old file into ``previous.ckpt``, as in training). Prints one JSON line:
median save, load and verify-only seconds, the file size in MB, peak RSS and the thread counts. Needs about 3 GB of
memory and twice the file size on disk under ``--dir`` (removed afterwards unless ``--keep``). Loads read what the
page cache still holds of the file just written. No timing is asserted anywhere: this script only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict

from drama.acting import ActingContext
from drama.build import build_models
from drama.checkpoint import verify_checkpoint
from drama.config import load_config
from drama.data.replay import Replay
from drama.envs.spec import EnvSpec
from drama.run import RunFolder, TrainingParts, load_training_state, save_training_state

ROOT = Path(__file__).resolve().parents[1]
PONG = EnvSpec((3, 64, 64), 6)
CHUNK = 10_000  # rows generated and appended at a time


class _Env:
    """The env's checkpoint entry (a real EnvRunner's is a few bytes: reseed counters and episode actions)."""

    def state_dict(self) -> dict:
        return {"before_reset": {"seed": 0, "resets": 1}, "episode_actions": [0] * 100}

    def load_state_dict(self, state: dict) -> None:
        pass


def training_parts(rows: int) -> TrainingParts:
    cfg = load_config(ROOT / "conf/atari.yaml")  # rows past its replay.capacity overwrite the oldest
    world_model, actor_critic = build_models(cfg, PONG)
    for module in (world_model, actor_critic):
        module.configure_optimizers()
        for parameter in module.parameters():
            parameter.grad = torch.randn_like(parameter)
        module.optimizer.step()  # LaProp moments of full size, as after any update
        module.optimizer.zero_grad(set_to_none=True)
        module.lr_warmup.step()
    replay = Replay(cfg.replay, cfg.train.batch_size, cfg.imagination.batch_size,
                    generator=torch.Generator().manual_seed(0))
    for first in range(0, rows, CHUNK):
        n = min(CHUNK, rows - first)
        ends = torch.rand(n) < 1 / 1000
        replay.extend(TensorDict(
            observation=torch.randint(0, 256, (n, *PONG.obs_shape), dtype=torch.uint8),
            action=torch.randint(0, PONG.num_actions, (n,)), reward=torch.randn(n), termination=ends,
            episode_end=ends.clone(), batch_size=[n]))
    acting = ActingContext(world_model, actor_critic, cfg.train.acting_context)
    acting.latents.extend(torch.randn(cfg.train.acting_context, world_model.latent_dim).unbind())
    acting.actions.extend([0] * cfg.train.acting_context)
    return TrainingParts(world_model, actor_critic, replay, acting, _Env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="replay rows (the paper's buffer: 100,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("checkpoint-bench"), help="run folder to write into")
    parser.add_argument("--keep", action="store_true", help="keep the run folder afterwards")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    parts = training_parts(args.rows)
    fill_s = time.perf_counter() - start
    folder = RunFolder(args.dir)
    loop = {"step": args.rows, "returns": [0.0] * 100}
    observation = torch.zeros(PONG.obs_shape, dtype=torch.uint8)
    save_s, load_s, verify_s = [], [], []
    try:
        for _ in range(args.repeats):
            start = time.perf_counter()
            save_training_state(None, folder.checkpoint, parts, loop, observation)
            save_s.append(time.perf_counter() - start)
        for _ in range(args.repeats):
            start = time.perf_counter()
            verify_checkpoint(folder.checkpoint)
            verify_s.append(time.perf_counter() - start)
        for _ in range(args.repeats):
            start = time.perf_counter()
            restored = load_training_state(None, folder.checkpoint, parts)
            load_s.append(time.perf_counter() - start)
        assert restored.loop["step"] == args.rows and len(parts.replay) == args.rows
        size_mb = folder.checkpoint.stat().st_size / 1e6
    finally:
        if not args.keep:
            shutil.rmtree(folder.root, ignore_errors=True)
    print(json.dumps({
        "rows": args.rows, "repeats": args.repeats,
        "save_s": round(statistics.median(save_s), 3), "load_s": round(statistics.median(load_s), 3),
        "verify_s": round(statistics.median(verify_s), 3),
        "save_all_s": [round(t, 3) for t in save_s], "load_all_s": [round(t, 3) for t in load_s],
        "size_mb": round(size_mb, 1), "fill_s": round(fill_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "python": platform.python_version(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
