"""LaProp optimiser, linear warm-up, device / precision policy and the manual optimisation step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from drama.config import OptimConfig
from drama.device import Runtime
from drama.nn.init import orthogonal_
from drama.nn.laprop import LaProp
from drama.nn.optim import (
    build_optimizer,
    build_warmup,
    optimizer_step,
)


def test_build_optimizer_defaults_from_config() -> None:
    cfg = OptimConfig()
    model = nn.Linear(4, 3)
    opt = build_optimizer(model.parameters(), cfg)
    assert isinstance(opt, LaProp)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(4e-5)
    assert group["eps"] == pytest.approx(1e-20)
    assert tuple(group["betas"]) == pytest.approx((0.9, 0.999))
    assert set(group) == {"params", "lr", "betas", "eps"}  # no weight decay, centring or AMSGrad
    assert sum(p.numel() for p in group["params"]) == 4 * 3 + 3


def test_build_optimizer_custom_config() -> None:
    cfg = OptimConfig(lr=1e-3, eps=1e-8, betas=[0.8, 0.95])
    opt = build_optimizer(nn.Linear(2, 2).parameters(), cfg)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3)
    assert group["eps"] == pytest.approx(1e-8)
    assert tuple(group["betas"]) == pytest.approx((0.8, 0.95))


def test_build_optimizer_steps_reduce_loss() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), OptimConfig(lr=1e-2, eps=1e-8))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    first = None
    for _ in range(50):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert ((model(x) - y) ** 2).mean().item() < first


def _lrs_over_steps(warmup: int, base_lr: float, steps: int) -> list[float]:
    p = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], OptimConfig(lr=base_lr))
    sched = build_warmup(opt, warmup)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    return lrs


def test_build_warmup_linear_factor() -> None:
    base = 1e-3
    lrs = _lrs_over_steps(4, base, 7)
    expected = [base * min(1.0, (k + 1) / 4) for k in range(7)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])


@pytest.mark.parametrize("warmup", [0, -1])
def test_build_warmup_disabled(warmup: int) -> None:
    assert _lrs_over_steps(warmup, 2e-4, 4) == pytest.approx([2e-4] * 4)


def test_build_warmup_one_step_is_constant() -> None:
    assert _lrs_over_steps(1, 3e-4, 3) == pytest.approx([3e-4] * 3)


class _Model(nn.Module):
    def __init__(self, lr: float = 1e-2, warmup: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.optimizer = build_optimizer([p for p in self.parameters() if p.requires_grad],
                                         OptimConfig(lr=lr, eps=1e-8))
        self.lr_warmup = build_warmup(self.optimizer, warmup)
        self.runtime = Runtime()  # plain PyTorch, as drama.build hands a model built stand-alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.lin(x))


def _manual_grad_norm(model: _Model, loss_fn) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(), params)
    return math.sqrt(sum(float((g ** 2).sum()) for g in grads))


def test_optimizer_step_clips_and_returns_pre_clip_norm() -> None:
    model = _Model()
    assert getattr(model, "fabric", None) is None
    x = torch.randn(16, 8)

    def loss_fn() -> torch.Tensor:
        return (model(x) * 1000.0).pow(2).mean()

    expected_norm = _manual_grad_norm(model, loss_fn)
    max_norm = 1.0
    assert expected_norm > 10 * max_norm
    before = [p.detach().clone() for p in model.parameters()]
    norm = optimizer_step(model, loss_fn(), max_norm)
    assert isinstance(norm, torch.Tensor) and not norm.requires_grad
    assert norm.item() == pytest.approx(expected_norm, rel=1e-4)
    grads = [p.grad for p in model.lin.parameters()]
    assert all(g is not None for g in grads)
    clipped = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert clipped <= max_norm * (1 + 1e-4)
    assert clipped == pytest.approx(max_norm, rel=1e-3)
    after = list(model.parameters())
    assert not torch.equal(before[0], after[0].detach())  # lin.weight moved
    assert not torch.equal(before[1], after[1].detach())  # lin.bias moved
    assert torch.equal(before[2], after[2].detach())  # frozen untouched
    assert model.frozen.weight.grad is None
    assert model.lr_warmup.last_epoch == 1


def test_optimizer_step_no_clip_below_max_norm() -> None:
    model = _Model()
    x = torch.randn(16, 8)

    def loss_fn() -> torch.Tensor:
        return model(x).pow(2).mean()

    expected_norm = _manual_grad_norm(model, loss_fn)
    reference = torch.autograd.grad(loss_fn(), [model.lin.weight])[0]
    norm = optimizer_step(model, loss_fn(), 1e6)
    assert norm.item() == pytest.approx(expected_norm, rel=1e-5)
    torch.testing.assert_close(model.lin.weight.grad, reference)


def test_optimizer_step_zeroes_stale_grads_and_steps_warmup() -> None:
    model = _Model(lr=1e-3, warmup=4)
    x = torch.randn(4, 8)
    for p in model.lin.parameters():
        p.grad = torch.full_like(p, 1e6)  # stale gradient must be discarded
    loss_fn = lambda: model(x).sum()  # noqa: E731
    expected = _manual_grad_norm(model, loss_fn)
    lrs = []
    for k in range(5):
        lrs.append(model.optimizer.param_groups[0]["lr"])
        norm = optimizer_step(model, loss_fn(), 1e6)
        if k == 0:
            assert norm.item() == pytest.approx(expected, rel=1e-5)
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_orthogonal_init() -> None:
    lin = nn.Linear(16, 8)
    orthogonal_(lin, gain=2.0)
    torch.testing.assert_close(lin.weight @ lin.weight.T, 4.0 * torch.eye(8), rtol=0, atol=1e-4)
    assert torch.equal(lin.bias.detach(), torch.zeros(8))
