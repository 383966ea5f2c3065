"""Optional mamba-ssm fast path for the Mamba backbones (``world_model.backbone.impl``).

mamba-ssm has no CPU path: importing it needs its CUDA extension. So nothing here imports ``mamba_ssm`` unless
a kernel call is about to run on a CUDA tensor:

* ``impl=torch``: the pure-PyTorch path, always.
* ``impl=auto``: the kernels for CUDA inputs when ``mamba_ssm`` imports, otherwise the pure-PyTorch path.
* ``impl=kernel``: the kernels; :func:`kernel_unavailable_reason` lets the config reject it up front (one-line
  error) where it cannot work, and a call on a non-CUDA tensor raises.

The kernel functions take our mixers' own parameters (their layout mirrors ``mamba_ssm.modules``), so the same
weights run on either path and the GPU tests compare them directly. Only the scans are fused: Mamba-2's chunked
SSD (``mamba_chunk_scan_combined``), Mamba-1's selective scan (``selective_scan_fn``) and both recurrent steps
(``selective_state_update``); the projections, the causal conv and the norms stay in PyTorch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from types import SimpleNamespace

import torch
from torch import Tensor

from drama.config import BACKBONE_IMPLS, one_line


@functools.cache
def _import_error() -> str | None:
    """None when the mamba-ssm kernels import, else why not (computed once, only on CUDA machines)."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return "mamba-ssm is not installed (pip install 'drama[kernels]', see README)"
    try:
        importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as exc:  # noqa: BLE001 - a broken build can raise anything (ImportError, OSError, ...)
        return f"mamba-ssm does not import ({type(exc).__name__}: {one_line(exc)})"
    return None


def kernel_unavailable_reason(device: str = "auto") -> str | None:
    """None when the kernels can run for ``runtime.device`` = ``device``; otherwise a one-line reason."""
    if device == "cpu" or device == "mps":
        return f"runtime.device={device}: the mamba-ssm kernels need a CUDA device"
    if not torch.cuda.is_available():
        return "no CUDA device is available: the mamba-ssm kernels need one"
    return _import_error()


def use_kernels(impl: str, x: Tensor) -> bool:
    """Whether a mixer call on ``x`` takes the kernel path under ``impl`` (auto, torch or kernel)."""
    if impl == "torch":
        return False
    if impl == "kernel":
        if not x.is_cuda:
            raise RuntimeError(f"backbone impl=kernel needs CUDA tensors, got a {x.device.type} tensor")
        error = _import_error()
        if error is not None:
            raise RuntimeError(f"backbone impl=kernel: {error}")
        return True
    if impl != "auto":
        raise ValueError(f"unknown backbone impl {impl!r} (allowed: {', '.join(BACKBONE_IMPLS)})")
    if not x.is_cuda:
        return False
    error = _import_error()
    if error is not None:
        _warn_fallback(error)
        return False
    return True


@functools.cache
def _warn_fallback(reason: str) -> None:
    warnings.warn(f"backbone impl=auto: using the pure-PyTorch path on CUDA because {reason}", stacklevel=3)


def _ops() -> SimpleNamespace:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return SimpleNamespace(chunk_scan=mamba_chunk_scan_combined, scan=selective_scan_fn,
                           state_update=selective_state_update)


def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, dt_bias: Tensor, chunk_size: int,
             initial_state: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba-2 chunked scan with the skip: ``y = SSD(x, softplus(dt + dt_bias), A, B, C) + D x``.

    x (b, l, h, p), dt raw (b, l, h), A (h,), B/C (b, l, g, n), D (h,), initial_state (b, h, p, n) ->
    (y (b, l, h, p), final state (b, h, p, n) float32).
    """
    y, final = _ops().chunk_scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                                 initial_states=initial_state.float(), return_final_states=True)
    return y, final


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
             dt_bias: Tensor) -> tuple[Tensor, Tensor]:
    """One Mamba-2 token: x (b, h, p), dt raw (b, h), A (h,), B/C (b, g, n), D (h,) from ``state``
    (b, h, p, n; not modified) -> (y (b, h, p) including ``D x``, new state)."""
    h, p, n = state.shape[1:]
    new_state = state.float().clone()
    y = _ops().state_update(
        new_state, x, dt.unsqueeze(-1).expand(-1, -1, p), A.float()[:, None, None].expand(h, p, n), B, C,
        D=D[:, None].expand(h, p), dt_bias=dt_bias[:, None].expand(h, p), dt_softplus=True)
    return y, new_state


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
                   delta_bias: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba-1 scan from a zero state: u/delta/z (b, d, l), A (d, n), B/C (b, n, l), D (d,) ->
    (y * SiLU(z) (b, d, l), final state (b, d, n)). The kernel has no initial-state input."""
    y, last = _ops().scan(u, delta, A, B, C, D=D.float(), z=z, delta_bias=delta_bias.float(), delta_softplus=True,
                          return_last_state=True)
    return y, last


def selective_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
                   dt_bias: Tensor) -> tuple[Tensor, Tensor]:
    """One Mamba-1 token: x/dt (raw)/z (b, d), A (d, n), B/C (b, n), D (d,) from ``state`` (b, d, n; not
    modified) -> (y * SiLU(z) (b, d), new state)."""
    new_state = state.float().clone()
    y = _ops().state_update(new_state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    return y, new_state
