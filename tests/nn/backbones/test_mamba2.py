"""Mamba-2 backbone and its chunked SSD scan (Dao & Gu 2024, an exact regrouping of the recurrence): exactness
against the sequential recurrence, step/parallel parity, state continuation, gradients, parameter count and init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from conftest import max_err as _max_err
from conftest import random_state as _random_state
from drama.nn.backbones.mamba2 import Mamba2Backbone, _check_shapes, ssd_chunked
from drama.nn.norm import acc_dtype

DT = torch.float64
TOL = 1e-10
SMALL = dict(d_model=16, n_layer=2, d_state=4, expand=2, headdim=8, ngroups=1, d_conv=4)


def ssd_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None = None,
                   initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Naive step-by-step recurrence with the signature of :func:`ssd_chunked`; the oracle of these tests.

    ``H_t = exp(dt_t A) H_{t-1} + (dt_t x_t) ⊗ B_t``, ``y_t = H_t C_t``. ``chunk_size`` is ignored.
    """
    b, l, h, p, g, n = _check_shapes(x, dt, A, B, C)
    acc = acc_dtype(x.dtype)
    r = h // g
    H = (torch.zeros(b, h, p, n, dtype=acc, device=x.device) if initial_state is None
         else initial_state.to(acc))
    Bh = B.to(acc).repeat_interleave(r, dim=2)  # (b, l, h, n)
    Ch = C.to(acc).repeat_interleave(r, dim=2)
    ys = []
    for t in range(l):
        dt_t = dt[:, t].to(acc)  # (b, h)
        decay = torch.exp(dt_t * A.to(acc))
        H = decay[..., None, None] * H + torch.einsum("bhp,bhn->bhpn", dt_t.unsqueeze(-1) * x[:, t].to(acc),
                                                      Bh[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", H, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p, dtype=acc)
    return y.to(x.dtype), H


def _ssd_inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=DT)
    dt = F.softplus(torch.randn(b, l, h, generator=gen, dtype=DT) - 1.0)
    A = -torch.exp(torch.rand(h, generator=gen, dtype=DT) * math.log(16.0))
    B = torch.randn(b, l, g, n, generator=gen, dtype=DT)
    C = torch.randn(b, l, g, n, generator=gen, dtype=DT)
    H0 = torch.randn(b, h, p, n, generator=gen, dtype=DT)
    return x, dt, A, B, C, H0


def _backbone(input_dim: int = 10, chunk_size: int = 5, seed: int = 0, **overrides) -> Mamba2Backbone:
    torch.manual_seed(seed)
    kwargs = {**SMALL, **overrides}
    return Mamba2Backbone(input_dim=input_dim, chunk_size=chunk_size, **kwargs).to(DT)


@pytest.mark.parametrize("l", [1, 7, 64, 128, 300])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_equals_sequential(l: int, with_state: bool) -> None:
    x, dt, A, B, C, H0 = _ssd_inputs(2, l, 4, 3, 2, 5, seed=l)
    H0 = H0 if with_state else None
    y_ref, H_ref = ssd_sequential(x, dt, A, B, C, initial_state=H0)
    for q in (1, 5, 16, 64, 256):
        y, H = ssd_chunked(x, dt, A, B, C, q, initial_state=H0)
        assert y.dtype == DT and H.dtype == DT
        assert _max_err(y, y_ref) <= TOL, (l, q)
        assert _max_err(H, H_ref) <= TOL, (l, q)
    assert y_ref.abs().max() > 0.1  # not a vacuous comparison


def test_ssd_single_group_and_strong_decay() -> None:
    x, dt, A, B, C, H0 = _ssd_inputs(2, 50, 4, 3, 1, 5, seed=3)
    dt = dt * 30.0  # exp(dt*A) underflows towards 0 in places: masked segsum must stay finite
    y_ref, H_ref = ssd_sequential(x, dt, A, B, C, initial_state=H0)
    y, H = ssd_chunked(x, dt, A, B, C, 16, initial_state=H0)
    assert torch.isfinite(y).all()
    assert _max_err(y, y_ref) <= 1e-9 * max(1.0, y_ref.abs().max().item())
    assert _max_err(H, H_ref) <= 1e-9 * max(1.0, H_ref.abs().max().item())


def test_ssd_gradcheck() -> None:
    x, dt, A, B, C, H0 = _ssd_inputs(1, 5, 2, 2, 1, 3, seed=7)
    inputs = tuple(t.clone().requires_grad_(True) for t in (x, dt, A, B, C, H0))

    def fn(x, dt, A, B, C, H0):
        return ssd_chunked(x, dt, A, B, C, 2, initial_state=H0)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("l,chunk,grad", [(1, 5, True), (2, 5, False), (3, 2, True), (37, 5, False)])
def test_step_equals_parallel(l: int, chunk: int, grad: bool) -> None:
    model = _backbone(chunk_size=chunk)
    x = torch.randn(3, l, 10, dtype=DT)
    h_par, final = model(x)
    state = model.initial_state(3, dtype=DT)
    hs = []
    with torch.set_grad_enabled(grad):  # no_grad takes the preallocated-buffer path of step
        for t in range(l):
            h_t, state = model.step(x[:, t], state)
            hs.append(h_t)
    h_seq = torch.stack(hs, dim=1)
    assert h_par.shape == (3, l, SMALL["d_model"])
    assert _max_err(h_seq, h_par) <= TOL
    assert _max_err(state["conv"], final["conv"]) <= TOL
    assert _max_err(state["ssm"], final["ssm"]) <= TOL
    assert final["conv"].shape == (3, 2, 3, model.conv_dim)
    assert final["ssm"].shape == (3, 2, model.nheads, 8, 4)


@pytest.mark.parametrize("grad", [True, False])
def test_step_does_not_modify_state(grad: bool) -> None:
    model = _backbone()
    state = _random_state(model, 2)
    snapshot = state.clone()
    with torch.set_grad_enabled(grad):
        _, new_state = model.step(torch.randn(2, 10, dtype=DT), state)
    assert (state == snapshot).all()
    assert not (new_state["ssm"] == snapshot["ssm"]).all()


@pytest.mark.parametrize("split", [1, 2, 20])
def test_parallel_continues_from_state(split: int) -> None:
    model = _backbone(chunk_size=4)
    x = torch.randn(2, 23, 10, dtype=DT)
    h_full, final_full = model(x)
    h_a, state_a = model(x[:, :split])
    h_b, state_b = model(x[:, split:], state_a)
    assert _max_err(torch.cat([h_a, h_b], dim=1), h_full) <= TOL
    assert _max_err(state_b["conv"], final_full["conv"]) <= TOL
    assert _max_err(state_b["ssm"], final_full["ssm"]) <= TOL
    # Stepping from the carried state continues the sequence too.
    state = state_a
    for t in range(split, 23):
        h_t, state = model.step(x[:, t], state)
        assert _max_err(h_t, h_full[:, t]) <= TOL
    assert _max_err(state["ssm"], final_full["ssm"]) <= TOL


@pytest.mark.parametrize("grad", [True, False])
def test_step_equals_parallel_from_random_state(grad: bool) -> None:
    model = _backbone(chunk_size=3, ngroups=2)
    x = torch.randn(2, 9, 10, dtype=DT)
    state0 = _random_state(model, 2)
    h_par, final = model(x, state0)
    state = state0
    with torch.set_grad_enabled(grad):
        for t in range(9):
            h_t, state = model.step(x[:, t], state)
            assert _max_err(h_t, h_par[:, t]) <= TOL
    assert _max_err(state["conv"], final["conv"]) <= TOL
    assert _max_err(state["ssm"], final["ssm"]) <= TOL


def test_chunk_size_does_not_change_output() -> None:
    x = torch.randn(2, 37, 10, dtype=DT)
    model_a = _backbone(chunk_size=256)
    model_b = _backbone(chunk_size=5)
    model_b.load_state_dict(model_a.state_dict())
    (h_a, s_a), (h_b, s_b) = model_a(x), model_b(x)
    assert _max_err(h_a, h_b) <= TOL
    assert _max_err(s_a["ssm"], s_b["ssm"]) <= TOL


@pytest.mark.parametrize("path", ["parallel", "step"])
def test_every_parameter_gets_gradient(path: str) -> None:
    model = _backbone(chunk_size=4)
    x = torch.randn(2, 9, 10, dtype=DT)
    if path == "parallel":
        h, state = model(x, _random_state(model, 2))
    else:
        state = _random_state(model, 2)
        hs = []
        for t in range(3):
            h_t, state = model.step(x[:, t], state)
            hs.append(h_t)
        h = torch.stack(hs, dim=1)
    loss = (h * torch.randn_like(h)).sum() + state["ssm"].square().sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


@pytest.mark.parametrize("actions,expected", [(6, 3_737_504), (18, 3_737_504 + 12 * 512)])
def test_parameter_count_paper_config(actions: int, expected: int) -> None:
    model = Mamba2Backbone(input_dim=1024 + actions, d_model=512, n_layer=2, d_state=16, expand=2, headdim=64,
                           ngroups=1, d_conv=4, chunk_size=256)
    assert sum(p.numel() for p in model.parameters()) == expected
    per_layer = sum(p.numel() for p in model.layers[0].parameters())
    assert per_layer == 1_604_304
    mixer = model.layers[0].mixer
    assert mixer.in_proj.weight.shape == (2096, 512)
    assert mixer.conv1d.weight.shape == (1056, 1, 4)
    assert mixer.nheads == 16


def test_init() -> None:
    torch.manual_seed(0)
    model = Mamba2Backbone(input_dim=30, d_model=64, n_layer=2, d_state=8, expand=2, headdim=8, ngroups=1,
                           d_conv=4, chunk_size=256)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            assert (module.bias == 0).all(), name
    assert (model.stem_proj.bias == 0).all()
    for block in model.layers:
        mixer = block.mixer
        A = -torch.exp(mixer.A_log)
        assert (A <= -1.0 + 1e-6).all() and (A >= -16.0 - 1e-5).all()
        dt = F.softplus(mixer.dt_bias)
        assert (dt >= 1e-4 * (1 - 1e-5)).all() and (dt <= 0.1 * (1 + 1e-5)).all()
        assert (mixer.D == 1).all()
        assert (mixer.norm.weight == 1).all() and (block.norm.weight == 1).all()
        # kaiming_uniform(a=sqrt(5)) bound is 1/sqrt(fan_in); divided by sqrt(n_layer).
        bound = 1.0 / math.sqrt(mixer.d_inner) / math.sqrt(2)
        w = mixer.out_proj.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert (model.stem_norm.weight == 1).all() and (model.norm_f.weight == 1).all()
    state = model.initial_state(3)
    assert state.batch_size == torch.Size([3])
    assert (state["conv"] == 0).all() and (state["ssm"] == 0).all()
    assert state["ssm"].shape == (3, 2, 16, 8, 8)


def test_low_precision_state_dtype() -> None:
    model = _backbone().to(torch.bfloat16)
    state = model.initial_state(2)
    assert state["conv"].dtype == torch.bfloat16 and state["ssm"].dtype == torch.float32
    h, final = model(torch.randn(2, 6, 10, dtype=torch.bfloat16))
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all()
    assert final["ssm"].dtype == torch.float32
    h_t, new_state = model.step(torch.randn(2, 10, dtype=torch.bfloat16), final)
    assert h_t.dtype == torch.bfloat16 and new_state["ssm"].dtype == torch.float32
