"""Pre-flight checks: what this machine can refuse about a command, before the command writes anything.

The pure configuration rules are :func:`drama.config.validate`'s; the checks here need the machine or the file
system: is the torch device there, can the output folder be created and written, does the MLflow store answer.
``drama fit`` (a new run and ``--resume``), ``drama evaluate`` and ``drama report`` call them before they create or
change a file; each raises :class:`ConfigError` with a one-line message ``{key}={value!r} is invalid: ...``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import importlib.util
import os
import shutil
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from drama.checkpoint import CheckpointError
from drama.config import RUNTIME_DEVICES, ConfigError, DramaConfig, check_updates_happen, one_line, satisfies
from drama.run import RunFolder, newest_good_checkpoint

HEALTH_TIMEOUT_S = 5.0
"""How long an MLflow server gets to answer ``GET <uri>/health`` (seconds)."""
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
"""MLflow 3 tracking-store schemes (plus those of installed ``mlflow.tracking_store`` plugins); a database scheme
may name its driver (``postgresql+psycopg2``). The file store (a path or ``file:``) is refused by MLflow 3."""
CXX_COMPILERS = ("g++", "c++", "clang++")
"""C++ compilers torch.compile (inductor) can build CPU kernels with (besides ``$CXX``)."""


def _invalid(key: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is invalid: {why}")


# ---------------------------------------------------------------------- the device
def check_device(name: str, key: str = "runtime.device") -> None:
    """``name`` (a ``runtime.device`` value) exists on this machine: ``cuda``/``cuda:N`` with that many CUDA devices,
    ``mps`` with MPS; ``auto`` and ``cpu`` always do."""
    import torch

    if not satisfies(name, {"choices": RUNTIME_DEVICES}):
        raise _invalid(key, name, f"allowed: {', '.join(RUNTIME_DEVICES)}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise _invalid(key, name, f"no CUDA device on this machine (torch {torch.__version__}, {build}): "
                                      "use cpu or auto")
        index, count = (int(name.partition(":")[2]) if ":" in name else 0), torch.cuda.device_count()
        if index >= count:
            raise _invalid(key, name, f"this machine has {count} CUDA device{'s' * (count != 1)} "
                                      f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise _invalid(key, name, "MPS is not available on this machine: use cpu or auto")


def check_backbone(cfg: DramaConfig, device: str | None = None) -> None:
    """``world_model.backbone.impl=kernel`` needs the mamba-ssm kernels and a CUDA device (``device``, default
    ``runtime.device``)."""
    if cfg.world_model.backbone.impl == "kernel":
        from drama.nn.backbones.kernels import kernel_unavailable_reason

        reason = kernel_unavailable_reason(device or cfg.runtime.device)
        if reason is not None:
            raise ConfigError(f"world_model.backbone.impl='kernel' is invalid: {reason} (use auto or torch)")


def check_runtime(cfg: DramaConfig) -> None:
    """``runtime.device`` exists here, and what depends on it: ``replay.device=cuda`` needs a CUDA training device,
    ``bf16-mixed`` on CUDA needs bf16 support, ``torch.compile`` needs a C++ compiler on the CPU and triton on CUDA,
    the backbone's kernels need CUDA (:func:`check_backbone`)."""
    import torch

    from drama.device import resolve_device

    check_device(cfg.runtime.device)
    check_backbone(cfg)
    device = resolve_device(cfg.runtime.device)
    if cfg.replay.device == "cuda" and device.type != "cuda":
        raise _invalid("replay.device", "cuda", f"needs a CUDA training device (runtime.device={cfg.runtime.device!r} "
                                                f"is {device.type} on this machine): use auto or cpu")
    if cfg.runtime.precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise _invalid("runtime.precision", "bf16-mixed", f"{torch.cuda.get_device_name(device)} has no bf16 support: "
                                                          "use 32-true or auto")
    if cfg.runtime.compile != "none":
        if device.type == "cpu" and not (os.environ.get("CXX") or any(map(shutil.which, CXX_COMPILERS))):
            raise _invalid("runtime.compile", cfg.runtime.compile,
                           f"torch.compile on the CPU needs a C++ compiler ($CXX or one of {', '.join(CXX_COMPILERS)})"
                           ": use none")
        if device.type == "cuda" and importlib.util.find_spec("triton") is None:
            raise _invalid("runtime.compile", cfg.runtime.compile, "torch.compile on CUDA needs triton: use none")


# ---------------------------------------------------------------------- the models
def check_model_shapes(cfg: DramaConfig, obs_shape: tuple[int, ...]) -> None:
    """Pixel observations: the conv encoder's stride-2 layers halve the frame ``len(mults) - 1`` times and the
    decoder doubles it back, so each side must be divisible by ``2 ** (len(mults) - 1)``."""
    if len(obs_shape) != 3:
        return
    mults = list(cfg.world_model.encoder.mults)
    height, width = obs_shape[1:]
    halvings = 0
    while height % 2 ** (halvings + 1) == 0 and width % 2 ** (halvings + 1) == 0:
        halvings += 1
    if len(mults) - 1 > halvings:
        raise _invalid("world_model.encoder.mults", mults,
                       f"{len(mults)} conv layers halve the {height}x{width} frames {len(mults) - 1} times, more than "
                       f"the decoder can mirror: at most {halvings + 1} layers")


# ---------------------------------------------------------------------- folders
def _name_max(existing: Path) -> int:
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, a loop of links: checked below
        return False


def check_writable_folder(path: Path, key: str, value: object | None = None) -> None:
    """``path`` is a folder this process can write in, or one it can create: none of its parts is a file, the
    nearest existing one is a writable folder and every name fits the file system. Creates nothing."""
    value = str(path) if value is None else value
    existing = path
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _invalid(key, value, f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _invalid(key, value, f"{existing} is not writable by this user")
    limit = _name_max(existing)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise _invalid(key, value, f"the name {part[:24]}... is {len(os.fsencode(part))} bytes long, "
                                       f"longer than the file system allows ({limit})")


def check_writable_file(path: Path, key: str, value: object | None = None) -> None:
    """``path`` can be written: an existing writable file, or one that can be created in a writable folder."""
    value = str(path) if value is None else value
    if path.is_dir():
        raise _invalid(key, value, f"{path} is a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise _invalid(key, value, f"{path} is not writable by this user")
    check_writable_folder(path.parent, key, value)


# ---------------------------------------------------------------------- MLflow
def check_tracking_uri(uri: str, key: str = "MLFLOW_TRACKING_URI") -> None:
    """An MLflow store this process can use: an http(s) server that answers within :data:`HEALTH_TIMEOUT_S`, a
    sqlite file that can be written (or created), or another MLflow 3 store scheme."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if len(scheme) == 1 or scheme in ("", "file"):  # a bare path (or a Windows drive letter)
        raise _invalid(key, uri, "MLflow 3 no longer opens a file store: use sqlite:///path/to/mlflow.db or an "
                                 "http(s) server URI")
    if scheme.split("+")[0] not in TRACKING_SCHEMES and scheme not in _plugin_schemes():
        raise _invalid(key, uri, f"unknown MLflow store scheme {scheme!r} (known: {', '.join(TRACKING_SCHEMES)})")
    if scheme in ("http", "https"):
        _check_server(uri, key)
    elif scheme.split("+")[0] == "sqlite":
        path = uri.split("://", 1)[1].split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path  # sqlite:///relative, sqlite:////absolute
        if path and path != ":memory:":
            check_writable_file(Path(path), key, uri)
            check_sqlite_store(Path(path), key, uri)


MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics"})
"""Tables every MLflow sqlite store has: a database with tables but none of these is someone else's."""


def check_sqlite_store(path: Path, key: str, value: object) -> None:
    """An existing sqlite store file is an SQLite database that is empty or MLflow's (read-only look, nothing
    written): a damaged or foreign file is one line here rather than a traceback from MLflow's migrations."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise _invalid(key, value, f"{path} is not a readable SQLite database ({one_line(exc)}): move it away, or "
                                   "point the run at another store") from None
    if tables and not MLFLOW_TABLES <= tables:
        raise _invalid(key, value, f"{path} is an SQLite database but not an MLflow store (no "
                                   f"{', '.join(sorted(MLFLOW_TABLES - tables))} table)") from None


def _plugin_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {entry.name for entry in entry_points(group="mlflow.tracking_store")}


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client sends (its environment variables): a bearer token or basic auth."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _check_server(uri: str, key: str) -> None:
    """The server answers ``/health`` and, with the credentials the client will send, a real API call (one
    experiment searched): any non-2xx answer is one line naming the URI and the status."""
    for url in (uri.rstrip("/") + "/health", uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"):
        _get(url, uri, key)


def _get(url: str, uri: str, key: str) -> None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth_headers()), timeout=HEALTH_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise _invalid(key, uri, f"GET {url} answered HTTP {exc.code} ({exc.reason}): the server refuses these "
                                     "credentials (MLflow's client sends MLFLOW_TRACKING_TOKEN, or "
                                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)") from None
        raise _invalid(key, uri, f"GET {url} answered HTTP {exc.code} ({exc.reason}): not an MLflow server, or one "
                                 "that cannot be reached through this network") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, unknown host, timed out, malformed
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, OSError) and reason.errno == errno.ECONNREFUSED:
            reason = "connection refused"
        raise _invalid(key, uri, f"no MLflow server answers GET {url} within {HEALTH_TIMEOUT_S:g} s "
                                 f"({one_line(reason)})") from None


def recorded_tracking_uri(folder: RunFolder) -> str | None:
    """The MLflow store named by the folder's run-info file (None without one); a damaged file is a
    :class:`ConfigError`."""
    try:
        info = folder.read_info()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{folder.info} is not a readable run-info file ({type(exc).__name__}): restore it or "
                          f"remove it (the run then is not logged to MLflow)") from None
    return None if info is None else str(info["tracking_uri"])


def _store_key() -> str:
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the run's MLflow store"


# ---------------------------------------------------------------------- per command
def check_new_run(cfg: DramaConfig, folder: RunFolder) -> None:
    """``drama fit`` of a new run in ``folder``: the device, a schedule that reaches an update before
    ``train.total_steps``, an experiment name, a run folder that can be created and written, and the MLflow
    store."""
    check_runtime(cfg)
    check_updates_happen(cfg, cfg.train.total_steps, "train.total_steps")
    if not cfg.runtime.experiment.strip():
        raise _invalid("runtime.experiment", cfg.runtime.experiment, "MLflow needs a non-empty experiment name")
    check_writable_folder(Path(cfg.runtime.output_dir), "runtime.output_dir", cfg.runtime.output_dir)
    check_writable_folder(folder.root, "runtime.run_name", folder.name)
    check_tracking_uri(folder.tracking_uri(), _store_key())


def check_resume(cfg: DramaConfig, folder: RunFolder) -> None:
    """``drama fit --resume`` of ``folder``: the device of the saved config, a checkpoint that verifies (the last
    or the previous one), the folder and its checkpoints can be written, and the run's MLflow store (recorded in its
    run-info file, else the one a new record would use)."""
    check_runtime(cfg)
    try:
        newest_good_checkpoint(folder, warn=False)  # the loader says which one it uses
    except CheckpointError as exc:
        raise type(exc)(f"--resume {folder.root}: {exc}") from None
    for path in (folder.root, folder.checkpoint.parent):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--resume {folder.root}: {path} is not writable by this user")
    uri = recorded_tracking_uri(folder)
    check_tracking_uri(uri or folder.tracking_uri(), f"{folder.info} tracking_uri" if uri else _store_key())


def check_evaluation(folder: RunFolder, device: str | None) -> None:
    """``drama evaluate`` of ``folder``: a run folder whose device (``--device``, else the run's) exists here and
    can run its backbone, whose ``evaluations/`` can be written and whose MLflow store answers."""
    cfg = folder.read_config()
    if device is not None:
        check_device(device, "--device")
    else:
        try:
            check_device(cfg.runtime.device)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the run's {folder.config.name}; pass --device cpu)") from None
    check_backbone(cfg, device)
    check_writable_folder(folder.root, "RUN_DIR", str(folder.root))
    check_writable_folder(folder.evaluations, "RUN_DIR", str(folder.root))
    uri = recorded_tracking_uri(folder)
    if uri is not None:
        check_tracking_uri(uri, f"{folder.info} tracking_uri")


def check_report(inputs: list[str], out: str) -> None:
    """``drama report``: ``--out`` can be created and written; the MLflow stores of the runs answer (the learning
    curves are read from them)."""
    check_writable_folder(Path(out), "--out", out)
    for item in inputs:
        folder = RunFolder(Path(item))
        if folder.root.is_dir() and folder.info.is_file():
            uri = recorded_tracking_uri(folder)
            if uri is not None:
                check_tracking_uri(uri, f"{folder.info} tracking_uri")

