"""The run folder and what is persisted in it: the one module that owns its layout, ``run.json`` and the
training-state schema of its checkpoints. Everything else asks :class:`RunFolder` for a path and calls the functions
here to save or load the training state.

Layout of ``<runtime.output_dir>/<run name>/``::

    config.yaml            the resolved configuration (written before anything else)
    run.json               {"mlflow_run_id", "tracking_uri"}: the run's MLflow record
    mlflow.db              the default MLflow store (sqlite), unless MLFLOW_TRACKING_URI is set
    mlartifacts/           MLflow artifacts of the run (visuals/, evaluations/ as below)
    checkpoints/last.ckpt  the training state (save_training_state / load_training_state)
    checkpoints/previous.ckpt  the checkpoint before it: the fallback when last.ckpt is damaged
    visuals/               imagination GIFs and reconstruction PNGs, by env step
    evaluations/           drama evaluate results (JSON) and their videos/

Checkpoint files are written, verified and read by :mod:`drama.checkpoint` (the file format: header, SHA-256,
atomic replace keeping the previous file); this module says what they hold and where they live.

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

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drama.checkpoint import (
    CheckpointError,
    first_good,
    mismatch_error,
    read_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from drama.config import ConfigError, DramaConfig, load_config, to_yaml
from drama.metrics import ENV_STEPS, EPISODE_LENGTH, EPISODE_RETURN
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


class InFolder:
    """A path inside a folder, as an attribute of a folder class (:class:`RunFolder`, the sweep's ``SweepFolder``)."""

    def __init__(self, relative: str) -> None:
        self.relative = relative

    def __get__(self, folder: RunFolder | None, owner: type | None = None) -> Any:
        return self if folder is None else folder.root / self.relative


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (:mod:`drama.run` describes the layout)."""

    root: Path

    config = InFolder(CONFIG_FILE)
    info = InFolder(RUN_INFO_FILE)
    checkpoint = InFolder(CHECKPOINT_FILE)
    previous_checkpoint = InFolder(PREVIOUS_CHECKPOINT_FILE)
    mlflow_db = InFolder(MLFLOW_DB_FILE)
    artifacts = InFolder(ARTIFACTS_DIR)
    visuals = InFolder(VISUALS_DIR)
    evaluations = InFolder(EVALUATIONS_DIR)
    evaluation_videos = InFolder(EVALUATION_VIDEOS_DIR)
    lock = InFolder("run.lock")  # held by the one drama fit writing here, which puts its PID in it (drama.run_lock)

    @property
    def name(self) -> str:
        return self.root.name

    def last_good(self) -> str:
        """The checkpoint a run that stops on an error keeps, as said in its message."""
        return str(self.checkpoint) if self.checkpoint.exists() else "none (no checkpoint was saved yet)"

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
        return store_uri(self.mlflow_db)

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


def store_uri(db: Path) -> str:
    """The MLflow tracking URI of the sqlite file ``db`` (absolute): a run's or a sweep's own store."""
    return f"sqlite:///{db.resolve()}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file atomically: a temporary file beside it, flushed to disk, then renamed over it (removed if
    the write fails)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def newest_good_checkpoint(folder: RunFolder, warn: bool = True) -> Path:
    """The run folder's ``last.ckpt`` if it verifies, else its ``previous.ckpt`` (with one line on stderr saying
    so, unless not ``warn``), else :class:`CheckpointError`."""
    return first_good([folder.checkpoint, folder.previous_checkpoint], verify_checkpoint, warn)[0]


# ---------------------------------------------------------------------- the training state
@dataclass
class LoopState:
    """The loop's counters (the checkpoint's ``loop`` entry, saved as a dict)."""

    step: int = 0
    """env steps taken (= rows written)."""
    episodes: int = 0
    """finished episodes."""
    episode_return: float = 0.0
    """return of the running episode so far."""
    episode_length: int = 0
    """env steps of the running episode so far."""
    last_return: float | None = None
    """return of the last finished episode."""
    world_model_updates: int = 0
    actor_critic_updates: int = 0
    skipped_updates: int = 0
    """updates skipped because the buffer had too few valid starts (e.g. short episodes)."""
    returns: list[float] = field(default_factory=list)
    """returns of all finished episodes (for summaries)."""

    def count(self, reward: float, episode_end: bool) -> dict[str, float] | None:
        """Count one env step; at an episode's end, close the episode and return its metrics."""
        self.step, self.episode_return, self.episode_length = (self.step + 1, self.episode_return + reward,
                                                               self.episode_length + 1)
        if not episode_end:
            return None
        self.episodes, self.last_return = self.episodes + 1, self.episode_return
        self.returns.append(self.episode_return)
        ended = {EPISODE_RETURN: self.episode_return, EPISODE_LENGTH: self.episode_length,
                 "episode/index": self.episodes}
        self.episode_return, self.episode_length = 0.0, 0
        return ended

    def reached(self, target: float | None) -> bool:
        """Whether the mean of the last 10 episode returns reached ``target`` (None: no target)."""
        last = self.returns[-10:]
        return target is not None and len(last) == 10 and sum(last) / 10 >= target

    def progress(self) -> dict[str, float]:
        """The counters logged with every batch of metrics."""
        return {ENV_STEPS: self.step, "progress/world_model_updates": self.world_model_updates,
                "progress/actor_critic_updates": self.actor_critic_updates, "progress/episodes": self.episodes,
                "progress/skipped_updates": self.skipped_updates}


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
    (None: this process does). An ``OSError`` (e.g. a full disk) gets a note naming the checkpoint (by the env step
    in ``loop``), its likely size and that the last good one is intact."""
    path = Path(path)
    state = {key: obj.state_dict() for key, obj in _stateful(parts).items()}
    state.update({"loop": loop, "observation": observation, "rng": rng_state()})
    if fabric is None or fabric.is_global_zero:
        previous = path.with_name(Path(PREVIOUS_CHECKPOINT_FILE).name) if keep_previous else None
        try:
            write_checkpoint(path, state, previous if previous != path else None)
        except OSError as exc:
            size = f"about {path.stat().st_size / 2**20:,.0f} MiB like the last one, " if path.exists() else ""
            kept = f"the last good checkpoint {path} is intact" if path.exists() else "no checkpoint was saved before"
            exc.add_note(f"the checkpoint of env step {loop.get('step')}, {size}in {path.parent}; {kept}")
            raise
    return path


def load_training_state(fabric, path: Path, parts: TrainingParts, fallback: Path | None = None,
                        config: Path | None = None) -> Restored:
    """Restore a checkpoint written by :func:`save_training_state`: modules, optimisers, replay, acting window,
    env and global RNG in place; returns the loop's counters and the next observation.

    ``path`` is verified before anything is restored; when it is damaged or missing and ``fallback`` is given (the
    run folder's ``previous_checkpoint``), that one is loaded instead, with one line on stderr saying so.
    :class:`CheckpointError` when no candidate is good; :func:`drama.checkpoint.mismatch_error` when it does not fit
    ``parts`` (``config``: the config file that built them, for the message). ``fabric`` is unused (one process,
    one device)."""
    candidates = [Path(path)] if fallback is None else [Path(path), Path(fallback)]
    path, state = first_good(candidates, read_checkpoint)
    missing = [key for key in TRAINING_STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training state: it lacks {', '.join(missing)}")
    try:
        for key, obj in _stateful(parts).items():
            obj.load_state_dict(state[key])
    except RuntimeError as error:  # e.g. a config.yaml edited by hand to other model sizes
        raise mismatch_error(path, config or "the models it is loaded into", error) from None
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
