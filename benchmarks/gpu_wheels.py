"""Download the wheels that `benchmarks/gpu_check.sh` installs on a GPU machine without internet.

    python benchmarks/gpu_wheels.py [--dest wheels/gpu] [--python-version 3.12] [--max-mib 60]

The GPU machine we test on has Python 3.12 with torch, lightning, numpy, pandas, matplotlib, opencv, rich,
einops and imageio preinstalled, but none of the packages below. This script downloads exactly those, as
binary wheels for CPython ``--python-version`` on manylinux x86_64 (``pip download --no-deps
--only-binary=:all:``), at the versions installed in the environment that runs it: run it from drama's own
verified virtual environment (README install), so the GPU machine gets the set that ``pip check`` accepted
here. Nothing of MLflow, rliable or the report stack is needed on the bench path (``drama bench`` never
imports them), so they stay out and the download stays small. Prints one JSON object (files, sizes, total)
and fails if the total exceeds ``--max-mib``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = (
    "tensordict", "torchrl", "pyvers", "hoptorch", "orjson", "importlib_metadata", "zipp", "cloudpickle",
    "omegaconf", "gymnasium", "farama-notifications", "ale-py",
    "pytest", "pluggy", "iniconfig",
)
"""What the bench path and the GPU tests need beyond what the GPU machine has (module docstring)."""

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
"""Accepted wheel platforms (pure-Python wheels are always accepted)."""


def requirements() -> list[str]:
    """``name==version`` for every package of :data:`PACKAGES`, from the running environment."""
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"gpu_wheels: {name} is not installed here; run this from drama's virtual environment")
    return out


def download(dest: Path, python_version: str) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--dest", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *requirements()], check=True)
    wanted = {name.lower().replace("-", "_") for name in PACKAGES}
    return sorted(p for p in dest.glob("*.whl") if p.name.split("-")[0].lower() in wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=ROOT / "wheels" / "gpu", help="folder for the wheels")
    parser.add_argument("--python-version", default="3.12", help="CPython version of the GPU machine")
    parser.add_argument("--max-mib", type=float, default=60.0, help="fail above this total size (MiB)")
    args = parser.parse_args()
    wheels = download(args.dest, args.python_version)
    sizes = {p.name: p.stat().st_size for p in wheels}
    total = sum(sizes.values()) / 2**20
    print(json.dumps({"dest": str(args.dest), "python_version": args.python_version, "wheels": sizes,
                      "count": len(sizes), "total_mib": round(total, 2), "max_mib": args.max_mib}))
    if total > args.max_mib:
        print(f"gpu_wheels: {total:.1f} MiB exceeds --max-mib {args.max_mib}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
