"""lambda-return (docs/decisions.md, "v[t] bootstrap") and percentile return scale ("return-scale percentiles")."""

from __future__ import annotations

import pytest
import torch

from drama.returns import PercentileReturnScale, lambda_return


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    reward = torch.tensor([[1.0, 0.0, 2.0]])
    termination = torch.tensor([[0.0, 0.0, 0.0]])
    value = torch.tensor([[0.5, 1.0, -1.0, 4.0]])
    return reward, termination, value


def test_textbook_matches_hand_computation() -> None:
    reward, termination, value = _example()
    # gamma = 0.5, lambda = 0.5:
    # G3 = v3 = 4
    # G2 = 2 + 0.5 * (0.5 * v3 + 0.5 * G3) = 2 + 0.5 * (2 + 2) = 4
    # G1 = 0 + 0.5 * (0.5 * v2 + 0.5 * G2) = 0.5 * (-0.5 + 2) = 0.75
    # G0 = 1 + 0.5 * (0.5 * v1 + 0.5 * G1) = 1 + 0.5 * (0.5 + 0.375) = 1.4375
    out = lambda_return(reward, termination, value, gamma=0.5, lambda_=0.5)
    torch.testing.assert_close(out, torch.tensor([[1.4375, 0.75, 4.0]]))


def test_reference_bootstrap_matches_hand_computation() -> None:
    reward, termination, value = _example()
    # G2 = 2 + 0.5 * (0.5 * v2 + 0.5 * G3) = 2 + 0.5 * (-0.5 + 2) = 2.75
    # G1 = 0 + 0.5 * (0.5 * v1 + 0.5 * G2) = 0.5 * (0.5 + 1.375) = 0.9375
    # G0 = 1 + 0.5 * (0.5 * v0 + 0.5 * G1) = 1 + 0.5 * (0.25 + 0.46875) = 1.359375
    out = lambda_return(reward, termination, value, gamma=0.5, lambda_=0.5, bootstrap="reference")
    torch.testing.assert_close(out, torch.tensor([[1.359375, 0.9375, 2.75]]))


def test_termination_cuts_bootstrap() -> None:
    reward, _, value = _example()
    termination = torch.tensor([[False, True, False]])
    # G2 = 4 as before; G1 = r1 + 0 = 0; G0 = 1 + 0.5 * (0.5 * v1 + 0.5 * 0) = 1.25
    for mode, g0 in (("textbook", 1.25), ("reference", 1.0 + 0.5 * (0.25 + 0.0))):
        out = lambda_return(reward, termination, value, gamma=0.5, lambda_=0.5, bootstrap=mode)
        assert out[0, 1].item() == 0.0
        assert out[0, 0].item() == pytest.approx(g0)
    # a termination at the last index removes v[H] entirely
    out = lambda_return(reward, torch.tensor([[0.0, 0.0, 1.0]]), value, gamma=0.5, lambda_=0.5)
    assert out[0, 2].item() == 2.0


def test_lambda_zero_is_one_step_td() -> None:
    gen = torch.Generator().manual_seed(0)
    reward = torch.randn(4, 6, generator=gen)
    termination = (torch.rand(4, 6, generator=gen) < 0.2).float()
    value = torch.randn(4, 7, generator=gen)
    out = lambda_return(reward, termination, value, gamma=0.9, lambda_=0.0)
    torch.testing.assert_close(out, reward + 0.9 * (1 - termination) * value[:, 1:])


def test_lambda_one_is_discounted_sum_plus_bootstrap() -> None:
    gen = torch.Generator().manual_seed(1)
    horizon, gamma = 5, 0.9
    reward = torch.randn(3, horizon, generator=gen)
    value = torch.randn(3, horizon + 1, generator=gen)
    out = lambda_return(reward, torch.zeros(3, horizon), value, gamma=gamma, lambda_=1.0)
    for t in range(horizon):
        expected = sum(gamma ** (k - t) * reward[:, k] for k in range(t, horizon))
        expected = expected + gamma ** (horizon - t) * value[:, horizon]
        torch.testing.assert_close(out[:, t], expected)


def test_shapes_and_bad_bootstrap() -> None:
    reward, termination, value = _example()
    with pytest.raises(ValueError, match="bootstrap"):
        lambda_return(reward, termination, value, 0.9, 0.9, bootstrap="v_t")
    with pytest.raises(ValueError, match="H\\+1"):
        lambda_return(reward, termination, value[:, :-1], 0.9, 0.9)


def test_percentile_scale_ema_matches_hand_computation() -> None:
    scale = PercentileReturnScale(decay=0.99, percentiles=(0.05, 0.95))
    assert scale.low.item() == 0.0 and scale.high.item() == 0.0
    assert scale.scale.item() == 1.0
    # returns 0..99 shuffled: kthvalue(int(0.05 * 100) = 5) is the 5th smallest, 4.0; kthvalue(95) is 94.0
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    returns = torch.arange(100.0)[order].view(10, 10)
    scale.update(returns)
    assert scale.low.item() == pytest.approx(0.01 * 4.0)
    assert scale.high.item() == pytest.approx(0.01 * 94.0)
    assert scale.scale.item() == 1.0  # 0.9 < 1: floored
    # second update with 10x the spread: low = 0.99 * 0.04 + 0.01 * 40, high = 0.99 * 0.94 + 0.01 * 940
    scale.update(returns * 10.0)
    low, high = 0.99 * 0.04 + 0.01 * 40.0, 0.99 * 0.94 + 0.01 * 940.0
    assert scale.low.item() == pytest.approx(low)
    assert scale.high.item() == pytest.approx(high)
    assert scale.scale.item() == pytest.approx(high - low)
    assert set(scale.state_dict()) == {"low", "high"}


def test_percentile_is_reference_kthvalue_rank() -> None:
    """The reference calls ``torch.kthvalue(x, int(p * N))``: 0-based rank int(p * N) - 1 of the sorted returns."""
    x = torch.randn(1024, 16, generator=torch.Generator().manual_seed(2))
    flat = x.flatten().sort().values
    assert PercentileReturnScale.percentile(x, 0.05).item() == flat[818].item()  # int(819.2) - 1
    assert PercentileReturnScale.percentile(x, 0.95).item() == flat[15563].item()  # int(15564.8) - 1
    assert PercentileReturnScale.percentile(x, 0.05).item() == torch.kthvalue(x.flatten(), 819).values.item()
    assert PercentileReturnScale.percentile(x, 1.0).item() == flat[-1].item()


def test_percentile_on_a_hand_built_batch() -> None:
    # 20 returns 1..20: int(0.05 * 20) = 1 -> the smallest (1.0); int(0.95 * 20) = 19 -> the 19th smallest (19.0)
    x = torch.tensor([[20.0, 3.0, 7.0, 1.0, 15.0], [2.0, 19.0, 4.0, 18.0, 5.0],
                      [6.0, 17.0, 8.0, 16.0, 9.0], [14.0, 10.0, 13.0, 11.0, 12.0]])
    assert PercentileReturnScale.percentile(x, 0.05).item() == 1.0
    assert PercentileReturnScale.percentile(x, 0.95).item() == 19.0
    assert PercentileReturnScale.percentile(x, 0.5).item() == 10.0
    # int(p * N) = 0 would make the reference's kthvalue fail; the smallest element is taken
    assert PercentileReturnScale.percentile(x, 0.0).item() == 1.0
    assert PercentileReturnScale.percentile(torch.tensor([3.0]), 0.95).item() == 3.0
