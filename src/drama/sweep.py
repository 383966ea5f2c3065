"""``drama sweep SWEEP.yaml``: a fixed grid of trials (each ``drama fit`` then ``drama evaluate``) run with Ray.

The sweep file (YAML, read with OmegaConf):

* ``base``: the config file of every trial, relative to the sweep file or else to the current directory;
* ``overrides``: ``key=value`` items for every trial (the command line's ``key=value`` items come after them);
* ``grid``: ``{dotted key: [values]}``; the trials are the cross product, in the file's key order;
* ``evaluate.episodes``: episodes of each trial's ``drama evaluate``;
* ``resources``: ``cpus`` and ``gpus`` of one trial (fractional allowed: ``gpus: 0.25`` puts four trials on a GPU);
* ``retries``: how often a failing trial is run again before it is recorded as failed;
* ``name`` (optional, default the file's stem): the sweep folder's name and the MLflow experiment of every trial.

Everything is validated before anything starts (each trial's config is loaded, :func:`drama.config.load_config`):
a bad sweep is one :class:`~drama.config.ConfigError` line, exit 2, nothing written.

Layout: ``<runtime.output_dir of the overrides, default runs/sweeps>/<name>/`` holds ``sweep.json`` (every trial's
status, grid values, result or one-line error), ``logs/<trial>.log`` (the output of its processes), the MLflow
store ``mlflow.db`` + ``mlartifacts/`` and one run folder per trial, named from its grid values
(:func:`trial_names`). Running the same command again continues where the sweep was: a trial with an evaluation
JSON is skipped, one with a checkpoint continues with ``drama fit --resume``.

Why Ray tasks, not Ray Tune: the grid is fixed and every trial is already a resumable run folder, so a trial is one
``ray.remote`` function (``num_cpus`` / ``num_gpus`` from ``resources``, ``max_retries`` with
``retry_exceptions``) whose results the driver collects with ``ray.wait``; Tune's searchers, schedulers, trial
checkpointing and result directories would duplicate what the run folder already does. Each task runs ``python -m
drama fit`` and ``python -m drama evaluate`` as subprocesses: a killed or crashed trial cannot take the Ray worker
with it, and every trial starts from a clean interpreter.

MLflow: unless ``MLFLOW_TRACKING_URI`` is set, the driver starts ``mlflow server`` on loopback against the sweep's
sqlite store for the sweep's duration (its process group is killed at the end, also on Ctrl-C or an error); the
trials log to it, and each finished trial's run-info file is pointed at the sqlite file afterwards, so ``drama
report``, the notebook and ``drama fit --resume`` keep working without the server.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from drama.config import ConfigError, load_config, load_yaml_mapping, validate
from drama.run import RunFolder, write_atomic
from drama.tracking import MlflowServer, ensure_experiment

SWEEP_KEYS = ("name", "base", "overrides", "grid", "evaluate", "resources", "retries")
RESOURCE_KEYS = ("cpus", "gpus")
EVALUATE_KEYS = ("episodes",)
DEFAULT_OUTPUT_DIR = "runs/sweeps"
RESERVED_KEYS = ("runtime.output_dir", "runtime.run_name", "runtime.experiment")
"""Keys the sweep sets for every trial itself (a grid over them is refused)."""
SWEEP_FILE = "sweep.json"


@dataclass
class Trial:
    name: str
    grid: dict[str, Any]
    overrides: list[str]
    """The grid values as ``key=value`` items."""


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


def load_sweep(path: str | Path, cli_overrides: list[str] | None = None) -> Sweep:
    """Read and validate the sweep file and every trial's config; writes nothing. Raises :class:`ConfigError`."""
    path = Path(path)
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
        base = Path(spec["base"])
    if not base.is_file():
        raise ConfigError(f"{path}: base config not found: {spec['base']} (relative to {path.parent} or the "
                          "current directory)")
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
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} needs a non-empty list of values")
        if key in RESERVED_KEYS:
            raise ConfigError(f"{path}: grid key {key!r} is set by the sweep itself")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base_cfg, parent) if parent else base_cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            raise ConfigError(f"{path}: grid key {key!r} is not a config key")

    output_dir = _override_value(overrides, "runtime.output_dir") or DEFAULT_OUTPUT_DIR
    sweep = Sweep(path=path, name=name, base=base, overrides=overrides, grid=grid, episodes=episodes, cpus=cpus,
                  gpus=gpus, retries=retries, folder=Path(output_dir) / name)
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for trial_name, combo in zip(trial_names(combos), combos, strict=True):
        trial = Trial(trial_name, combo, [f"{k}={format_value(v)}" for k, v in combo.items()])
        try:
            _check_trial(base_cfg, base, sweep.trial_overrides(trial))
        except ConfigError as exc:
            raise ConfigError(f"{path}: trial {trial_name}: {exc}") from None
        sweep.trials.append(trial)
    return sweep


def _check_trial(base_cfg: DictConfig, base: Path, overrides: list[str]) -> None:
    """What ``load_config(base, overrides)`` checks, fast: the items merged at once onto the already loaded base
    (0.2 s per trial otherwise: 130 trials would take half a minute); on any error the full
    :func:`load_config`, for its exact message."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(base_cfg, OmegaConf.from_dotlist(overrides)))
        validate(cfg)  # type: ignore[arg-type]
    except Exception as exc:
        load_config(base, overrides)  # raises the one-line ConfigError of this trial's config
        raise ConfigError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


# ------------------------------------------------------------------ one trial (runs inside a Ray worker)
def _last_drama_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.startswith("drama:")]
    return lines[-1] if lines else None


def _terminate_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM to the child when the Ray worker that started it dies (a stopped sweep, a lost worker):
    ``drama fit`` then saves a checkpoint and exits 143, and the next ``drama sweep`` resumes it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_logged(argv: list[str], log_path: Path, env: dict[str, str]) -> str:
    """Run ``python -m drama ARGV`` appending its output to ``log_path``; its stdout's last line, or RuntimeError
    with the last ``drama:`` line of its stderr."""
    with open(log_path, "ab") as log:
        log.write(f"$ drama {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "drama", *argv], stdout=subprocess.PIPE, stderr=log, env=env,
                              stdin=subprocess.DEVNULL, check=False,
                              preexec_fn=_terminate_with_parent if sys.platform == "linux" else None)
        log.write(proc.stdout)
    if proc.returncode != 0:
        text = log_path.read_text(errors="replace")
        tail = text[text.rfind(f"$ drama {argv[0]}"):]
        raise RuntimeError(_last_drama_line(tail) or f"drama {argv[0]} exited with code {proc.returncode}")
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def run_trial(base: str, overrides: list[str], trial_dir: str, episodes: int, log_path: str,
              env: dict[str, str]) -> dict[str, Any]:
    """``drama fit`` (``--resume`` when the folder holds a checkpoint) then ``drama evaluate``; the evaluation's
    summary (its last stdout line, JSON)."""
    folder = RunFolder(Path(trial_dir))
    full_env = {**os.environ, **env}
    if folder.holds_run():
        _run_logged(["fit", "--resume", trial_dir, "runtime.progress=false"], Path(log_path), full_env)
    else:
        _run_logged(["fit", "--config", base, *overrides], Path(log_path), full_env)
    line = _run_logged(["evaluate", trial_dir, "--episodes", str(episodes), "--no-progress"], Path(log_path),
                       full_env)
    return json.loads(line)


# ------------------------------------------------------------------ the driver
def evaluated(trial_dir: Path) -> bool:
    evaluations = RunFolder(trial_dir).evaluations
    return evaluations.is_dir() and any(evaluations.glob("*.json"))


class _Record:
    """``sweep.json``: the sweep's trials and their statuses, rewritten atomically at every change."""

    def __init__(self, sweep: Sweep) -> None:
        self.path = sweep.folder / SWEEP_FILE
        old = {}
        if self.path.is_file():
            try:
                old = {t["name"]: t for t in json.loads(self.path.read_text()).get("trials", [])}
            except (OSError, ValueError, KeyError, TypeError):
                old = {}
        self.data = {"name": sweep.name, "sweep_file": str(sweep.path), "base": str(sweep.base),
                     "trials": [{"name": t.name, "grid": t.grid, "status": old.get(t.name, {}).get("status",
                                                                                                     "pending"),
                                 "attempts": old.get(t.name, {}).get("attempts", 0)}
                                for t in sweep.trials]}
        self.by_name = {t["name"]: t for t in self.data["trials"]}

    def set(self, name: str, **fields: Any) -> None:
        self.by_name[name].update(fields)
        write_atomic(self.path, (json.dumps(self.data, indent=1) + "\n").encode())


def _point_run_at(trial_dir: Path, uri: str) -> None:
    """Re-point a trial's run-info file at ``uri`` (the same store: the sweep's sqlite file or its server)."""
    folder = RunFolder(trial_dir)
    info = folder.read_info()
    if info is not None and info["tracking_uri"] != uri:
        folder.write_info(info["mlflow_run_id"], uri)


def _create_experiment(uri: str, name: str, artifacts: Path) -> None:
    """The sweep's experiment, created once before the trials (two trials creating it at once would race, and the
    first one would put every trial's artifacts into its own folder)."""
    from mlflow.tracking import MlflowClient

    ensure_experiment(MlflowClient(tracking_uri=uri), name, artifacts)


def _say(message: str) -> None:
    print(f"sweep: {message}", file=sys.stderr, flush=True)


def run_sweep(sweep: Sweep, address: str | None = None, max_concurrent: int | None = None) -> dict[str, Any]:
    """Run every trial not yet evaluated; write ``sweep.json`` and the report; return the summary."""
    folder = sweep.folder
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    record = _Record(sweep)
    todo, skipped = [], []
    for trial in sweep.trials:
        if evaluated(folder / trial.name):
            skipped.append(trial.name)
            if record.by_name[trial.name]["status"] != "done":
                record.set(trial.name, status="done")
        else:
            todo.append(trial)
    total = len(sweep.trials)
    for name in skipped:
        _say(f"skip {name} (already evaluated)")
    failed: list[str] = []
    done: list[str] = []
    timings: dict[str, float] = {}
    server: MlflowServer | None = None
    own_uri = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    started_ray = False
    try:
        if todo:
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                t0 = time.monotonic()
                server = MlflowServer(own_uri, folder.resolve(), artifact_root=folder.resolve() / "mlartifacts",
                                      log_path=folder.resolve() / "logs" / "mlflow-server.log")
                uri = server.start()
                timings["mlflow_server_start_s"] = round(time.monotonic() - t0, 1)
                _say(f"MLflow server {uri} (store {own_uri})")
            _create_experiment(uri, sweep.name, folder / "mlartifacts")
            import ray

            t0 = time.monotonic()
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                cpus = os.cpu_count() or 1
                if max_concurrent:
                    cpus = max(cpus, math.ceil(max_concurrent * max(sweep.cpus, 0.01)))
                ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=100 * 1024 ** 2,
                         log_to_driver=False)
            started_ray = True
            timings["ray_start_s"] = round(time.monotonic() - t0, 1)
            _say(f"Ray started in {timings['ray_start_s']} s: {ray.cluster_resources()}")
            threads = str(max(1, int(sweep.cpus)))
            env = {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            task = ray.remote(run_trial).options(num_cpus=sweep.cpus, num_gpus=sweep.gpus,
                                                 max_retries=sweep.retries, retry_exceptions=True)
            pending: dict[Any, Trial] = {}
            queue = list(todo)
            finished = len(skipped)

            def submit() -> None:
                trial = queue.pop(0)
                trial_dir = (folder / trial.name).resolve()
                if server is not None:
                    _point_run_at(trial_dir, uri)  # a resumed trial logs to this server
                attempts = record.by_name[trial.name].get("attempts", 0) + 1
                record.set(trial.name, status="running", attempts=attempts, error=None)
                ref = task.remote(str(sweep.base.resolve()), sweep.trial_overrides(trial), str(trial_dir),
                                  sweep.episodes, str((folder / "logs" / f"{trial.name}.log").resolve()), env)
                pending[ref] = trial
                _say(f"[{finished + len(pending)}/{total}] start {trial.name}")

            while queue or pending:
                while queue and (not max_concurrent or len(pending) < max_concurrent):
                    submit()
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    trial = pending.pop(ref)
                    finished += 1
                    if server is not None:
                        _point_run_at((folder / trial.name).resolve(), own_uri)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the task's last error (RayTaskError) or a lost worker
                        cause = getattr(exc, "cause", None) or exc
                        message = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                        failed.append(trial.name)
                        record.set(trial.name, status="failed", error=message)
                        _say(f"[{finished}/{total}] failed {trial.name}: {message}")
                        continue
                    done.append(trial.name)
                    record.set(trial.name, status="done", error=None, mean_return=result.get("mean"),
                               evaluation=result.get("path"))
                    _say(f"[{finished}/{total}] done {trial.name} (return {result.get('mean')})")
        finished_dirs = [folder / t.name for t in sweep.trials if evaluated(folder / t.name)]
        report_paths: dict[str, str] = {}
        if finished_dirs:
            from drama.report import report

            report_paths = report(finished_dirs, out=folder / "report")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        if server is not None:
            server.stop()
    return {"sweep_dir": str(folder), "trials": total, "done": len(done), "failed": len(failed),
            "skipped": len(skipped), "failed_trials": failed, "report": report_paths.get("markdown"),
            "sweep_json": str(record.path), **timings}


def dry_run(sweep: Sweep) -> None:
    """One line per trial: its name and grid values (nothing started, nothing written)."""
    for trial in sweep.trials:
        print(f"{trial.name}  {' '.join(trial.overrides)}")
    print(json.dumps({"sweep": sweep.name, "sweep_dir": str(sweep.folder), "trials": len(sweep.trials)}))

