"""symlog / symexp, the symlog two-hot distribution (bins from the constructor: docs/decisions.md, "hard-coded
two-hot bins") and categorical KL with free bits on the batch-mean KL, as in the reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from drama.nn.distributions import SymlogTwoHot, categorical_kl, free_bits_kl, symexp, symlog


# --- symlog / symexp ---
def test_symlog_values() -> None:
    x = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])
    expected = torch.tensor([-math.log(11.0), -math.log(2.0), 0.0, math.log(2.0), math.log(11.0)])
    torch.testing.assert_close(symlog(x), expected)


def test_symexp_inverts_symlog() -> None:
    x = torch.cat([torch.linspace(-1e4, 1e4, 1001, dtype=torch.float64),
                   torch.tensor([0.0, 1e-6, -1e-6, 123.456, -7.5], dtype=torch.float64)])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-12, atol=1e-12)
    y = torch.linspace(-20, 20, 401, dtype=torch.float64)
    torch.testing.assert_close(symlog(symexp(y)), y, rtol=1e-12, atol=1e-12)


# --- two-hot ---
def test_paper_bins() -> None:
    th = SymlogTwoHot()
    assert th.bins.numel() == 255
    assert th.bins[0].item() == pytest.approx(-20.0)
    assert th.bins[-1].item() == pytest.approx(20.0)
    widths = th.bins[1:] - th.bins[:-1]
    assert widths.mean().item() == pytest.approx(40.0 / 254.0, rel=1e-5)
    assert widths.mean().item() == pytest.approx(0.1575, abs=1e-4)
    torch.testing.assert_close(widths, torch.full_like(widths, 40.0 / 254.0), rtol=1e-4, atol=1e-5)


def test_invalid_constructor_args() -> None:
    with pytest.raises(ValueError):
        SymlogTwoHot(bins=1)
    with pytest.raises(ValueError):
        SymlogTwoHot(bins=11, low=5.0, high=-5.0)


def _in_range_targets() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(4, 250, generator=gen, dtype=torch.float64) * 2 - 1) * 19.9
    return symexp(y)


def test_encode_rows_are_two_hot_distributions() -> None:
    th = SymlogTwoHot()
    t = _in_range_targets()
    enc = th.encode(t)
    assert enc.shape == (*t.shape, 255)
    assert enc.dtype == t.dtype
    assert (enc >= 0).all()
    torch.testing.assert_close(enc.sum(-1), torch.ones_like(t))
    flat = enc.reshape(-1, 255)
    nonzero = flat > 0
    counts = nonzero.sum(-1)
    assert (counts >= 1).all() and (counts <= 2).all()
    for row in nonzero[counts == 2]:
        idx = row.nonzero().flatten()
        assert idx[1] - idx[0] == 1, "two-hot weights must sit on adjacent bins"


def test_encode_expectation_equals_symlog_target() -> None:
    th = SymlogTwoHot().double()
    t = _in_range_targets()
    enc = th.encode(t)
    torch.testing.assert_close((enc * th.bins.double()).sum(-1), symlog(t), rtol=1e-9, atol=1e-9)


def test_encode_known_split_custom_bins() -> None:
    # bins follow the constructor, not a hard-coded +-20: 11 bins over [-5, 5] -> integer bin centres;
    # symlog target 2.3 is 70 % on bin 2, 30 % on bin 3
    th = SymlogTwoHot(bins=11, low=-5.0, high=5.0)
    assert th.bins.numel() == 11
    torch.testing.assert_close(th.bins, torch.arange(-5.0, 6.0))
    enc = th.encode(symexp(torch.tensor([2.3], dtype=torch.float64)))
    expected = torch.zeros(1, 11, dtype=torch.float64)
    expected[0, 7], expected[0, 8] = 0.7, 0.3
    torch.testing.assert_close(enc, expected, rtol=0, atol=1e-9)
    # out of this smaller range: clipped to the custom ends, not to +-20
    enc = th.encode(torch.tensor([symexp(torch.tensor(7.0)).item(), -1e6]))
    assert enc[0, -1].item() == pytest.approx(1.0) and enc[0, :-1].abs().sum().item() == 0.0
    assert enc[1, 0].item() == pytest.approx(1.0) and enc[1, 1:].abs().sum().item() == 0.0


def test_encode_clips_out_of_range_targets() -> None:
    th = SymlogTwoHot()
    t = torch.tensor([1e12, -1e12, float(symexp(torch.tensor(25.0)))])
    enc = th.encode(t)  # must not assert / raise
    assert torch.isfinite(enc).all()
    assert enc[0, -1].item() == pytest.approx(1.0)
    assert enc[0, :-1].sum().item() == 0.0
    assert enc[1, 0].item() == pytest.approx(1.0)
    assert enc[1, 1:].sum().item() == 0.0
    assert enc[2, -1].item() == pytest.approx(1.0)
    loss = th.loss(torch.zeros(3, 255), t)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_lower_end_maps_to_first_bin(dtype: torch.dtype) -> None:
    th = SymlogTwoHot()
    enc = th.encode(symexp(torch.tensor([-20.0], dtype=dtype)))
    assert enc[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert enc[0, 1:].sum().item() == pytest.approx(0.0, abs=1e-5)
    enc = th.encode(symexp(torch.tensor([20.0], dtype=dtype)))
    assert enc[0, -1].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("k", [0, 1, 3, 5, 8, 10])
def test_encode_on_bin_centre_is_one_hot(k: int) -> None:
    th = SymlogTwoHot(bins=11, low=-5.0, high=5.0)
    t = symexp(th.bins[k].double()).reshape(1)
    enc = th.encode(t)
    expected = F.one_hot(torch.tensor([k]), 11).double()
    torch.testing.assert_close(enc, expected, rtol=0, atol=1e-9)


def test_encode_zero_on_paper_bins() -> None:
    th = SymlogTwoHot()
    enc = th.encode(torch.zeros(1))
    assert enc[0, 127].item() == pytest.approx(1.0, abs=1e-5)
    assert enc.sum().item() == pytest.approx(1.0)


def test_decode_of_encoded_logits_recovers_target() -> None:
    th = SymlogTwoHot()
    t = torch.tensor([0.0, 1.0, -1.0, 3.7, -250.0, 12345.0, -0.01])
    logits = torch.log(th.encode(t) + 1e-12)
    torch.testing.assert_close(th.decode(logits), t, rtol=1e-4, atol=1e-4)
    # a one-hot-ish distribution on bin k decodes to symexp(bin k)
    logits = torch.full((1, 255), -1e4)
    logits[0, 200] = 0.0
    torch.testing.assert_close(th.decode(logits), symexp(th.bins[200]).reshape(1))


def test_decode_uniform_logits_is_zero() -> None:
    th = SymlogTwoHot()
    assert th.decode(torch.zeros(3, 255)).abs().max().item() < 1e-4


def test_loss_matches_manual_cross_entropy() -> None:
    th = SymlogTwoHot()
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, 255, generator=gen) * 3
    t = symexp(torch.randn(6, 5, generator=gen) * 5)
    loss = th.loss(logits, t)
    assert loss.shape == (6, 5)
    manual = -(th.encode(t) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(loss, manual)
    soft_ce = F.cross_entropy(logits.reshape(-1, 255), th.encode(t).reshape(-1, 255), reduction="none")
    torch.testing.assert_close(loss, soft_ce.reshape(6, 5))


def test_loss_known_value_custom_bins() -> None:
    th = SymlogTwoHot(bins=11, low=-5.0, high=5.0)
    logits = torch.randn(1, 11, generator=torch.Generator().manual_seed(2))
    logp = torch.log_softmax(logits, -1)
    expected = -(0.7 * logp[0, 7] + 0.3 * logp[0, 8])
    loss = th.loss(logits, symexp(torch.tensor([2.3])))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_minimised_by_matching_distribution_and_differentiable() -> None:
    th = SymlogTwoHot()
    t = torch.tensor([5.0, -42.0])
    enc = th.encode(t)
    good = th.loss(torch.log(enc + 1e-12), t)
    bad = th.loss(torch.zeros(2, 255), t)
    assert (good < bad).all()
    logits = torch.zeros(2, 255, requires_grad=True)
    th.loss(logits, t).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# --- categorical KL ---
def test_categorical_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(4, 7, 32, 32, generator=gen) * 2
    q = torch.randn(4, 7, 32, 32, generator=gen) * 2
    kl = categorical_kl(p, q)
    assert kl.shape == (4, 7)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                            torch.distributions.Categorical(logits=q)).sum(-1)
    torch.testing.assert_close(kl, ref, rtol=1e-4, atol=1e-5)
    assert (kl >= 0).all()
    # asymmetric in general
    assert not torch.allclose(kl, categorical_kl(q, p))


def test_categorical_kl_zero_for_equal_logits_and_shift_invariant() -> None:
    p = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(categorical_kl(p, p), torch.zeros(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(categorical_kl(p, p + 5.0), torch.zeros(3), rtol=0, atol=1e-5)


def test_categorical_kl_nonnegative_random() -> None:
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        p = torch.randn(16, 4, 6, generator=gen) * 4
        q = torch.randn(16, 4, 6, generator=gen) * 4
        assert (categorical_kl(p, q) >= -1e-6).all()


# --- free bits ---
def test_free_bits_batch_mode() -> None:
    kl = torch.tensor([[0.2, 3.0], [0.1, 0.3]])  # mean 0.9
    assert free_bits_kl(kl, 1.0, "batch").item() == pytest.approx(1.0)
    assert free_bits_kl(kl, 0.5, "batch").item() == pytest.approx(0.9)
    assert free_bits_kl(kl, 1.0).item() == pytest.approx(1.0)  # default is batch
    assert free_bits_kl(kl, 1.0, "batch").dim() == 0


def test_free_bits_step_mode() -> None:
    kl = torch.tensor([[0.2, 3.0], [0.1, 0.3]])
    # mean(max(1, kl)) = (1 + 3 + 1 + 1) / 4
    assert free_bits_kl(kl, 1.0, "step").item() == pytest.approx(1.5)
    assert free_bits_kl(kl, 0.0, "step").item() == pytest.approx(0.9)


def test_free_bits_batch_gradient_switches_off_below_threshold() -> None:
    kl = torch.tensor([[0.2, 0.5], [0.1, 0.3]], requires_grad=True)  # mean 0.275 < 1
    free_bits_kl(kl, 1.0, "batch").backward()
    assert kl.grad is not None and torch.equal(kl.grad, torch.zeros_like(kl))

    kl = torch.tensor([[0.2, 3.0], [0.1, 2.3]], requires_grad=True)  # mean 1.4 > 1
    free_bits_kl(kl, 1.0, "batch").backward()
    torch.testing.assert_close(kl.grad, torch.full_like(kl, 0.25))


def test_free_bits_step_gradient_per_element() -> None:
    kl = torch.tensor([[0.2, 3.0], [0.1, 2.3]], requires_grad=True)
    free_bits_kl(kl, 1.0, "step").backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.25], [0.0, 0.25]]))


def test_free_bits_invalid_mode() -> None:
    with pytest.raises(ValueError):
        free_bits_kl(torch.ones(2, 2), 1.0, "sum")
