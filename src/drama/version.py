"""Which drama this is: the version (one source: ``pyproject.toml``'s ``[project] version``, read from the installed
package's metadata) and, when the package runs from a git checkout, its commit.

Recorded with every run (:func:`provenance`): in its MLflow params (``drama/version``, ``drama/git_commit``) and
in ``run.json``, so a result can be traced to the code that produced it.
"""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("drama")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree that was never installed
    __version__ = "0+unknown"


@cache
def git_commit() -> str | None:
    """The commit of the git checkout the package is imported from (``+dirty`` when it has uncommitted changes to
    tracked files), or None for an installed wheel or without git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        if not (Path(top) / "pyproject.toml").is_file() or not (Path(top) / "src" / "drama").is_dir():
            return None  # a git repository around an installed package, not drama's checkout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def provenance() -> dict[str, str | None]:
    """``{"drama_version", "git_commit"}`` of the code running now."""
    return {"drama_version": __version__, "git_commit": git_commit()}
