"""Device, precision and conv-layout resolution (runtime.device, runtime.precision, runtime.channels_last)."""

from __future__ import annotations

import pytest
import torch

import drama.device as device_module
from drama.device import (
    cpu_features,
    cpu_has_bf16_hardware,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")

FEATURE_SETS = {
    # name: (flags, auto precision on the CPU, auto channels_last on the CPU)
    "avx2 only (AMD EPYC Zen 2/3)": (frozenset({"avx2"}), "32-true", False),
    "avx-512 without bf16 (Skylake-SP)": (frozenset({"avx2", "avx512f"}), "32-true", False),
    "avx512_bf16 (AMD Zen 4/5, Cooper Lake)": (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bf16-mixed", True),
    "amx (Sapphire Rapids and later)": (frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), "bf16-mixed",
                                        True),
    "amx without avx512_bf16 reported": (frozenset({"avx2", "avx512f", "amx_bf16"}), "bf16-mixed", True),
}


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert isinstance(resolve_device("cpu"), torch.device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_resolve_device_auto_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", list(FEATURE_SETS))
def test_auto_precision_and_layout_follow_the_cpus_bf16_hardware(name) -> None:
    flags, precision, channels_last = FEATURE_SETS[name]
    assert resolve_precision("auto", CPU, flags) == precision
    assert resolve_channels_last("auto", CPU, flags) is channels_last
    assert cpu_has_bf16_hardware(flags) is (precision == "bf16-mixed")
    for explicit in ("32-true", "bf16-mixed"):  # explicit values are kept whatever the CPU
        assert resolve_precision(explicit, CPU, flags) == explicit
    assert resolve_channels_last(True, CPU, flags) is True and resolve_channels_last(False, CPU, flags) is False
    # the CPU's features do not decide for other devices
    assert resolve_precision("auto", MPS, flags) == "32-true" and resolve_channels_last("auto", MPS, flags) is False


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_cuda_is_float32_whatever_the_gpu_or_the_cpu(monkeypatch, bf16) -> None:
    # bf16 measured slower on an H200 at the paper shape (resolve_precision's docstring); explicit values stand
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    for flags, *_ in FEATURE_SETS.values():
        assert resolve_precision("auto", CUDA, flags) == "32-true"
        assert resolve_channels_last("auto", CUDA, flags) is False
    assert resolve_precision("32-true", CUDA) == "32-true"
    assert resolve_precision("bf16-mixed", CUDA) == "bf16-mixed"


def test_auto_on_a_cuda_device_without_cuda_is_float32(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", CUDA) == "32-true"


PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
          "avx512f": "_is_avx512_supported", "avx2": "_is_avx2_supported"}


@pytest.mark.parametrize("name", list(FEATURE_SETS))
def test_cpu_features_come_from_torchs_probes(monkeypatch, name) -> None:
    flags = FEATURE_SETS[name][0]
    for flag, probe in PROBES.items():
        monkeypatch.setattr(torch.cpu, probe, lambda flag=flag: flag in flags, raising=False)
    assert cpu_features() == flags
    assert resolve_precision("auto", CPU) == FEATURE_SETS[name][1]
    assert resolve_channels_last("auto", CPU) is FEATURE_SETS[name][2]


@pytest.mark.parametrize("name", list(FEATURE_SETS))
def test_cpu_features_fall_back_to_proc_cpuinfo_without_torchs_probes(monkeypatch, tmp_path, name) -> None:
    flags = FEATURE_SETS[name][0]
    for probe in PROBES.values():
        monkeypatch.delattr(torch.cpu, probe, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse sse2 " + " ".join(sorted(flags))
                       + " avx512vl\n")
    monkeypatch.setattr(device_module, "CPUINFO", cpuinfo)
    assert cpu_features() == flags
    assert resolve_precision("auto", CPU) == FEATURE_SETS[name][1]


def test_cpu_features_without_probes_or_cpuinfo_are_empty_and_float32(monkeypatch, tmp_path) -> None:
    for probe in PROBES.values():
        monkeypatch.delattr(torch.cpu, probe, raising=False)
    monkeypatch.setattr(device_module, "CPUINFO", tmp_path / "missing")
    assert cpu_features() == frozenset()
    assert resolve_precision("auto", CPU) == "32-true" and resolve_channels_last("auto", CPU) is False
