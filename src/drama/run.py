"""The run folder and what is persisted in it: the one module that owns its layout, ``run.json`` and the
checkpoint schema. Everything else asks :class:`RunFolder` for a path and calls the functions here to save or load.

Layout of ``<runtime.output_dir>/<run name>/``::

    config.yaml            the resolved configuration (written before anything else)
    run.json               {"mlflow_run_id", "tracking_uri"}: the run's MLflow record
    mlflow.db              the default MLflow store (sqlite), unless MLFLOW_TRACKING_URI is set
    mlartifacts/           MLflow artifacts of the run (visuals/, evaluations/ as below)
    checkpoints/last.ckpt  the training state (save_training_state / load_training_state)
    checkpoints/previous.ckpt  the checkpoint before it: the fallback when last.ckpt is damaged
    visuals/               imagination GIFs and reconstruction PNGs, by env step
    evaluations/           drama evaluate results (JSON) and their videos/

Checkpoint file: a 64-byte header (:data:`CHECKPOINT_HEADER`: magic ``DRAMACKP``, format version, payload length,
payload SHA-256), then the payload, one ``torch.save`` of the dict below. It is written into a temporary file next to
``last.ckpt`` (hashed as it is written, fsynced), the old ``last.ckpt`` becomes ``previous.ckpt``, the new file is
renamed to ``last.ckpt`` and the directory is fsynced; nothing is written anywhere else. Reading checks the header,
the length and the SHA-256 before unpickling anything; a damaged file raises :class:`CheckpointError`.

Checkpoint schema (the payload's dict)::

    world_model, actor_critic                          module state dicts
    world_model_optimizer, actor_critic_optimizer      LaProp states
    world_model_warmup, actor_critic_warmup            learning-rate warm-up schedulers
    replay                                             rows, writer cursor, sampler counters, sampler RNG
    loop                                               the loop's counters (env step, updates, episodes, returns)
    acting, env, observation                           acting window, env state, the observation to act on next
    rng                                                python, numpy, torch (and CUDA) RNG states
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch

from drama.config import ConfigError, DramaConfig, load_config, to_yaml
from drama.version import provenance

CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run.json"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
PREVIOUS_CHECKPOINT_FILE = "checkpoints/previous.ckpt"
"""The checkpoint ``last.ckpt`` replaced (kept as the fallback when the last one is damaged)."""
MLFLOW_DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
VISUALS_DIR = "visuals"
"""Imagination videos and reconstructions, in the run folder and as MLflow artifact path."""
EVALUATIONS_DIR = "evaluations"
"""Evaluation results, in the run folder and as MLflow artifact path."""
EVALUATION_VIDEOS_DIR = "evaluations/videos"
"""GIFs of evaluation episodes, in the run folder and as MLflow artifact path."""

MODEL_KEYS = ("world_model", "actor_critic")
"""Checkpoint entries holding the two models' weights (all an agent needs to act)."""


class _InFolder:
    """A path inside the run folder, as an attribute of :class:`RunFolder`."""

    def __init__(self, relative: str) -> None:
        self.relative = relative

    def __get__(self, folder: RunFolder | None, owner: type | None = None) -> Any:
        return self if folder is None else folder.root / self.relative


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (:mod:`drama.run` describes the layout)."""

    root: Path

    config = _InFolder(CONFIG_FILE)
    info = _InFolder(RUN_INFO_FILE)
    checkpoint = _InFolder(CHECKPOINT_FILE)
    previous_checkpoint = _InFolder(PREVIOUS_CHECKPOINT_FILE)
    mlflow_db = _InFolder(MLFLOW_DB_FILE)
    artifacts = _InFolder(ARTIFACTS_DIR)
    visuals = _InFolder(VISUALS_DIR)
    evaluations = _InFolder(EVALUATIONS_DIR)
    evaluation_videos = _InFolder(EVALUATION_VIDEOS_DIR)
    lock = _InFolder("run.lock")  # held by the one drama fit writing here, which puts its PID in it (drama.run_lock)

    @property
    def name(self) -> str:
        return self.root.name

    def artifact_path(self, path: Path) -> str:
        """The MLflow artifact folder of a file saved in this run folder: its folder relative to the root."""
        return path.parent.resolve().relative_to(self.root.resolve()).as_posix()

    def holds_run(self) -> bool:
        """Whether a run was already saved here (its checkpoint exists)."""
        return self.checkpoint.exists()

    # ------------------------------------------------------------------ config.yaml
    def write_config(self, cfg: DramaConfig) -> None:
        """Write ``config.yaml`` atomically (a crash leaves the old file or the new one, never half of one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, to_yaml(cfg).encode())

    def read_config(self, overrides: list[str] | None = None) -> DramaConfig:
        """The saved config plus ``overrides``; :class:`ConfigError` if this is not a run folder."""
        if not self.config.is_file():
            raise ConfigError(f"{self.root}: no {CONFIG_FILE} there (not a drama run directory)")
        return load_config(self.config, overrides or [])

    # ------------------------------------------------------------------ run.json
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else the sqlite store inside this folder."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.own_store_uri()

    def own_store_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db.resolve()}"

    def read_info(self) -> dict[str, str] | None:
        """``{"mlflow_run_id", "tracking_uri"}`` of ``run.json`` (None without one), the URI resolved for where the
        folder is now: the folder's own store is recorded relative to it, so a copied or moved folder reads its own
        copy of the store, not the original's."""
        if not self.info.is_file():
            return None
        info = json.loads(self.info.read_text())
        uri = info.get("tracking_uri") or self.own_store_uri()
        return {"mlflow_run_id": info["mlflow_run_id"], "tracking_uri": uri}

    def write_info(self, run_id: str, tracking_uri: str) -> None:
        """Record the run's MLflow id and store; the folder's own store as ``null`` (that is: relative to it); and
        the drama version and git commit that started the run (:func:`drama.version.provenance`, kept when the
        file is rewritten: on a resume, or when a sweep points the run at its server)."""
        own = tracking_uri == self.own_store_uri()
        made_by = provenance()
        if self.info.is_file():
            try:
                before = json.loads(self.info.read_text())
                made_by = {key: before[key] for key in made_by} if all(k in before for k in made_by) else made_by
            except (OSError, ValueError):
                pass
        write_atomic(self.info, (json.dumps({"mlflow_run_id": run_id, "tracking_uri": None if own else tracking_uri,
                                             "store": MLFLOW_DB_FILE if own else "external", **made_by})
                                 + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file atomically: a temporary file beside it, flushed to disk, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------- the checkpoint file
class CheckpointError(ConfigError):
    """A checkpoint file is missing, damaged or not one of ours; the message (one line) names the file."""


CHECKPOINT_MAGIC = b"DRAMACKP"
CHECKPOINT_VERSION = 1
"""Version of the file format (the header and how the payload is serialised), checked on load."""
CHECKPOINT_HEADER = struct.Struct("<8sI4xQ32s8x")
"""The fixed 64-byte header, little endian: magic (8 bytes), format version (uint32), 4 zero bytes, payload length
in bytes (uint64), SHA-256 of the payload (32 bytes), 8 zero bytes. The payload follows it to the end of the file."""
_CHUNK = 16 << 20  # bytes hashed per read when verifying


class _HashingWriter:
    """The write end ``torch.save`` writes into: every chunk is hashed and counted on its way to ``file``, so the
    payload is never held in memory a second time."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        self.file.write(view)
        return view.nbytes

    def flush(self) -> None:
        self.file.flush()


class _Payload(io.RawIOBase):
    """The payload of an open checkpoint file as a seekable file of its own (offsets past the header), for
    ``torch.load``."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self.file, self.offset, self.length, self.position = file, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + position)
        return self.position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(view.nbytes, self.length - self.position))
        self.file.seek(self.offset + self.position)
        read = self.file.readinto(view[:n]) or 0
        self.position += read
        return read


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the renames are as durable as the OS makes them
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_keeping_previous(new: Path, path: Path, previous: Path | None) -> None:
    """Rename ``new`` over ``path``; the old ``path`` (if any) becomes ``previous``. With hard links ``path`` exists
    at every moment; without them (some file systems) there is a moment with only ``previous``."""
    if previous is not None and path.exists():
        link = previous.with_name(previous.name + ".tmp")
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
        except OSError:
            os.replace(path, previous)
        else:
            os.replace(link, previous)
    os.replace(new, path)
    _fsync_directory(path.parent)


def write_checkpoint(path: Path, state: dict[str, Any], previous: Path | None = None) -> Path:
    """``torch.save`` ``state`` into ``path`` in the checkpoint format, atomically: a temporary file next to it
    (header, payload hashed while it is written, fsync), the old ``path`` renamed to ``previous`` (None: dropped),
    then the rename and a directory fsync. Nothing is written outside ``path``'s directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(bytes(CHECKPOINT_HEADER.size))  # no magic until the payload is complete
            writer = _HashingWriter(file)
            torch.save(state, writer)
            file.seek(0)
            file.write(CHECKPOINT_HEADER.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, writer.size,
                                              writer.sha256.digest()))
            file.flush()
            os.fsync(file.fileno())
        _replace_keeping_previous(tmp, path, previous)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _verify(file: IO[bytes], path: Path) -> int:
    """Check the header, length and SHA-256 of the open checkpoint ``file``; returns the payload length."""
    size = os.fstat(file.fileno()).st_size
    head = file.read(CHECKPOINT_HEADER.size)
    magic = head[: len(CHECKPOINT_MAGIC)]
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not CHECKPOINT_MAGIC.startswith(magic):
        hint = " (a plain torch.save file, from before the checkpoint format)" if head.startswith(b"PK\x03\x04") else ""
        raise CheckpointError(f"checkpoint {path} is not a drama checkpoint: it does not start with "
                              f"{CHECKPOINT_MAGIC.decode()}{hint}")
    if len(head) < CHECKPOINT_HEADER.size:
        raise CheckpointError(f"checkpoint {path} is truncated: {size} bytes, shorter than its "
                              f"{CHECKPOINT_HEADER.size}-byte header")
    _, version, length, digest = CHECKPOINT_HEADER.unpack(head)
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this drama reads version "
                              f"{CHECKPOINT_VERSION}")
    stored = size - CHECKPOINT_HEADER.size
    if stored < length:
        raise CheckpointError(f"checkpoint {path} is truncated: {stored} of its {length} payload bytes are there")
    if stored > length:
        raise CheckpointError(f"checkpoint {path} is damaged: {stored - length} unexpected bytes after its "
                              f"{length}-byte payload")
    sha256, buffer = hashlib.sha256(), bytearray(min(_CHUNK, max(length, 1)))
    view, left = memoryview(buffer), length
    while left:
        n = file.readinto(view[: min(left, len(buffer))])
        if not n:
            raise CheckpointError(f"checkpoint {path} is truncated: it shrank while being read")
        sha256.update(view[:n])
        left -= n
    if sha256.digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged: the SHA-256 of its payload ({sha256.hexdigest()[:16]}…) "
                              f"is not the one in its header ({digest.hex()[:16]}…)")
    return length


@contextmanager
def _verified_payload(path: Path) -> Iterator[_Payload]:
    """The payload of checkpoint ``path`` once verified, read through the same open file (so it is the verified
    file even if ``path`` is replaced meanwhile)."""
    try:
        file = open(path, "rb")  # closed below, once the caller has read the payload
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be opened: {exc.strerror or exc}") from None
    with file:
        length = _verify(file, path)
        yield _Payload(file, CHECKPOINT_HEADER.size, length)


def verify_checkpoint(path: Path) -> Path:
    """``path`` if it is an intact checkpoint (header, length, SHA-256; nothing is unpickled), else
    :class:`CheckpointError`."""
    with _verified_payload(Path(path)):
        return Path(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict saved in checkpoint ``path``, on the CPU, after verifying the file (:class:`CheckpointError` when it
    is missing or damaged).

    The file is read twice: once in 16 MiB chunks to check the SHA-256, then by ``torch.load`` from the same open
    file. That costs a second pass over the bytes (from the page cache, as a rule) but no second copy of a
    1.2 GB replay in memory, which reading the file into one verified buffer would.
    """
    path = Path(path)
    with _verified_payload(path) as payload:
        try:
            state = torch.load(payload, map_location="cpu", weights_only=False)  # RNG states hold numpy
        except Exception as exc:  # intact bytes that this torch cannot unpickle (e.g. written by a newer one)
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"checkpoint {path} is intact but cannot be loaded: {detail}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict but a {type(state).__name__}")
    return state


_T = TypeVar("_T")


def _first_good(candidates: list[Path], read: Callable[[Path], _T], warn: bool = True) -> tuple[Path, _T]:
    """``read`` of the first candidate that is good; one line on stderr (with ``warn``) when a later one is used,
    one :class:`CheckpointError` naming all of them when none is."""
    if not any(path.exists() for path in candidates):
        raise CheckpointError(f"no checkpoint at {candidates[0]}")
    errors: list[str] = []
    for path in candidates:
        try:
            value = read(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        if errors and warn:
            print(f"drama: warning: {'; '.join(errors)}; using {path} instead", file=sys.stderr, flush=True)
        return path, value
    raise CheckpointError(f"no good checkpoint: {'; '.join(errors)}")


def newest_good_checkpoint(folder: RunFolder, warn: bool = True) -> Path:
    """The run folder's ``last.ckpt`` if it verifies, else its ``previous.ckpt`` (with one line on stderr saying
    so, unless not ``warn``), else :class:`CheckpointError`."""
    return _first_good([folder.checkpoint, folder.previous_checkpoint], verify_checkpoint, warn)[0]


# ---------------------------------------------------------------------- the training state
@dataclass
class TrainingParts:
    """Everything a checkpoint holds, by reference: loading restores the stateful parts in place."""

    world_model: Any
    actor_critic: Any
    replay: Any
    acting: Any
    env: Any


@dataclass
class Restored:
    """The values (not objects) a checkpoint restores: the loop's counters and the next observation."""

    loop: dict[str, Any]
    observation: Any
    checkpoint: Path | None = None
    """the file they came from (the fallback one when the first was damaged)."""


TRAINING_STATE_KEYS = ("world_model", "actor_critic", "world_model_optimizer", "actor_critic_optimizer",
                       "world_model_warmup", "actor_critic_warmup", "replay", "loop", "acting", "env", "observation",
                       "rng")
"""The entries of a training-state checkpoint (the schema above)."""


def _stateful(parts: TrainingParts) -> dict[str, Any]:
    """The checkpoint entries restored in place with ``load_state_dict``: modules, optimisers (Fabric-wrapped or
    not: the same state dicts as ``fabric.save``), warm-up schedulers, replay, acting window and env."""
    return {"world_model": parts.world_model, "actor_critic": parts.actor_critic,
            "world_model_optimizer": parts.world_model.optimizer,
            "actor_critic_optimizer": parts.actor_critic.optimizer,
            "world_model_warmup": parts.world_model.lr_warmup, "actor_critic_warmup": parts.actor_critic.lr_warmup,
            "replay": parts.replay, "acting": parts.acting, "env": parts.env}


def save_training_state(fabric, path: Path, parts: TrainingParts, loop: dict[str, Any], observation: Any,
                        keep_previous: bool = True) -> Path:
    """Write the checkpoint (the schema above) atomically to ``path``; the file it replaces becomes
    ``previous.ckpt`` next to it (unless not ``keep_previous``). ``fabric``: only its global-zero process writes
    (None: this process does)."""
    path = Path(path)
    state = {key: obj.state_dict() for key, obj in _stateful(parts).items()}
    state.update({"loop": loop, "observation": observation, "rng": rng_state()})
    if fabric is None or fabric.is_global_zero:
        previous = path.with_name(Path(PREVIOUS_CHECKPOINT_FILE).name) if keep_previous else None
        write_checkpoint(path, state, previous if previous != path else None)
    return path


def load_training_state(fabric, path: Path, parts: TrainingParts, fallback: Path | None = None) -> Restored:
    """Restore a checkpoint written by :func:`save_training_state`: modules, optimisers, replay, acting window,
    env and global RNG in place; returns the loop's counters and the next observation.

    ``path`` is verified before anything is restored; when it is damaged or missing and ``fallback`` is given (the
    run folder's ``previous_checkpoint``), that one is loaded instead, with one line on stderr saying so.
    :class:`CheckpointError` when no candidate is good. ``fabric`` is unused (one process, one device)."""
    candidates = [Path(path)] if fallback is None else [Path(path), Path(fallback)]
    path, state = _first_good(candidates, read_checkpoint)
    missing = [key for key in TRAINING_STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training state: it lacks {', '.join(missing)}")
    for key, obj in _stateful(parts).items():
        obj.load_state_dict(state[key])
    set_rng_state(state["rng"])
    return Restored(loop=state["loop"], observation=state["observation"], checkpoint=path)


def rng_state() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- a trained agent
@dataclass
class Agent:
    """A run's trained models, ready to act (eval mode, on their device)."""

    cfg: DramaConfig
    world_model: Any
    actor_critic: Any
    step: int
    """env step at which the checkpoint was written."""
    checkpoint: Path


def load_agent(run_dir: Path, checkpoint: Path | None = None, device: str | None = None) -> Agent:
    """The models of ``run_dir``'s checkpoint on ``device`` (default: the run's ``runtime.device``). Default
    checkpoint: the last one, or the previous one when the last is damaged (one line on stderr says so).
    :class:`ConfigError` when the folder is not a run; :class:`CheckpointError` when the checkpoint is missing or
    damaged."""
    from drama.build import build_models
    from drama.device import resolve_device, resolve_precision
    from drama.envs import probe_env

    folder = RunFolder(Path(run_dir))
    cfg = folder.read_config([f"runtime.device={device}"] if device else [])
    if checkpoint is None:
        path, state = _first_good([folder.checkpoint, folder.previous_checkpoint], read_checkpoint)
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        state = read_checkpoint(path)
    missing = [key for key in (*MODEL_KEYS, "loop") if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training state: it lacks {', '.join(missing)}")
    world_model, actor_critic = build_models(cfg, probe_env(cfg.env))
    for key, module in zip(MODEL_KEYS, (world_model, actor_critic), strict=True):
        module.load_state_dict(state[key])
    target = resolve_device(cfg.runtime.device)
    world_model, actor_critic = _with_precision(world_model, actor_critic, target,
                                                resolve_precision(cfg.runtime.precision, target))
    return Agent(cfg, world_model.eval(), actor_critic.eval(), int(state["loop"]["step"]), path)


def _with_precision(world_model: Any, actor_critic: Any, device: torch.device, precision: str) -> tuple[Any, Any]:
    """Both models on ``device`` under ``precision`` (the rule training used: acting, imagination and evaluation
    run under the training precision), through a Fabric without loggers as in ``drama fit``."""
    from drama.device import make_fabric

    fabric = make_fabric(device, precision)
    return tuple(fabric.setup_module(module).module for module in (world_model, actor_critic))
