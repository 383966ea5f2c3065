"""RMSNorm: the reference's eps and float32 normalisation under any autocast dtype (docs/decisions.md,
the RMSNorm rows of "Modelling choices we keep")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from drama.actor_critic import ActorCritic
from drama.config import ActorCriticConfig, TwoHotConfig, load_config
from drama.nn.norm import REFERENCE_EPS, RMSNorm, rms_norm
from drama.world_model import WorldModel


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """torchtune's RMSNorm, the reference's: normalise ``x.float()``, scale by the weight."""
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def test_default_eps_is_the_reference_one_and_state_dict_is_torchs() -> None:
    norm = RMSNorm(16)
    assert norm.eps == REFERENCE_EPS == 1e-6
    assert set(norm.state_dict()) == set(nn.RMSNorm(16).state_dict()) == {"weight"}
    assert sum(p.numel() for p in norm.parameters()) == 16


def test_float32_and_float64_equal_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(32, generator=gen) + 0.5)
    x = torch.randn(4, 7, 32, generator=gen) * 1e-3  # small activations: eps matters (1e-6 vs 1e-5)
    assert torch.allclose(norm(x), reference_rms_norm(x, norm.weight, 1e-6), rtol=1e-6, atol=0)
    assert not torch.allclose(norm(x), reference_rms_norm(x, norm.weight, 1e-5), rtol=1e-3, atol=0)
    x64 = x.double()
    out64 = norm.double()(x64)
    want = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert out64.dtype == torch.float64 and torch.allclose(out64, want, rtol=1e-14, atol=0)


def test_bf16_autocast_normalises_in_float32_and_returns_bf16() -> None:
    gen = torch.Generator().manual_seed(1)
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64, generator=gen) + 0.5)
    x = (torch.randn(8, 64, generator=gen) * torch.logspace(-3, 3, 64)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
        # a bf16 input through Linear under autocast: the norm still sees the bf16 values, in float32
        linear_out = nn.Linear(64, 64)(x.float())
        assert linear_out.dtype == torch.bfloat16 and norm(linear_out).dtype == torch.bfloat16
    assert out.dtype == torch.bfloat16
    want = reference_rms_norm(x, norm.weight, 1e-6).bfloat16()
    assert torch.equal(out, want)
    # torch's own RMSNorm on the same bf16 input rounds inside the normalisation: not bitwise the same
    plain = nn.RMSNorm(64, eps=1e-6)
    plain.load_state_dict(norm.state_dict())
    assert not torch.equal(plain.bfloat16()(x), want)


def test_rms_norm_function_can_keep_float32_output() -> None:
    norm = RMSNorm(8, eps=1e-5)
    x = torch.randn(3, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rms_norm(x, norm, torch.float32)  # the residual-in-float32 path of the Mamba blocks
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference_rms_norm(x, norm.weight, 1e-5), rtol=1e-6, atol=0)


@pytest.mark.parametrize("config", ["conf/atari.yaml", "conf/cartpole.yaml"])
def test_heads_and_actor_critic_use_the_reference_norm(config: str) -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / config)
    obs_shape = (3, 64, 64) if "atari" in config else (4,)
    wm = WorldModel(cfg.world_model, obs_shape, num_actions=6)
    ac = ActorCritic(ActorCriticConfig(), 32 * 32 + 512, 6, TwoHotConfig())
    heads = [wm.reward_head, wm.termination_head, ac.actor, ac.critic, ac.slow_critic]
    norms = [m for head in heads for m in head.modules() if isinstance(m, nn.RMSNorm)]
    assert len(norms) == 1 + 1 + 3 + 3 + 3
    assert all(type(m) is RMSNorm and m.eps == 1e-6 for m in norms)
    # nowhere in either model is torch's bf16-normalising RMSNorm left
    everywhere = [m for model in (wm, ac) for m in model.modules() if isinstance(m, nn.RMSNorm)]
    assert all(type(m) is RMSNorm for m in everywhere)
