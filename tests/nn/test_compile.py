"""Compiled hot paths (runtime.compile) and bf16 autocast: one graph each, same losses as eager
(docs/decisions.md, "no-op compile")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from conftest import tiny_config
from drama.actor_critic import ActorCritic
from drama.imagination import imagine
from drama.nn.compile import compile_hot_paths, maybe_compile
from drama.world_model import WorldModel
from test_actor_critic import imagined_batch
from test_world_model import random_batch


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def world_model() -> WorldModel:
    wm = WorldModel(tiny_config().world_model, (3, 64, 64), num_actions=3)
    wm.configure_optimizers()
    return wm


def actor_critic() -> ActorCritic:
    cfg = tiny_config()
    ac = ActorCritic(cfg.actor_critic, 24, 4, cfg.world_model.two_hot)
    ac.configure_optimizers()
    return ac


def _break_count(fn, *args, **kwargs) -> int:
    explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    assert explanation.graph_count == 1
    return explanation.graph_break_count


def test_world_model_loss_is_one_graph():
    wm = world_model()
    assert _break_count(lambda batch: wm.compute_losses(batch)["loss/total"], random_batch(wm)) == 0


def test_actor_critic_loss_is_one_graph():
    ac = actor_critic()
    batch = imagined_batch(seed=1)
    assert _break_count(lambda b: ac.compute_losses(b, update_return_scale=True)["loss/total"], batch) == 0


@pytest.mark.parametrize("backbone", ["mamba2", "mamba", "transformer"])
def test_imagination_step_is_one_graph(backbone):
    """Backbone step + prior sample + policy on a TensorDict state: one graph (GRU: dynamo does not trace nn.GRU,
    so its imagination stays eager)."""
    cfg = tiny_config(f"world_model.backbone.name={backbone}")
    wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=3).eval()
    ac = ActorCritic(cfg.actor_critic, wm.feature_dim, 3, cfg.world_model.two_hot)
    with torch.no_grad():
        _, state = wm.dynamics(wm.embed(torch.zeros(4, 3, wm.latent_dim), torch.zeros(4, 3, dtype=torch.long)))
        z_hat = torch.zeros(4, wm.latent_dim)
        feature = torch.zeros(4, wm.feature_dim)
        assert _break_count(wm.imagination_step, ac.act, feature, z_hat, state) == 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        maybe_compile(lambda: None, "fast")


def test_mode_none_stays_eager():
    wm, ac = world_model(), actor_critic()
    compile_hot_paths(wm, ac, "none")
    assert wm.loss_fn == wm.compute_losses and ac.loss_fn == ac.compute_losses
    assert wm.step_fn == wm.imagination_step


def test_gru_and_transformer_imagine_eagerly_under_compile():
    for backbone in ("gru", "transformer"):
        cfg = tiny_config(f"world_model.backbone.name={backbone}")
        wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=3)
        compile_hot_paths(wm, actor_critic(), "default")
        assert wm.step_fn == wm.imagination_step and wm.loss_fn != wm.compute_losses


@pytest.mark.slow
def test_compiled_training_steps_equal_eager_in_float32(monkeypatch):
    """Two training steps of each module and one imagination, compiled (inductor, default mode) vs eager, same
    seeds: losses and features within 1e-4 relative (inductor's random ops fall back to eager's generator, so the
    samples are the same)."""
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch.set_num_threads(1)
    results = {}
    for mode in ("none", "default"):
        torch.manual_seed(0)
        wm, ac = world_model(), actor_critic()
        compile_hot_paths(wm, ac, mode)
        torch.manual_seed(1)
        wm_batches = [random_batch(wm) for _ in range(2)]
        ac_batches = [imagined_batch(seed=s) for s in (2, 3)]
        torch.manual_seed(4)
        wm_metrics = [wm.training_step(b) for b in wm_batches]
        ac_metrics = [ac.training_step(b) for b in ac_batches]
        context = random_batch(wm, batch=4, length=3)
        policy = ActorCritic(tiny_config().actor_critic, wm.feature_dim, 3, tiny_config().world_model.two_hot)
        torch.manual_seed(6)
        imagined = imagine(wm, context, policy.act, horizon=3)
        results[mode] = (wm_metrics, ac_metrics, wm.state_dict(), ac.state_dict(), imagined)
    eager, compiled = results["none"], results["default"]
    for eager_steps, compiled_steps in zip(eager[:2], compiled[:2], strict=True):
        for e, c in zip(eager_steps, compiled_steps, strict=True):
            for key in e:
                if key.startswith("loss/"):
                    torch.testing.assert_close(c[key], e[key], rtol=1e-4, atol=1e-6, msg=key)
    imagined_eager, imagined_compiled = eager[4], compiled[4]
    assert torch.equal(imagined_compiled["action"], imagined_eager["action"])
    torch.testing.assert_close(imagined_compiled["features"], imagined_eager["features"], rtol=1e-4, atol=1e-5)
    for eager_state, compiled_state in zip(eager[2:4], compiled[2:4], strict=True):
        for key, value in eager_state.items():
            if value.is_floating_point():
                torch.testing.assert_close(compiled_state[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_bf16_autocast_losses_within_one_percent_of_float32_with_finite_gradients():
    torch.manual_seed(0)
    wm = world_model()
    batch = random_batch(wm, batch=4, length=8)
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        wm.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = wm.compute_losses(batch)
        out["loss/total"].backward()
        grads = [p.grad for p in wm.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert all(g.dtype == torch.float32 for g in grads)  # master weights and gradients stay float32
        assert out["loss/total"].dtype == torch.float32  # losses are computed in float32
        losses[dtype] = {k: v.item() for k, v in out.items() if k.startswith("loss/")}
    for key, value in losses[torch.float32].items():
        assert losses[torch.bfloat16][key] == pytest.approx(value, rel=1e-2), key
