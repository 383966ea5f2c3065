"""Mamba-1 backbone: the selective scan against its closed form, step/parallel
parity, state continuation, gradients, the paper parameter count and init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import max_err as _max_err
from conftest import random_state as _random_state
from conftest import run_steps as _steps
from drama.nn.backbones.mamba import MambaBackbone, selective_scan

DT = torch.float64
TOL = 1e-8
SMALL = dict(d_model=16, n_layer=2, d_state=4, expand=2, d_conv=4, dt_rank=3)


def _backbone(input_dim: int = 10, seed: int = 0, **overrides) -> MambaBackbone:
    torch.manual_seed(seed)
    return MambaBackbone(input_dim=input_dim, **{**SMALL, **overrides}).to(DT)


@pytest.mark.parametrize("l", [1, 6, 33])
def test_selective_scan_equals_closed_form(l: int) -> None:
    """``h_t = sum_{s<=t} exp(sum_{s<r<=t} Δ_r A) Δ_s x_s B_s + exp(sum_{r<=t} Δ_r A) h_0``, ``y_t = h_t C_t``."""
    gen = torch.Generator().manual_seed(l)
    b, d, n = 2, 5, 3
    x = torch.randn(b, l, d, generator=gen, dtype=DT)
    delta = F.softplus(torch.randn(b, l, d, generator=gen, dtype=DT))
    A = -torch.rand(d, n, generator=gen, dtype=DT) * 4
    B, C = torch.randn(b, l, n, generator=gen, dtype=DT), torch.randn(b, l, n, generator=gen, dtype=DT)
    h0 = torch.randn(b, d, n, generator=gen, dtype=DT)
    y, h_final = selective_scan(x, delta, A, B, C, initial_state=h0)
    cum = torch.cumsum(delta.unsqueeze(-1) * A, dim=1)  # (b, l, d, n): sum_{r<=t} Δ_r A
    for t in range(l):
        h_t = torch.exp(cum[:, t]) * h0
        for s in range(t + 1):
            h_t = h_t + torch.exp(cum[:, t] - cum[:, s]) * (delta[:, s] * x[:, s]).unsqueeze(-1) * B[:, s, None]
        assert _max_err(y[:, t], torch.einsum("bdn,bn->bd", h_t, C[:, t])) <= 1e-12
    assert _max_err(h_final, h_t) <= 1e-12
    assert y.abs().max() > 0.1


@pytest.mark.parametrize("l", [1, 5, 17])
@pytest.mark.parametrize("from_state", [False, True])
def test_steps_equal_parallel_pass(l: int, from_state: bool) -> None:
    model = _backbone()
    x = torch.randn(3, l, 10, dtype=DT)
    state = _random_state(model, 3) if from_state else None
    h, final = model(x, state)
    h_steps, final_steps = _steps(model, x, state if from_state else model.initial_state(3, dtype=DT))
    assert _max_err(h, h_steps) <= TOL
    assert _max_err(final["conv"], final_steps["conv"]) <= TOL
    assert _max_err(final["ssm"], final_steps["ssm"]) <= TOL
    assert final["conv"].shape == (3, 2, 3, 32) and final["ssm"].shape == (3, 2, 32, 4)
    with torch.no_grad():  # the buffered no-grad step path
        h_nograd, _ = _steps(model, x, state if from_state else model.initial_state(3, dtype=DT))
    assert _max_err(h, h_nograd) <= TOL


def test_parallel_continues_from_a_state() -> None:
    model = _backbone()
    x = torch.randn(2, 12, 10, dtype=DT)
    h_all, final_all = model(x)
    h_a, mid = model(x[:, :5])
    h_b, final_b = model(x[:, 5:], mid)
    assert _max_err(torch.cat([h_a, h_b], 1), h_all) <= TOL
    assert _max_err(final_b["ssm"], final_all["ssm"]) <= TOL


def test_step_does_not_modify_the_state() -> None:
    model = _backbone()
    state = _random_state(model, 2)
    before = state.clone()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            model.step(torch.randn(2, 10, dtype=DT), state)
        assert (state == before).all()


def test_every_parameter_gets_a_gradient() -> None:
    model = _backbone()
    h, state = model(torch.randn(2, 6, 10, dtype=DT), _random_state(model, 2))
    ((h * torch.randn_like(h)).sum() + state["ssm"].square().sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().max() > 0, name


@pytest.mark.parametrize("actions,expected", [(6, 3_919_360), (18, 3_919_360 + 12 * 512)])
def test_parameter_count_paper_config(actions: int, expected: int) -> None:
    model = MambaBackbone(input_dim=1024 + actions, d_model=512, n_layer=2, d_state=16, expand=2, d_conv=4)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert sum(p.numel() for p in model.layers[0].parameters()) == 1_695_232
    mixer = model.layers[0].mixer
    assert mixer.dt_rank == 32 and mixer.x_proj.weight.shape == (64, 1024)


def test_init() -> None:
    torch.manual_seed(0)
    model = MambaBackbone(input_dim=30, d_model=64, n_layer=2, d_state=8)
    assert (model.stem_proj.bias == 0).all()
    for block in model.layers:
        mixer = block.mixer
        assert torch.allclose(torch.exp(mixer.A_log), torch.arange(1.0, 9.0).expand(128, 8))  # S4D-real
        dt = F.softplus(mixer.dt_proj.bias)  # kept (not zeroed) by the stack's init
        assert (dt >= 1e-4 * (1 - 1e-5)).all() and (dt <= 0.1 * (1 + 1e-5)).all() and dt.std() > 0
        assert mixer.dt_proj.weight.abs().max() <= mixer.dt_rank ** -0.5
        assert (mixer.D == 1).all() and (block.norm.weight == 1).all()
        bound = 1.0 / math.sqrt(mixer.d_inner) / math.sqrt(2)
        assert bound * 0.8 < mixer.out_proj.weight.abs().max() <= bound


def test_low_precision_state_dtype() -> None:
    model = _backbone().to(torch.bfloat16)
    h, final = model(torch.randn(2, 6, 10, dtype=torch.bfloat16))
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all() and final["ssm"].dtype == torch.float32
    h_t, new_state = model.step(torch.randn(2, 10, dtype=torch.bfloat16), final)
    assert h_t.dtype == torch.bfloat16 and new_state["ssm"].dtype == torch.float32
