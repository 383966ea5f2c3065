"""The sweep file: its keys, the grid's trials and their names, validated before anything starts.

A sweep file (YAML, read with OmegaConf) has these keys:

* ``base``: the config file of every trial, relative to the sweep file, else to the current directory, else a
  packaged config name (``atari``);
* ``overrides``: ``key=value`` items for every trial (the command line's ``key=value`` items come after them);
* ``grid``: ``{dotted key: [values]}``; the trials are the cross product, in the file's key order;
* ``evaluate.episodes``: episodes of each trial's ``drama evaluate``;
* ``resources``: ``cpus`` and ``gpus`` of one trial (fractional allowed: ``gpus: 0.25`` puts four trials on a GPU);
* ``retries``: how often a crashed trial is run again before it is recorded as failed;
* ``name`` (optional, default the file's stem): the sweep folder's name and the MLflow experiment of every trial.

:func:`load_sweep` loads every trial's config (:func:`drama.config.load_config`): a bad sweep is one
:class:`~drama.config.ConfigError` line, exit 2, nothing written. This module owns the trial folder names
(:func:`trial_names`): deterministic, so running the same sweep again finds its trials.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drama.config import ConfigError, DramaConfig, find_config_file, load_config, load_yaml_mapping, one_line, validate

SWEEP_KEYS = ("name", "base", "overrides", "grid", "evaluate", "resources", "retries")
RESOURCE_KEYS = ("cpus", "gpus")
EVALUATE_KEYS = ("episodes",)
DEFAULT_OUTPUT_DIR = "runs/sweeps"
RESERVED_KEYS = ("runtime.output_dir", "runtime.run_name", "runtime.experiment")
"""Keys the sweep sets for every trial itself (a grid over them is refused)."""


@dataclass
class Trial:
    name: str
    grid: dict[str, Any]
    overrides: list[str]
    """The grid values as ``key=value`` items."""
    total_steps: int = 0
    """``train.total_steps`` of its config: env steps of its ``drama fit``."""


@dataclass
class Sweep:
    path: Path
    name: str
    base: Path
    overrides: list[str]
    grid: dict[str, list[Any]]
    episodes: int
    cpus: float
    gpus: float
    retries: int
    folder: Path
    trials: list[Trial] = field(default_factory=list)

    def trial_overrides(self, trial: Trial) -> list[str]:
        """Everything after ``--config base`` of the trial's ``drama fit``."""
        return [*self.overrides, *trial.overrides, f"runtime.output_dir={self.folder.resolve()}",
                f"runtime.run_name={trial.name}", f"runtime.experiment={self.name}", "runtime.progress=false"]


# ------------------------------------------------------------------ the sweep file
def format_value(value: Any) -> str:
    """A grid value as the right-hand side of a ``key=value`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _label(key: str, value: Any) -> str:
    """One grid value in a trial name: ``env.id=ALE/Pong-v5`` -> ``Pong-v5``, ``runtime.seed=1`` -> ``seed1``,
    ``world_model.backbone.name=gru`` -> ``gru`` (a value alone for keys named ``id`` or ``name``)."""
    leaf = key.rsplit(".", 1)[-1]
    text = format_value(value)
    if leaf in ("id", "name"):
        return text.rsplit("/", 1)[-1]
    return f"{leaf}{text}"


def _sanitise(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-.")
    return name or "trial"


def trial_names(combos: list[dict[str, Any]]) -> list[str]:
    """Deterministic, unique folder names: the grid values' labels joined by ``_``, sanitised to
    ``[A-Za-z0-9._=+-]``; names that would collide get ``-<n>`` (their position in the grid) appended."""
    names = [_sanitise("_".join(_label(k, v) for k, v in combo.items())) for combo in combos]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    unique = [f"{name}-{i}" if counts[name] > 1 else name for i, name in enumerate(names)]
    if len(set(unique)) != len(unique):  # a sanitised name that happens to end like a suffixed one
        unique = [f"{name}-{i}" for i, name in enumerate(unique)]
    return unique


def _number(value: Any, what: str, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < 0 or not math.isfinite(value):
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise ConfigError(f"{what}={value!r} is invalid: must be {kind}")
    return value


def _override_value(items: list[str], key: str) -> str | None:
    found = None
    for item in items:
        if item.split("=", 1)[0].strip() == key:
            found = item.split("=", 1)[1]
    return found


def _section(path: Path, spec: dict[str, Any], key: str, allowed: tuple[str, ...], noun: str) -> dict[str, Any]:
    """The optional mapping ``spec[key]`` with only ``allowed`` keys."""
    section = spec.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {key} must be a mapping of {', '.join(allowed)}")
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise ConfigError(f"{path}: unknown {noun} {unknown[0]!r} (expected {', '.join(allowed)})")
    return section


def _check_grid(path: Path, grid: dict[str, Any], base_cfg: DictConfig) -> None:
    """Each key of the sweep file's ``grid`` is a config key of ``base_cfg`` not set by the sweep itself, with a
    non-empty list of values."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} needs a non-empty list of values")
        if key in RESERVED_KEYS:
            raise ConfigError(f"{path}: grid key {key!r} is set by the sweep itself")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base_cfg, parent) if parent else base_cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            raise ConfigError(f"{path}: grid key {key!r} is not a config key")


def load_sweep(path: str | Path, cli_overrides: list[str] | None = None) -> Sweep:
    """Read and validate the sweep file and every trial's config; writes nothing. Raises :class:`ConfigError`."""
    path = find_config_file(path, "sweep file")
    raw = load_yaml_mapping(path, "sweep file")
    spec: dict[str, Any] = OmegaConf.to_container(raw, resolve=True)  # type: ignore[assignment]
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(SWEEP_KEYS)})")

    name = spec.get("name") or path.stem
    if not isinstance(name, str) or "/" in name or name in (".", ".."):
        raise ConfigError(f"{path}: name={name!r} is invalid: must be a plain folder name")
    if not isinstance(spec.get("base"), str) or not spec["base"]:
        raise ConfigError(f"{path}: base is required: the config file of every trial")
    base = path.parent / spec["base"]
    if not base.is_file():
        try:
            base = find_config_file(spec["base"])
        except ConfigError:
            raise ConfigError(f"{path}: base config not found: {spec['base']} (relative to {path.parent}, the "
                              "current directory or a packaged config name)") from None
    overrides = spec.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: overrides must be a list of key=value strings")
    overrides = [*overrides, *(cli_overrides or [])]

    resources = _section(path, spec, "resources", RESOURCE_KEYS, "resource")
    cpus = _number(resources.get("cpus", 1), f"{path}: resources.cpus")
    gpus = _number(resources.get("gpus", 0), f"{path}: resources.gpus")
    evaluate = _section(path, spec, "evaluate", EVALUATE_KEYS, "evaluate key")
    episodes = int(_number(evaluate.get("episodes", 10), f"{path}: evaluate.episodes", integer=True))
    if episodes < 1:
        raise ConfigError(f"{path}: evaluate.episodes=0 is invalid: must be a positive integer")
    retries = int(_number(spec.get("retries", 0), f"{path}: retries", integer=True))

    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: grid is empty: give at least one key with a list of values")
    base_cfg = OmegaConf.structured(load_config(base, overrides))
    _check_grid(path, grid, base_cfg)
    output_dir = _override_value(overrides, "runtime.output_dir") or DEFAULT_OUTPUT_DIR
    sweep = Sweep(path=path, name=name, base=base, overrides=overrides, grid=grid, episodes=episodes, cpus=cpus,
                  gpus=gpus, retries=retries, folder=Path(output_dir) / name)
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for trial_name, combo in zip(trial_names(combos), combos, strict=True):
        trial = Trial(trial_name, combo, [f"{k}={format_value(v)}" for k, v in combo.items()])
        try:
            trial.total_steps = _check_trial(base_cfg, base, sweep.trial_overrides(trial)).train.total_steps
        except ConfigError as exc:
            raise ConfigError(f"{path}: trial {trial_name}: {exc}") from None
        sweep.trials.append(trial)
    return sweep


def _check_trial(base_cfg: DictConfig, base: Path, overrides: list[str]) -> DramaConfig:
    """What ``load_config(base, overrides)`` checks, fast: the items merged at once onto the already loaded base
    (0.2 s per trial otherwise: 130 trials would take half a minute); on any error the full
    :func:`load_config`, for its exact message."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(base_cfg, OmegaConf.from_dotlist(overrides)))
        validate(cfg)  # type: ignore[arg-type]
    except Exception as exc:
        load_config(base, overrides)  # raises the one-line ConfigError of this trial's config
        raise ConfigError(one_line(exc)) from None
    return cfg  # type: ignore[return-value]


def dry_run(sweep: Sweep) -> None:
    """One line per trial: its name and grid values (nothing started, nothing written)."""
    for trial in sweep.trials:
        print(f"{trial.name}  {' '.join(trial.overrides)}")
    print(json.dumps({"sweep": sweep.name, "sweep_dir": str(sweep.folder), "trials": len(sweep.trials)}))

