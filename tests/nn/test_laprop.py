"""The authors' LaProp against its formula, written here as explicit sums over the past steps (docs/decisions.md,
"LaProp" in "Modelling choices we keep")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from drama.config import OptimConfig
from drama.nn.laprop import LaProp
from drama.nn.optim import build_optimizer, build_warmup

F64 = torch.float64


def formula_updates(p0: torch.Tensor, grads: list[torch.Tensor], lrs: list[float], betas: tuple[float, float],
                    eps: float) -> list[torch.Tensor]:
    """The reference's LaProp in closed form: parameters after each step t = 1..T.

    v_t = (1-b2) sum_k b2^(t-k) g_k^2,  b2_t = 1 - b2^t,  c_t = (1-b1) sum_k b1^(t-k) lr_k,
    m_t = (1-b1) sum_k b1^(t-k) lr_k g_k / (sqrt(v_k / b2_k) + eps),  p_t = p_{t-1} - (lr_t / c_t) m_t.
    """
    b1, b2 = betas
    out, p = [], p0.clone()
    for t in range(1, len(grads) + 1):
        normalised = []
        for k in range(1, t + 1):
            v_k = sum((1 - b2) * b2 ** (k - j) * grads[j - 1] ** 2 for j in range(1, k + 1))
            normalised.append(grads[k - 1] / (torch.sqrt(v_k / (1 - b2 ** k)) + eps))
        m_t = sum((1 - b1) * b1 ** (t - k) * lrs[k - 1] * normalised[k - 1] for k in range(1, t + 1))
        c_t = sum((1 - b1) * b1 ** (t - k) * lrs[k - 1] for k in range(1, t + 1))
        p = p - (lrs[t - 1] / c_t) * m_t
        out.append(p.clone())
    return out


def _grads(steps: int, seed: int) -> dict[str, list[torch.Tensor]]:
    """Per-tensor gradient sequences: ordinary, near-zero (second moment ~1e-26) with a fixed sign, mixed
    scales with exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    ordinary = [torch.randn(5, 3, generator=gen, dtype=F64) for _ in range(steps)]
    tiny = [1e-13 * (1.0 + 0.5 * torch.rand(7, generator=gen, dtype=F64)) for _ in range(steps)]
    mixed = []
    for _ in range(steps):
        g = torch.randn(6, generator=gen, dtype=F64) * torch.tensor([1e3, 1.0, 1e-6, 1e-12, 0.0, 1e-18], dtype=F64)
        mixed.append(g)
    return {"ordinary": ordinary, "tiny": tiny, "mixed": mixed}


def _run(opt_params: dict[str, nn.Parameter], grads: dict[str, list[torch.Tensor]], optimizer, scheduler=None
         ) -> tuple[list[float], dict[str, list[torch.Tensor]]]:
    lrs, history = [], {name: [] for name in opt_params}
    for t in range(len(next(iter(grads.values())))):
        lrs.append(optimizer.param_groups[0]["lr"])
        for name, p in opt_params.items():
            p.grad = grads[name][t].clone()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name, p in opt_params.items():
            history[name].append(p.detach().clone())
    return lrs, history


@pytest.mark.parametrize("steps", [1, 8])
@pytest.mark.parametrize("lr, betas, eps, warmup", [
    (4e-5, (0.9, 0.999), 1e-20, 1000),  # the paper's config: LaProp 4e-5, eps 1e-20, 1000-step warm-up
    (1e-2, (0.8, 0.95), 1e-8, 3),  # a warm-up that ends inside the run
    (3e-3, (0.9, 0.999), 1e-300, 0),  # eps next to nothing, constant lr
])
def test_steps_equal_the_formula_in_float64(steps: int, lr: float, betas: tuple[float, float], eps: float,
                                            warmup: int) -> None:
    grads = _grads(steps, seed=steps)
    # parameters start at 0, so the float64 round-off of what is compared is that of the updates themselves
    p0 = {name: torch.zeros_like(g[0]) for name, g in grads.items()}
    params = {name: nn.Parameter(value.clone()) for name, value in p0.items()}
    opt = build_optimizer(list(params.values()), OptimConfig(lr=lr, eps=eps, betas=list(betas), warmup_steps=warmup))
    assert isinstance(opt, LaProp)
    lrs, history = _run(params, grads, opt, build_warmup(opt, warmup))
    assert lrs == pytest.approx([lr * (min(1.0, (k + 1) / warmup) if warmup else 1.0) for k in range(steps)],
                                rel=1e-15)
    for name in params:
        expected = formula_updates(p0[name], grads[name], lrs, betas, eps)
        for got, want in zip(history[name], expected, strict=True):
            assert torch.all((got - want).abs() <= 1e-12 * want.abs()), (name, (got - want).abs().max())


def test_near_zero_second_moments_take_a_full_step() -> None:
    """With eps = 1e-20 a gradient of 1e-13 is normalised to ~1, so each step moves ~lr (a hidden 1e-15 inside
    the root, as in pytorch_optimizer 4.1.0, would shrink it ~300,000x)."""
    p = nn.Parameter(torch.zeros(4, dtype=F64))
    opt = LaProp([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-20)
    for _ in range(3):
        p.grad = torch.full((4,), 1e-13, dtype=F64)
        opt.step()
    # each normalised gradient is 1e-13 / (1e-13 + 1e-20) = 1 - 1e-7
    assert torch.allclose(p.detach(), torch.full((4,), -3e-3 * (1 - 1e-7), dtype=F64), rtol=1e-12, atol=0.0)


def test_zero_gradient_does_not_move_and_zero_lr_is_allowed() -> None:
    p = nn.Parameter(torch.ones(3, dtype=F64))
    opt = LaProp([p], lr=0.0, eps=1e-20)
    p.grad = torch.zeros(3, dtype=F64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=F64))
    opt.param_groups[0]["lr"] = 1e-2
    p.grad = torch.ones(3, dtype=F64)
    opt.step()
    assert torch.isfinite(p.detach()).all() and (p.detach() < 1.0).all()


def test_parameters_without_gradients_are_skipped() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = LaProp([a, b], lr=1e-2)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state
    assert opt.state[a]["step"] == 1


def test_state_dict_round_trip_continues_bitwise() -> None:
    grads = _grads(6, seed=3)["ordinary"]
    straight = nn.Parameter(torch.zeros(5, 3, dtype=F64))
    opt = LaProp([straight], lr=1e-2, eps=1e-20)
    for g in grads:
        straight.grad = g.clone()
        opt.step()
    first = nn.Parameter(torch.zeros(5, 3, dtype=F64))
    opt = LaProp([first], lr=1e-2, eps=1e-20)
    for g in grads[:3]:
        first.grad = g.clone()
        opt.step()
    saved = opt.state_dict()
    resumed = nn.Parameter(first.detach().clone())
    opt = LaProp([resumed], lr=1.0, eps=1e-20)  # lr comes back from the state dict
    opt.load_state_dict(saved)
    for g in grads[3:]:
        resumed.grad = g.clone()
        opt.step()
    assert torch.equal(resumed.detach(), straight.detach())


@pytest.mark.parametrize("kwargs, match", [({"lr": -1.0}, "lr"), ({"eps": -1e-8}, "eps"),
                                           ({"betas": (1.0, 0.999)}, "betas")])
def test_invalid_hyper_parameters_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LaProp([nn.Parameter(torch.zeros(1))], **kwargs)


def test_float32_step_matches_float64_formula() -> None:
    grads = _grads(4, seed=5)["ordinary"]
    p = nn.Parameter(torch.zeros(5, 3))
    opt = LaProp([p], lr=1e-3, eps=1e-20)
    for g in grads:
        p.grad = g.float()
        opt.step()
    want = formula_updates(torch.zeros(5, 3, dtype=F64), grads, [1e-3] * 4, (0.9, 0.999), 1e-20)[-1]
    assert torch.allclose(p.detach().double(), want, rtol=1e-5, atol=1e-9)
    assert math.isfinite(p.detach().abs().max().item())
