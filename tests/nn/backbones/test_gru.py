"""GRU backbone: the stem + ``nn.GRU`` computation, step/parallel parity, continuation from a state,
gradients and bf16 autocast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import max_err as _max_err
from conftest import random_state as _random_state
from conftest import run_steps as _steps
from drama.nn.backbones import build_backbone
from drama.nn.backbones.gru import GRUBackbone

DT = torch.float64
TOL = 1e-10
IN, D, NL = 10, 16, 2


def _backbone(seed: int = 0, n_layer: int = NL) -> GRUBackbone:
    torch.manual_seed(seed)
    return GRUBackbone(input_dim=IN, d_model=D, n_layer=n_layer).to(DT)


def test_build_backbone_call_site() -> None:
    model = build_backbone(SimpleNamespace(name="gru", n_layer=3), input_dim=IN, hidden_dim=D)
    assert isinstance(model, GRUBackbone)
    assert model.input_dim == IN and model.output_dim == D and model.gru.num_layers == 3


def test_shapes_init_and_initial_state() -> None:
    model = _backbone()
    assert (model.stem_proj.bias == 0).all()
    state = model.initial_state(3)
    assert state.batch_size == torch.Size([3])
    assert state["h"].shape == (3, NL, D) and (state["h"] == 0).all() and state["h"].dtype == DT
    h, final = model(torch.randn(3, 7, IN, dtype=DT))
    assert h.shape == (3, 7, D) and final["h"].shape == (3, NL, D) and final.batch_size == torch.Size([3])
    h_t, state = model.step(torch.randn(3, IN, dtype=DT), final)
    assert h_t.shape == (3, D) and state["h"].shape == (3, NL, D)


def test_matches_direct_gru() -> None:
    model = _backbone()
    x = torch.randn(3, 6, IN, dtype=DT)
    state = _random_state(model, 3)
    h, final = model(x, state)
    u = F.silu(model.stem_norm(model.stem_proj(x)))
    out, h_n = model.gru(u, state["h"].transpose(0, 1).contiguous())
    assert _max_err(h, out) <= TOL
    assert _max_err(final["h"], h_n.transpose(0, 1)) <= TOL
    # The top layer's final hidden state is the last output.
    assert _max_err(final["h"][:, -1], h[:, -1]) <= TOL


@pytest.mark.parametrize("l", [1, 2, 9])
@pytest.mark.parametrize("random_state", [False, True])
def test_step_equals_parallel(l: int, random_state: bool) -> None:
    model = _backbone()
    x = torch.randn(3, l, IN, dtype=DT)
    state0 = _random_state(model, 3) if random_state else model.initial_state(3, dtype=DT)
    h_par, final = model(x, state0 if random_state else None)
    h_seq, state = _steps(model, x, state0)
    assert _max_err(h_seq, h_par) <= TOL
    assert _max_err(state["h"], final["h"]) <= TOL
    assert h_par.abs().max() > 0.05  # not a vacuous comparison


@pytest.mark.parametrize("split", [1, 8])
def test_continues_from_state(split: int) -> None:
    model = _backbone()
    x = torch.randn(2, 24, IN, dtype=DT)
    h_full, final_full = model(x)
    h_a, state_a = model(x[:, :split])
    h_b, state_b = model(x[:, split:], state_a)
    assert _max_err(torch.cat([h_a, h_b], dim=1), h_full) <= TOL
    assert _max_err(state_b["h"], final_full["h"]) <= TOL
    h_c, state_c = _steps(model, x[:, split:], state_a)
    assert _max_err(h_c, h_full[:, split:]) <= TOL
    assert _max_err(state_c["h"], final_full["h"]) <= TOL


@pytest.mark.parametrize("grad", [True, False])
def test_step_does_not_modify_state(grad: bool) -> None:
    model = _backbone()
    state = _random_state(model, 2)
    snapshot = state.clone()
    with torch.set_grad_enabled(grad):
        _, new_state = model.step(torch.randn(2, IN, dtype=DT), state)
        model(torch.randn(2, 3, IN, dtype=DT), state)
    assert (state == snapshot).all()
    assert not (new_state["h"] == snapshot["h"]).all()


def test_every_parameter_gets_gradient() -> None:
    model = _backbone()
    x = torch.randn(2, 5, IN, dtype=DT)
    h, state = model(x, _random_state(model, 2))
    loss = (h * torch.randn_like(h)).sum() + state["h"].square().sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = GRUBackbone(input_dim=IN, d_model=D, n_layer=NL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, state = model(torch.randn(3, 8, IN))
        assert h.shape == (3, 8, D) and torch.isfinite(h.float()).all()
        for _ in range(4):
            h_t, state = model.step(torch.randn(3, IN), state)
            assert h_t.shape == (3, D) and torch.isfinite(h_t.float()).all()
    assert state["h"].shape == (3, NL, D)


def test_bf16_weights() -> None:
    model = _backbone().to(torch.bfloat16)
    state = model.initial_state(2)
    assert state["h"].dtype == torch.bfloat16
    h, state = model(torch.randn(2, 4, IN, dtype=torch.bfloat16), state)
    h_t, state = model.step(torch.randn(2, IN, dtype=torch.bfloat16), state)
    assert h.dtype == h_t.dtype == torch.bfloat16 and torch.isfinite(h_t.float()).all()


def test_every_configurable_backbone_has_one_builder():
    from drama.config import BACKBONES
    from drama.nn.backbones import BUILDERS

    assert tuple(BUILDERS) == BACKBONES
