"""The run folder and what is persisted in it: the one module that owns its layout, ``run.json`` and the
checkpoint schema. Everything else asks :class:`RunFolder` for a path and calls the functions here to save or load.

Layout of ``<runtime.output_dir>/<run name>/``::

    config.yaml            the resolved configuration (written before anything else)
    run.json               {"mlflow_run_id", "tracking_uri"}: the run's MLflow record
    mlflow.db              the default MLflow store (sqlite), unless MLFLOW_TRACKING_URI is set
    mlartifacts/           MLflow artifacts of the run (visuals/, evaluations/ as below)
    checkpoints/last.ckpt  the training state (save_training_state / load_training_state)
    visuals/               imagination GIFs and reconstruction PNGs, by env step
    evaluations/           drama evaluate results (JSON) and their videos/

Checkpoint schema (one ``torch.save`` dict, written atomically: a temporary file, then a rename)::

    world_model, actor_critic                          module state dicts (through Fabric)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drama.config import ConfigError, DramaConfig, load_config, to_yaml

CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run.json"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
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
    mlflow_db = _InFolder(MLFLOW_DB_FILE)
    artifacts = _InFolder(ARTIFACTS_DIR)
    visuals = _InFolder(VISUALS_DIR)
    evaluations = _InFolder(EVALUATIONS_DIR)
    evaluation_videos = _InFolder(EVALUATION_VIDEOS_DIR)

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
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(to_yaml(cfg))

    def read_config(self, overrides: list[str] | None = None) -> DramaConfig:
        """The saved config plus ``overrides``; :class:`ConfigError` if this is not a run folder."""
        if not self.config.is_file():
            raise ConfigError(f"{self.root}: no {CONFIG_FILE} there (not a drama run directory)")
        return load_config(self.config, overrides or [])

    # ------------------------------------------------------------------ run.json
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else the sqlite store inside this folder."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db.resolve()}"

    def read_info(self) -> dict[str, str] | None:
        """``{"mlflow_run_id", "tracking_uri"}`` from ``run.json``, or None without one."""
        return json.loads(self.info.read_text()) if self.info.is_file() else None

    def write_info(self, run_id: str, tracking_uri: str) -> None:
        self.info.write_text(json.dumps({"mlflow_run_id": run_id, "tracking_uri": tracking_uri}) + "\n")


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


def _modules_and_optimizers(parts: TrainingParts) -> dict[str, Any]:
    return {"world_model": parts.world_model, "actor_critic": parts.actor_critic,
            "world_model_optimizer": parts.world_model.optimizer,
            "actor_critic_optimizer": parts.actor_critic.optimizer}


def save_training_state(fabric, path: Path, parts: TrainingParts, loop: dict[str, Any], observation: Any) -> Path:
    """Write the checkpoint (the schema above) atomically to ``path``."""
    state = _modules_and_optimizers(parts)
    state.update({
        "world_model_warmup": parts.world_model.lr_warmup.state_dict(),
        "actor_critic_warmup": parts.actor_critic.lr_warmup.state_dict(),
        "replay": parts.replay.state_dict(),
        "loop": loop,
        "acting": parts.acting.state_dict(),
        "env": parts.env.state_dict(),
        "observation": observation,
        "rng": rng_state(),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fabric.save(tmp, state)
    os.replace(tmp, path)
    return path


def load_training_state(fabric, path: Path, parts: TrainingParts) -> Restored:
    """Restore a checkpoint written by :func:`save_training_state`: modules, optimisers, replay, acting window,
    env and global RNG in place; returns the loop's counters and the next observation."""
    remainder = fabric.load(path, _modules_and_optimizers(parts), weights_only=False)  # RNG states hold numpy
    parts.world_model.lr_warmup.load_state_dict(remainder["world_model_warmup"])
    parts.actor_critic.lr_warmup.load_state_dict(remainder["actor_critic_warmup"])
    parts.replay.load_state_dict(remainder["replay"])
    parts.acting.load_state_dict(remainder["acting"])
    parts.env.load_state_dict(remainder["env"])
    set_rng_state(remainder["rng"])
    return Restored(loop=remainder["loop"], observation=remainder["observation"])


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
    """The models of ``run_dir``'s checkpoint (default: its last) on ``device`` (default: the run's
    ``runtime.device``); :class:`ConfigError` when the folder or checkpoint is missing."""
    from drama.build import build_models
    from drama.device import resolve_device
    from drama.envs import probe_env

    folder = RunFolder(Path(run_dir))
    cfg = folder.read_config([f"runtime.device={device}"] if device else [])
    path = folder.checkpoint if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    world_model, actor_critic = build_models(cfg, probe_env(cfg.env))
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key, module in zip(MODEL_KEYS, (world_model, actor_critic), strict=True):
        module.load_state_dict(state[key])
    target = resolve_device(cfg.runtime.device)
    return Agent(cfg, world_model.to(target).eval(), actor_critic.to(target).eval(), int(state["loop"]["step"]),
                 path)
