"""The configs shipped inside the package, addressed by name: ``atari``, ``debug``, ``cartpole``,
``sweeps/atari100k``, ...

One source: the repository's top-level ``conf/`` folder is what the wheel carries as ``drama/conf/`` (in a checkout
``src/drama/conf`` is a symbolic link to it; ``pyproject.toml``'s package data lists its files), so an installed
package and a checkout read the same files. A config's description is the first line of its leading comment.
This module owns the names; :func:`drama.config.find_config_file` turns a name or a path into a file.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

SUFFIX = ".yaml"


def root() -> Path:
    """The folder of the packaged configs (``drama/conf``)."""
    with as_file(files("drama") / "conf") as path:  # a real folder: the package is installed unzipped
        return Path(path)


def names() -> list[str]:
    """Every packaged config's name (its path below ``conf/`` without ``.yaml``): the top-level ones, then sweeps."""
    base = root()
    found = [p.relative_to(base).with_suffix("").as_posix() for p in base.rglob(f"*{SUFFIX}")]
    return sorted(found, key=lambda name: (name.count("/"), name))


def path(name: str) -> Path | None:
    """The packaged file of ``name`` (``atari``, ``atari.yaml``, ``conf/atari.yaml`` and ``sweeps/tiny`` all work),
    or None."""
    key = name.removeprefix("./").removeprefix("conf/").removesuffix(SUFFIX)
    return root() / f"{key}{SUFFIX}" if key in names() else None


def description(name: str) -> str:
    """The first line of the config's leading comment."""
    file = path(name)
    if file is None:
        return ""
    for line in file.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""
