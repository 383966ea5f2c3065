"""Time one world-model update and one imagination + actor-critic update (median of repeats).

Usage (from the repository root, after installing the package):

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
        python benchmarks/update_step.py [--shapes small paper] [--repeats 3] [--device auto] [--out FILE]

Shapes (the model is always the paper's 7.16 M-parameter Mamba-2 world model unless overridden):

* ``paper``: world-model batch 16 x 128; imagination 1024 contexts of 8, horizon 16 (the paper's settings);
* ``small``: world-model batch 4 x 32; imagination 64 contexts of 8, horizon 16.

Prints one JSON object per (shape, phase) line and a final JSON summary; ``--out`` also writes the summary.
No timing is asserted anywhere: this script only measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict

from drama.bench import write_result
from drama.build import build_models
from drama.config import load_config
from drama.device import resolve_device
from drama.envs.spec import EnvSpec
from drama.imagination import imagine

SHAPES = {
    "small": {"batch_size": 4, "batch_length": 32, "imagine_batch": 64, "context": 8, "horizon": 16},
    "paper": {"batch_size": 16, "batch_length": 128, "imagine_batch": 1024, "context": 8, "horizon": 16},
}
PONG = EnvSpec((3, 64, 64), 6)


def world_model_batch(shape: dict, device: torch.device) -> TensorDict:
    b, length = shape["batch_size"], shape["batch_length"]
    return TensorDict({
        "observation": torch.randint(0, 256, (b, length, 3, 64, 64), dtype=torch.uint8),
        "action": torch.randint(0, PONG.num_actions, (b, length)),
        "reward": torch.randn(b, length),
        "termination": (torch.rand(b, length) < 0.01).float(),
    }, batch_size=[b, length], device=device)


def context_batch(shape: dict, device: torch.device) -> TensorDict:
    b, c = shape["imagine_batch"], shape["context"]
    return TensorDict({
        "observation": torch.randint(0, 256, (b, c, 3, 64, 64), dtype=torch.uint8),
        "action": torch.randint(0, PONG.num_actions, (b, c)),
    }, batch_size=[b, c], device=device)


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["small", "paper"])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write the summary JSON here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    cfg = load_config(None, args.overrides)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    world_model, actor_critic = build_models(cfg, PONG)
    world_model.to(device).configure_optimizers()
    actor_critic.to(device).configure_optimizers()
    results = []
    for name in args.shapes:
        shape = SHAPES[name]
        batch = world_model_batch(shape, device)
        contexts = context_batch(shape, device)

        def imagine_and_update(contexts=contexts, shape=shape):
            imagined = imagine(world_model, contexts, actor_critic.act, shape["horizon"])
            actor_critic.training_step(imagined)

        phases = {
            "world_model_update": lambda batch=batch: world_model.training_step(batch),
            "imagination_actor_critic_update": imagine_and_update,
        }
        for phase, fn in phases.items():
            times = timed(fn, args.repeats, device)
            row = {"shape": name, **shape, "phase": phase, "median_s": round(statistics.median(times), 4),
                   "min_s": round(min(times), 4), "repeats": len(times), "peak_rss_mb": round(peak_rss_mb())}
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "benchmark": "update_step",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "world_model_parameters": sum(p.numel() for p in world_model.parameters()),
        "results": results,
    }
    write_result(summary, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
