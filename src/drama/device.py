"""Where and in which precision the models run: ``runtime.device`` and ``runtime.precision`` resolved for this
machine, and the :class:`Runtime` the models are handed when they are built (their autocast context and how one
optimiser step runs): :class:`FabricRuntime` in ``drama fit`` and ``drama bench``, :class:`AutocastRuntime` for a
loaded agent that only acts, plain :class:`Runtime` for models built stand-alone (tests, notebooks)."""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
"""Linux's CPU description: the model name and the feature flags when torch has no probe for one."""

def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (Linux ``/proc/cpuinfo``) or architecture: what benchmarks report."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU feature flags (``/proc/cpuinfo`` names) of bf16 dot products in hardware: AVX512-BF16 (AMD Zen 4/5, Intel
Cooper Lake and later) and AMX (Intel Xeon since Sapphire Rapids)."""


def cpu_features() -> frozenset[str]:
    """The :data:`BF16_CPU_FLAGS` (and ``avx512f``, ``avx2``) this CPU has: from torch's own probes of the CPU it
    dispatches kernels for, else from the ``flags`` line of Linux ``/proc/cpuinfo``."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
              "avx512f": "_is_avx512_supported", "avx2": "_is_avx2_supported"}
    found: set[str] = set()
    unprobed = []
    for flag, name in probes.items():
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is None:
                unprobed.append(flag)
            elif probe():
                found.add(flag)
        except RuntimeError:
            unprobed.append(flag)
    if unprobed:
        try:
            for line in CPUINFO.read_text().splitlines():
                if line.startswith("flags"):
                    found |= set(unprobed) & set(line.split(":", 1)[1].split())
                    break
        except OSError:
            pass
    return frozenset(found)


def cpu_has_bf16_hardware(features: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or the given feature set) computes bf16 dot products in hardware (:data:`BF16_CPU_FLAGS`)."""
    features = cpu_features() if features is None else features
    return any(flag in features for flag in BF16_CPU_FLAGS)


def resolve_precision(name: str, device: torch.device, features: frozenset[str] | None = None) -> str:
    """``auto`` -> ``bf16-mixed`` only where bf16 runs in hardware and was measured faster, else ``32-true``.

    * CUDA: float32. bf16 autocast measured slower there: on one H200 at the paper shape (``conf/atari.yaml``,
      pure-PyTorch Mamba-2, ``drama bench``, interleaved, medians of 5) an env step took 0.171 s in float32 and
      0.188 s in bf16 (world-model update 0.087 s vs 0.096 s, actor-critic 0.071 s vs 0.079 s): a 7M-parameter
      agent leaves the GPU launch-bound, and autocast adds cast kernels without shortening the matrix products
      that matter (benchmarks/results/gpu_h200/bench_atari.json). The reference trains in bf16 on CUDA: set
      ``bf16-mixed`` to do the same (also the choice to measure with the mamba-ssm kernels, unmeasured here).
    * CPUs with bf16 dot products (:data:`BF16_CPU_FLAGS`): at the ``laptop`` shape bf16 autocast measured 1.6x
      faster per env step on a 2-core Xeon with AMX and 1.4x on a 2-core AMD Zen 5 (AVX512-BF16, no AMX).
    * Any other CPU (AVX2, or AVX-512 without BF16) and MPS: float32. Without bf16 units bf16 is emulated: on an
      AVX2-only AMD EPYC one debug-shape env step took 6.6 s in bf16 against 0.74 s in float32.

    ``features`` (CPU flags) defaults to this machine's :func:`cpu_features`. Explicit ``32-true`` /
    ``bf16-mixed`` are returned as given. Training, imagination, acting and evaluation all run under the
    precision resolved here.
    """
    if name != "auto":
        return name
    if device.type == "cpu" and cpu_has_bf16_hardware(features):
        return "bf16-mixed"
    return "32-true"


def resolve_channels_last(value: bool | str, device: torch.device, features: frozenset[str] | None = None) -> bool:
    """``runtime.channels_last``: ``auto`` -> the NHWC conv layout on CPUs with bf16 hardware (the same rule as
    :func:`resolve_precision`; at the ``laptop`` shape it measured 1.12x faster per env step in bf16 and 1.31x in
    float32 on a 2-core Xeon with AMX, 1.26x in bf16 on AMD Zen 5), the default layout elsewhere (no gain on an
    AVX2 EPYC; unmeasured on CUDA and MPS); ``true``/``false`` as given."""
    if value != "auto":
        return bool(value)
    return device.type == "cpu" and cpu_has_bf16_hardware(features)


LIGHTNING_INFO_LOGGERS = ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")
"""Lightning's info loggers (the one that says "Using bfloat16 Automatic Mixed Precision (AMP)" on stderr; drama
prints the precision on its own ``# run`` line)."""


def make_fabric(device: torch.device, precision: str):
    """A Lightning ``Fabric`` on ``device`` (one device; ``cuda:N`` keeps its index) with ``precision``, launched,
    without Lightning's info lines on stderr: what ``drama fit``, ``drama bench`` and :func:`drama.build.load_agent`
    run the models with."""
    import logging

    import lightning as L

    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    devices = [device.index] if device.type == "cuda" and device.index is not None else 1
    fabric = L.Fabric(accelerator=device.type, devices=devices, precision=precision)
    fabric.launch()
    return fabric


class Runtime:
    """How a model runs: float32 and plain PyTorch (``loss.backward()``, ``clip_grad_norm_``). The models hold one
    (``module.runtime``) and ask it for their autocast context and the backward pass of an optimiser step."""

    def autocast(self) -> AbstractContextManager:
        """The context the model's forward passes run in (none: float32)."""
        return nullcontext()

    def backward(self, module: torch.nn.Module, loss: torch.Tensor,
                 max_norm: float) -> tuple[torch.optim.Optimizer, torch.Tensor]:
        """Zero ``module``'s gradients, backpropagate ``loss``, clip the global gradient norm to ``max_norm``;
        returns the optimiser to step and the norm before clipping (``module.optimizer``: the module's own)."""
        optimizer = module.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in module.parameters() if p.requires_grad]
        return optimizer, torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)


class AutocastRuntime(Runtime):
    """A model that acts on ``device`` under ``precision`` (``32-true`` or ``bf16-mixed``, resolved), without
    Fabric: the autocast Fabric's ``bf16-mixed`` uses, ``torch.autocast(device type, bfloat16)``."""

    def __init__(self, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision

    def autocast(self) -> AbstractContextManager:
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


class FabricRuntime(Runtime):
    """A model set up with ``fabric.setup``: Fabric's precision context, ``fabric.backward`` and
    ``fabric.clip_gradients`` through the optimiser Fabric wrapped."""

    def __init__(self, fabric) -> None:
        self.fabric = fabric

    def autocast(self) -> AbstractContextManager:
        return self.fabric.autocast()

    def backward(self, module: torch.nn.Module, loss: torch.Tensor,
                 max_norm: float) -> tuple[torch.optim.Optimizer, torch.Tensor]:
        optimizer = module.optimizers()  # Fabric's wrapper of module.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        return optimizer, self.fabric.clip_gradients(module, optimizer, max_norm=max_norm)
