"""Transformer backbone (STORM's): parameter count, causality, the key/value cache of projected keys and values
(docs/decisions.md, "re-projected Transformer cache"), step/parallel parity, continuation from a cache, dropout,
gradients and bf16 autocast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import max_err as _max_err
from conftest import run_steps as _steps
from drama.nn.backbones import build_backbone
from drama.nn.backbones.transformer import TransformerBackbone

DT = torch.float64
TOL = 1e-10
SMALL = dict(d_model=16, n_layer=2, heads=4, ffn_dim=24, dropout=0.1, max_length=32)
IN = 10


def _backbone(seed: int = 0, **overrides) -> TransformerBackbone:
    torch.manual_seed(seed)
    return TransformerBackbone(input_dim=IN, **{**SMALL, **overrides}).to(DT)


def test_parameter_count_paper_config() -> None:
    model = TransformerBackbone(input_dim=1024 + 6, d_model=512, n_layer=2, heads=8, ffn_dim=1024, dropout=0.1,
                                max_length=128)
    assert sum(p.numel() for p in model.parameters()) == 5_059_584
    assert sum(p.numel() for p in model.layers[0].parameters()) == 2_100_736
    assert sum(p.numel() for p in model.stem.parameters()) == 527_360 + 1_024 + 262_144 + 1_024
    assert model.position_embedding.weight.shape == (128, 512)
    assert model.d_k == 64
    assert model.input_dim == 1030 and model.output_dim == 512


def test_build_backbone_call_site() -> None:
    cfg = SimpleNamespace(name="transformer", n_layer=2, heads=4, ffn_dim=24, dropout=0.1, max_length=32)
    model = build_backbone(cfg, input_dim=IN, hidden_dim=16)
    assert isinstance(model, TransformerBackbone)
    assert model.input_dim == IN and model.output_dim == 16 and model.max_length == 32


def test_shapes_and_initial_state() -> None:
    model = _backbone().eval()
    state = model.initial_state(3)
    assert state.batch_size == torch.Size([3])
    assert state["k"].shape == (3, 2, 0, 4, 4) and state["v"].shape == (3, 2, 0, 4, 4)
    assert state["k"].dtype == DT
    h, final = model(torch.randn(3, 7, IN, dtype=DT))
    assert h.shape == (3, 7, 16) and h.dtype == DT
    assert final.batch_size == torch.Size([3])
    assert final["k"].shape == (3, 2, 7, 4, 4) and final["v"].shape == (3, 2, 7, 4, 4)
    h_t, state = model.step(torch.randn(3, IN, dtype=DT), final)
    assert h_t.shape == (3, 16)
    assert state["k"].shape == (3, 2, 8, 4, 4)


@pytest.mark.parametrize("l", [1, 2, 5, 24])
def test_step_equals_parallel(l: int) -> None:
    model = _backbone().eval()
    x = torch.randn(3, l, IN, dtype=DT)
    h_par, final = model(x)
    h_seq, state = _steps(model, x, model.initial_state(3, dtype=DT))
    assert _max_err(h_seq, h_par) <= TOL
    assert _max_err(state["k"], final["k"]) <= TOL
    assert _max_err(state["v"], final["v"]) <= TOL
    assert h_par.abs().max() > 0.1  # not a vacuous comparison


@pytest.mark.parametrize("split", [1, 3, 8])
def test_continues_from_cache(split: int) -> None:
    """The caller's pattern: a parallel pass over a context, then steps (or another parallel pass)."""
    model = _backbone().eval()
    x = torch.randn(2, 24, IN, dtype=DT)
    h_full, final_full = model(x)
    h_a, state_a = model(x[:, :split])
    h_b, state_b = model(x[:, split:], state_a)
    assert _max_err(torch.cat([h_a, h_b], dim=1), h_full) <= TOL
    assert _max_err(state_b["k"], final_full["k"]) <= TOL
    assert _max_err(state_b["v"], final_full["v"]) <= TOL
    h_c, state_c = _steps(model, x[:, split:], state_a)
    assert _max_err(h_c, h_full[:, split:]) <= TOL
    assert _max_err(state_c["v"], final_full["v"]) <= TOL
    # Steps then a parallel pass from the cache the steps built.
    h_d, state_d = _steps(model, x[:, :split], model.initial_state(2, dtype=DT))
    h_e, _ = model(x[:, split:], state_d)
    assert _max_err(torch.cat([h_d, h_e], dim=1), h_full) <= TOL


def test_cache_holds_projected_keys_and_grows_by_one() -> None:
    model = _backbone().eval()
    x = torch.randn(2, 5, IN, dtype=DT)
    state = model.initial_state(2, dtype=DT)
    for t in range(5):
        _, state = model.step(x[:, t], state)
        assert state["k"].shape == (2, 2, t + 1, 4, 4) and state["v"].shape == (2, 2, t + 1, 4, 4)
    # Layer 0 reads LayerNorm(stem(x) + position embedding); its cache holds w_ks / w_vs of that.
    with torch.no_grad():
        feats = model.layer_norm(model.stem(x) + model.position_embedding.weight[:5])
        attn = model.layers[0].slf_attn
        k0 = attn.w_ks(feats).view(2, 5, 4, 4)
        v0 = attn.w_vs(feats).view(2, 5, 4, 4)
    assert _max_err(state["k"][:, 0], k0) <= TOL
    assert _max_err(state["v"][:, 0], v0) <= TOL


def test_causal() -> None:
    model = _backbone().eval()
    x = torch.randn(2, 9, IN, dtype=DT)
    h, _ = model(x)
    for t in (0, 4, 7):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
        h2, _ = model(x2)
        assert _max_err(h2[:, :t + 1], h[:, :t + 1]) <= 1e-12
        assert (h2[:, t + 1] - h[:, t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("grad", [True, False])
def test_step_does_not_modify_state(grad: bool) -> None:
    model = _backbone().eval()
    _, state = model(torch.randn(2, 4, IN, dtype=DT))
    snapshot = state.clone()
    with torch.set_grad_enabled(grad):
        _, new_state = model.step(torch.randn(2, IN, dtype=DT), state)
        _, _ = model(torch.randn(2, 3, IN, dtype=DT), state)
    assert state["k"].shape == snapshot["k"].shape
    assert (state == snapshot).all()
    assert new_state["k"].shape[2] == 5


def test_max_length() -> None:
    model = _backbone(max_length=6).eval()
    with pytest.raises(ValueError, match="max_length"):
        model(torch.randn(1, 7, IN, dtype=DT))
    _, state = model(torch.randn(1, 6, IN, dtype=DT))  # exactly max_length is fine
    with pytest.raises(ValueError, match="max_length"):
        model.step(torch.randn(1, IN, dtype=DT), state)
    _, state = model(torch.randn(1, 4, IN, dtype=DT))
    with pytest.raises(ValueError, match="max_length"):
        model(torch.randn(1, 3, IN, dtype=DT), state)


def test_dropout_only_in_training() -> None:
    model = _backbone(dropout=0.5)
    x = torch.randn(2, 6, IN, dtype=DT)
    model.train()
    h1, _ = model(x)
    h2, _ = model(x)
    assert (h1 - h2).abs().max() > 1e-3
    model.eval()
    h3, _ = model(x)
    h4, _ = model(x)
    assert torch.equal(h3, h4)
    no_drop = _backbone(dropout=0.0).train()
    assert _max_err(no_drop(x)[0], no_drop.eval()(x)[0]) <= TOL


def test_every_parameter_gets_gradient() -> None:
    model = _backbone(max_length=8)
    x = torch.randn(2, 8, IN, dtype=DT)  # touches every position row
    h, state = model(x)
    loss = (h * torch.randn_like(h)).sum() + state["v"].square().sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name
    assert (model.position_embedding.weight.grad.abs().sum(-1) > 0).all()


def test_step_gradients_flow_through_cache() -> None:
    model = _backbone().eval()
    x = torch.randn(2, 3, IN, dtype=DT, requires_grad=True)
    _, state = model(x)
    h_t, _ = model.step(torch.randn(2, IN, dtype=DT), state)
    h_t.sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0


def test_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = TransformerBackbone(input_dim=IN, **SMALL).eval()
    x = torch.randn(3, 8, IN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, state = model(x)
        assert torch.isfinite(h.float()).all()
        for _ in range(4):
            h_t, state = model.step(torch.randn(3, IN), state)
            assert h_t.shape == (3, 16) and torch.isfinite(h_t.float()).all()
        h2, _ = model(torch.randn(3, 2, IN), state)
        assert torch.isfinite(h2.float()).all()
    assert state["k"].shape == (3, 2, 12, 4, 4)


def test_bf16_weights() -> None:
    model = _backbone().to(torch.bfloat16).eval()
    state = model.initial_state(2)
    assert state["k"].dtype == torch.bfloat16
    h, state = model(torch.randn(2, 4, IN, dtype=torch.bfloat16), state)
    h_t, state = model.step(torch.randn(2, IN, dtype=torch.bfloat16), state)
    assert h.dtype == h_t.dtype == torch.bfloat16 and torch.isfinite(h_t.float()).all()
