"""MetricAccumulator: running means without a host sync per metric (tensors summed on their device)."""

from __future__ import annotations

import pytest
import torch

from drama.metrics import MetricAccumulator


def test_means_of_tensors_and_floats_with_prefixes():
    acc = MetricAccumulator()
    acc.add({"loss": torch.tensor(1.0), "time": 0.5}, prefix="wm/")
    acc.add({"loss": torch.tensor(3.0, dtype=torch.float64), "time": 1.5}, prefix="wm/")
    acc.add({"grad_norm": torch.tensor([2.0])})
    assert acc.pop() == pytest.approx({"wm/loss": 2.0, "wm/time": 1.0, "grad_norm": 2.0})
    assert acc.pop() == {}


def test_add_keeps_tensors_unread_until_pop(monkeypatch):
    acc = MetricAccumulator()
    reads = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: (reads.append(1), original(self))[1])
    for k in range(5):
        acc.add({"a": torch.tensor(float(k), requires_grad=True) * 2, "b": torch.tensor(1.0)})
    assert reads == [] and all(isinstance(v, torch.Tensor) and not v.requires_grad for v in acc.sums.values())
    assert acc.pop() == pytest.approx({"a": 4.0, "b": 1.0})


def test_non_scalar_metrics_are_refused():
    acc = MetricAccumulator()
    acc.add({"v": torch.ones(3)})
    with pytest.raises(RuntimeError):
        acc.pop()
