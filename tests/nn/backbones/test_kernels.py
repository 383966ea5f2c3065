"""The mamba-ssm kernel path (``world_model.backbone.impl``): never imported on CPU, rejected up front where it
cannot run, and, on a CUDA machine with mamba-ssm, equal to the pure-PyTorch path on the same weights
(forward and backward, fp32 and bf16). The GPU tests skip cleanly without CUDA or mamba-ssm."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from drama.config import ConfigError, load_config
from drama.nn.backbones import kernels
from drama.nn.backbones.mamba import MambaBackbone
from drama.nn.backbones.mamba2 import Mamba2Backbone


def test_cpu_paths_never_import_mamba_ssm() -> None:
    code = (
        "import sys, torch\n"
        "from drama.nn.backbones.mamba2 import Mamba2Backbone\n"
        "from drama.nn.backbones.mamba import MambaBackbone\n"
        "for m in (Mamba2Backbone(6, d_model=16, d_state=4, headdim=8), MambaBackbone(6, d_model=16, d_state=4)):\n"
        "    h, s = m(torch.randn(2, 5, 6)); m.step(torch.randn(2, 6), s)\n"
        "assert 'mamba_ssm' not in sys.modules, 'mamba_ssm was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_use_kernels_on_cpu_tensors() -> None:
    x = torch.zeros(2)
    assert not kernels.use_kernels("torch", x) and not kernels.use_kernels("auto", x)
    with pytest.raises(RuntimeError, match="impl=kernel needs CUDA tensors"):
        kernels.use_kernels("kernel", x)
    with pytest.raises(ValueError, match="unknown backbone impl"):
        kernels.use_kernels("fast", x)


def test_kernel_unavailable_reason() -> None:
    assert "need a CUDA device" in kernels.kernel_unavailable_reason("cpu")
    if not torch.cuda.is_available():
        assert "no CUDA device" in kernels.kernel_unavailable_reason("auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("overrides,message", [
    (["world_model.backbone.impl=kernel"], "world_model.backbone.impl='kernel' is invalid: no CUDA device"),
    (["world_model.backbone.impl=kernel", "runtime.device=cpu"], "runtime.device=cpu"),
    (["world_model.backbone.impl=kernel", "world_model.backbone.name=gru"], "kernels exist only for mamba2, mamba"),
])
def test_config_rejects_kernel_where_it_cannot_run(overrides: list[str], message: str) -> None:
    """Rejected when the config loads (no such kernel) or at build time (this machine), before a run folder."""
    from drama.preflight import check_backbone

    with pytest.raises(ConfigError, match=message) as info:
        check_backbone(load_config(None, overrides))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- GPU parity

_REASON = kernels.kernel_unavailable_reason("cuda") if torch.cuda.is_available() else "no CUDA device"
needs_kernels = pytest.mark.skipif(_REASON is not None, reason=f"mamba-ssm kernels unavailable: {_REASON}")
BACKBONES = {"mamba2": Mamba2Backbone, "mamba": MambaBackbone}
# fp32: kernels reassociate sums (chunked scans, fused softplus); bf16: autocast matmuls on both paths.
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 5e-2}


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    reference = BACKBONES[name](1030, d_model=512, n_layer=2, d_state=16, impl="torch").cuda()
    fast = copy.deepcopy(reference)
    for block in fast.layers:
        block.mixer.impl = "kernel"
    return reference, fast


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_forward_and_backward_match_torch(name: str, dtype: torch.dtype) -> None:
    reference, fast = _pair(name)
    x = torch.randn(4, 128, 1030, device="cuda")
    grad_out = torch.randn(4, 128, 512, device="cuda")
    outputs = []
    for model in (reference, fast):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            h, state = model(xi)
        (h.float() * grad_out).sum().backward()
        outputs.append((h, state["ssm"], xi.grad, {n: p.grad for n, p in model.named_parameters()}))
    (h_r, s_r, gx_r, g_r), (h_k, s_k, gx_k, g_k) = outputs
    tol = TOLERANCE[dtype]
    assert _rel_err(h_k, h_r) < tol
    assert _rel_err(s_k, s_r) < tol
    assert _rel_err(gx_k, gx_r) < tol
    for key in g_r:
        assert _rel_err(g_k[key], g_r[key]) < tol, key


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_steps_match_torch(name: str, dtype: torch.dtype) -> None:
    reference, fast = _pair(name)
    x = torch.randn(64, 24, 1030, device="cuda")
    results = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for model in (reference, fast):
            _, state = model(x[:, :8])
            hs = []
            for t in range(8, 24):
                h, state = model.step(x[:, t], state)
                hs.append(h)
            results.append((torch.stack(hs, 1), state["ssm"]))
    assert _rel_err(results[1][0], results[0][0]) < TOLERANCE[dtype]
    assert _rel_err(results[1][1], results[0][1]) < TOLERANCE[dtype]
