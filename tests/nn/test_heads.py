"""Latent categorical heads, straight-through sampling and the reward / termination heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from drama.nn.heads import CategoricalHead, ScalarHead, straight_through_sample
from drama.nn.norm import RMSNorm


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- categorical heads ---
def test_categorical_head_param_counts() -> None:
    prior = CategoricalHead(512, 32, 32, 0.01)
    post = CategoricalHead(1024, 32, 32, 0.01)
    assert _n_params(prior) == 525_312
    assert _n_params(post) == 1_049_600
    assert _n_params(prior) + _n_params(post) == 1_574_912


def test_categorical_head_output_shape() -> None:
    head = CategoricalHead(64, 8, 5, 0.01)
    assert head(torch.randn(3, 4, 64)).shape == (3, 4, 8, 5)
    assert head(torch.randn(2, 64)).dtype == torch.float32


def test_categorical_head_uses_pytorch_default_init() -> None:
    # as in the reference, the latent heads keep PyTorch defaults (uniform +-1/sqrt(in)), not the zero-bias
    # weight_init
    torch.manual_seed(0)
    head = CategoricalHead(512)
    bound = 1.0 / math.sqrt(512)
    assert head.linear.bias.abs().max().item() <= bound
    assert head.linear.bias.abs().sum().item() > 0
    assert head.linear.weight.abs().max().item() <= bound


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_unimix_probabilities(scale: float) -> None:
    torch.manual_seed(0)
    head = CategoricalHead(64, 32, 32, 0.01)
    logits = head(torch.randn(10, 64) * scale)
    probs = logits.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(10, 32))
    assert probs.min().item() >= 0.01 / 32 - 1e-7
    # the mixture is exactly (1 - u) softmax(raw) + u / C
    x = torch.randn(1, 64)
    raw = head.linear(x).unflatten(-1, (32, 32))
    expected = 0.99 * F.softmax(raw, -1) + 0.01 / 32
    torch.testing.assert_close(head(x).exp(), expected)


def test_unimix_with_stoch_ne_classes_is_a_distribution() -> None:
    head = CategoricalHead(16, 4, 10, 0.1)
    probs = head(torch.randn(7, 16) * 50).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(7, 4))
    assert probs.min().item() >= 0.1 / 10 - 1e-7


def test_unimix_zero_leaves_softmax_unchanged() -> None:
    head = CategoricalHead(16, 4, 6, 0.0)
    x = torch.randn(5, 16)
    raw = head.linear(x).unflatten(-1, (4, 6))
    out = head(x)
    torch.testing.assert_close(F.softmax(out, -1), F.softmax(raw, -1))
    torch.testing.assert_close(out, raw)


# --- sampling ---
def test_straight_through_sample_forward_is_one_hot_float() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 32, 32) * 3
    s = straight_through_sample(logits)
    assert s.shape == logits.shape
    assert s.dtype.is_floating_point  # never integer (docs/decisions.md, "integer latents")
    assert s.dtype == logits.dtype
    torch.testing.assert_close(s.amax(-1), torch.ones(4, 6, 32), rtol=0, atol=1e-6)
    torch.testing.assert_close(s.sum(-1), torch.ones(4, 6, 32), rtol=0, atol=1e-5)
    rounded = s.round()
    torch.testing.assert_close(s, rounded, rtol=0, atol=1e-6)
    assert ((rounded == 0) | (rounded == 1)).all()
    assert (rounded.sum(-1) == 1).all()


def test_straight_through_sample_bf16_stays_float() -> None:
    s = straight_through_sample(torch.randn(3, 4, 5).to(torch.bfloat16))
    assert s.dtype == torch.bfloat16
    assert s.dtype.is_floating_point


def test_straight_through_gradient_flows_to_logits() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 5, requires_grad=True)
    weights = torch.randn(3, 4, 5)
    (straight_through_sample(logits) * weights).sum().backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum().item() > 0
    # the gradient is that of (probs * weights).sum()
    ref_logits = logits.detach().clone().requires_grad_(True)
    (F.softmax(ref_logits, -1) * weights).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_straight_through_sample_statistics() -> None:
    torch.manual_seed(2)
    p = 0.8
    logits = torch.log(torch.tensor([p, 1 - p])).expand(20_000, 2).contiguous()
    s = straight_through_sample(logits)
    freq = s[:, 0].mean().item()
    assert abs(freq - p) < 0.02
    # multi-class frequencies follow the probabilities too
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    s = straight_through_sample(torch.log(probs).expand(20_000, 4).contiguous())
    torch.testing.assert_close(s.mean(0), probs, rtol=0, atol=0.02)


# --- scalar heads ---
def test_reward_head_structure_and_count() -> None:
    head = ScalarHead(512, 255, hidden=256, layers=1)
    assert _n_params(head) == 197_119
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, RMSNorm, nn.SiLU, nn.Linear]
    assert head.net[1].eps == 1e-6  # the reference's (torchtune) eps
    assert (head.net[0].in_features, head.net[0].out_features) == (512, 256)
    assert (head.net[3].in_features, head.net[3].out_features) == (256, 255)
    assert head(torch.randn(2, 7, 512)).shape == (2, 7, 255)


def test_termination_head_count() -> None:
    head = ScalarHead(512, 1)
    assert _n_params(head) == 131_841
    assert head(torch.randn(3, 512)).shape == (3, 1)


def test_scalar_head_weight_init() -> None:
    torch.manual_seed(0)
    head = ScalarHead(512, 255)
    for lin in (head.net[0], head.net[3]):
        assert torch.equal(lin.bias.detach(), torch.zeros_like(lin.bias))
        sigma = math.sqrt(2.0 / (lin.in_features + lin.out_features)) / 0.87962566103423978
        assert lin.weight.abs().max().item() <= 2 * sigma * (1 + 1e-6)
    assert head.net[0].weight.std().item() == pytest.approx(math.sqrt(2.0 / (512 + 256)), rel=0.03)
    assert torch.equal(head.net[1].weight.detach(), torch.ones(256))
