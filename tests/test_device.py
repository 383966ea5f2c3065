"""Device and precision resolution (runtime.device, runtime.precision)."""

from __future__ import annotations

import pytest
import torch

from drama.device import resolve_device, resolve_precision


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert isinstance(resolve_device("cpu"), torch.device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_resolve_device_auto_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_precision_on_cpu_follows_the_bf16_matrix_units(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "32-true"
    assert resolve_precision("auto", torch.device("mps")) == "32-true"
    assert resolve_precision("32-true", torch.device("cpu")) == "32-true"


def test_resolve_precision() -> None:
    if not torch.cpu._is_amx_tile_supported():
        assert resolve_precision("auto", torch.device("cpu")) == "32-true"
    assert resolve_precision("bf16-mixed", torch.device("cpu")) == "bf16-mixed"
    assert resolve_precision("32-true", torch.device("cuda")) == "32-true"
    if not torch.cuda.is_available():
        assert resolve_precision("auto", torch.device("cuda")) == "32-true"
