"""mamba-ssm kernel path versus the pure-PyTorch path of the Mamba backbones, on one CUDA GPU.

Usage (from the repository root, on a CUDA machine with ``pip install 'drama[kernels]'``):

    python benchmarks/kernels.py [--lengths 128 1024] [--batch 16] [--repeats 10] [--out FILE]

For mamba2 and mamba at the paper width (d_model 512, 2 layers), on the same weights: the relative errors
(``||kernel - torch|| / ||torch||``) of the output, the final SSM state and the input and parameter gradients
in fp32 and under bf16 autocast, and the median time of one forward + backward pass of each path with their
ratio (torch / kernel). Prints one JSON line per (backbone, L, dtype) and writes the summary to ``--out``
(default ``benchmarks/results/kernels_cuda.json``). Without CUDA or mamba-ssm it says why and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from drama.nn.backbones.kernels import kernel_unavailable_reason
from drama.nn.backbones.mamba import MambaBackbone
from drama.nn.backbones.mamba2 import Mamba2Backbone

BACKBONES = {"mamba2": Mamba2Backbone, "mamba": MambaBackbone}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def run_pass(model: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor, bf16: bool):
    xi = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        h, state = model(xi)
    (h.float() * grad_out).sum().backward()
    return h.detach(), state["ssm"].detach(), xi.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def timed(model: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor, bf16: bool, repeats: int) -> list[float]:
    run_pass(model, x, grad_out, bf16)  # warm-up (Triton autotuning, allocator)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run_pass(model, x, grad_out, bf16)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, length: int, batch: int, bf16: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    reference = BACKBONES[name](1030, d_model=512, n_layer=2, d_state=16, impl="torch").cuda()
    fast = copy.deepcopy(reference)
    for block in fast.layers:
        block.mixer.impl = "kernel"
    x = torch.randn(batch, length, 1030, device="cuda")
    grad_out = torch.randn(batch, length, 512, device="cuda")
    h_r, s_r, gx_r, g_r = run_pass(reference, x, grad_out, bf16)
    h_k, s_k, gx_k, g_k = run_pass(fast, x, grad_out, bf16)
    t_torch = timed(reference, x, grad_out, bf16, repeats)
    t_kernel = timed(fast, x, grad_out, bf16, repeats)
    return {
        "backbone": name, "length": length, "batch": batch, "dtype": "bf16-autocast" if bf16 else "fp32",
        "rel_err_output": rel_err(h_k, h_r), "rel_err_final_state": rel_err(s_k, s_r),
        "rel_err_input_grad": rel_err(gx_k, gx_r),
        "max_rel_err_param_grad": max(rel_err(g_k[k], g_r[k]) for k in g_r),
        "torch_fwd_bwd_s": statistics.median(t_torch), "kernel_fwd_bwd_s": statistics.median(t_kernel),
        "speedup_torch_over_kernel": statistics.median(t_torch) / statistics.median(t_kernel),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels_cuda.json"))
    args = parser.parse_args(argv)
    reason = kernel_unavailable_reason("cuda")
    if reason is not None:
        print(json.dumps({"skipped": reason}))
        return 0
    rows = []
    for name in BACKBONES:
        for length in args.lengths:
            for bf16 in (False, True):
                row = measure(name, length, args.batch, bf16, args.repeats)
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
