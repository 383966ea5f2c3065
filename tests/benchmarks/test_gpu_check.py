"""The CPU-side parts of `benchmarks/gpu_check.sh`: the wheel list downloads (cp312, small), and the script
installs from wheels with ``--no-index`` and runs its bench steps in an emulated GPU machine (only the packages
that machine has, plus the wheels), on CPU with tiny settings. Needs the package registry (as CI's install)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_wheels  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

GPU_MACHINE_HAS = ("torch", "lightning", "numpy", "pandas", "matplotlib", "opencv-python-headless", "rich", "einops",
                   "imageio", "pip", "PyYAML", "packaging", "typing_extensions")
"""What the GPU machine has preinstalled (shared notes on the lent machine), besides their own dependencies."""

pytestmark = pytest.mark.slow


def _closure(names) -> set[str]:
    """The distributions ``names`` need, recursively (markers evaluated without extras)."""
    seen, todo = set(), list(names)
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                try:
                    importlib.metadata.distribution(req.name)
                except importlib.metadata.PackageNotFoundError:
                    continue
                todo.append(req.name)
    return seen


def _emulated_gpu_machine(folder: Path) -> Path:
    """A folder with links to just the GPU machine's packages (from this environment)."""
    folder.mkdir()
    ours = {name.lower().replace("_", "-") for name in gpu_wheels.PACKAGES}
    for key in sorted(_closure(GPU_MACHINE_HAS) - ours):
        dist = importlib.metadata.distribution(key)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            target = folder / top
            if source.exists() and not target.exists() and top != "__pycache__":
                target.symlink_to(source)
    return folder


def test_the_gpu_wheels_download_and_stay_small(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_wheels.py"), "--dest", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["count"] == len(gpu_wheels.PACKAGES) and result["total_mib"] <= 60
    for name in result["wheels"]:
        assert "-cp312-" in name or "-py3-none-any" in name or "-py2.py3-none-any" in name, name


def test_gpu_check_runs_from_wheels_on_cpu_in_an_emulated_gpu_machine(tmp_path):
    wheels = tmp_path / "wheels"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # this machine's Python, not the GPU's 3.12
    subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_wheels.py"), "--dest", str(wheels),
                    "--python-version", version], check=True, capture_output=True, timeout=600)
    machine = _emulated_gpu_machine(tmp_path / "machine")
    python = tmp_path / "python"  # no site-packages: only the emulated machine (and what the script installs)
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    python.chmod(0o755)
    probe = subprocess.run([str(python), "-c", "import tensordict"], env={**os.environ, "PYTHONPATH": str(machine)},
                           capture_output=True, text=True)
    assert probe.returncode != 0  # the emulated machine really lacks our dependencies
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(machine), "PYTHON": str(python), "DRAMA_WHEELS": str(wheels),
           "DRAMA_GPU_CHECK_SMOKE": "1", "DRAMA_GPU_CHECK_BUDGET": "600"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=900)
    steps = (out / "steps.txt").read_text()
    assert proc.returncode == 0, steps + proc.stdout[-3000:] + "".join(
        p.read_text()[-1500:] for p in sorted(out.glob("*.log")))
    for name in ("install", "environment", "gpu_tests", "smoke", "bench", "scaling"):
        assert f"{name} rc=0" in steps
    environment = json.loads((out / "environment.json").read_text())
    assert environment["cuda_available"] is False
    assert not any(str(v).startswith("error") for k, v in environment["imports"].items() if k != "mamba_ssm")
    bench = json.loads((out / "bench_atari.json").read_text())
    assert [v["name"] for v in bench["variants"]] == ["config", "train.batch_length=6"]
    assert all(v["env_steps_per_s"] > 0 for v in bench["variants"])
    assert json.loads((out / "bench_smoke.json").read_text())["variants"][0]["env_steps_per_s"] > 0
    assert list(out.glob("scaling_*.json"))
