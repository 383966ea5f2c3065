"""Construct the models from a resolved config and an environment spec, the whole training system (Fabric, env,
models set up on the device, replay) that ``drama fit`` and ``drama bench`` share, and a run's trained agent
(:func:`load_agent`: its models from its checkpoint, for ``drama evaluate`` and your own code)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from drama.actor_critic import ActorCritic
from drama.checkpoint import CheckpointError, NoCheckpoint, first_good, mismatch_error, read_checkpoint
from drama.config import DramaConfig
from drama.device import (
    AutocastRuntime,
    FabricRuntime,
    Runtime,
    make_fabric,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from drama.envs.spec import EnvSpec
from drama.nn.encoders import set_memory_format
from drama.run import MODEL_KEYS, RunFolder
from drama.world_model import WorldModel


def build_models(cfg: DramaConfig, spec: EnvSpec, runtime: Runtime | None = None) -> tuple[WorldModel, ActorCritic]:
    """The world model for ``spec``'s observations and actions, and the actor-critic on its features, both handed
    ``runtime`` (how they run: :mod:`drama.device`; default plain float32 PyTorch); conv layers in the layout of
    ``runtime.channels_last`` (``auto`` resolved for ``runtime.device``). What this machine can refuse
    (``impl=kernel`` without the kernels) is :func:`drama.preflight.check_backbone`'s, checked by the commands."""
    world_model = WorldModel(cfg.world_model, spec.obs_shape, spec.num_actions)
    if world_model.pixels:
        channels_last = resolve_channels_last(cfg.runtime.channels_last, resolve_device(cfg.runtime.device))
        set_memory_format(world_model.encoder, channels_last)
        set_memory_format(world_model.decoder, channels_last)
    actor_critic = ActorCritic(cfg.actor_critic, world_model.feature_dim, spec.num_actions,
                               cfg.world_model.two_hot)
    if runtime is not None:
        world_model.runtime = actor_critic.runtime = runtime
    return world_model, actor_critic


@dataclass
class TrainingSystem:
    """What the loop coordinates, built and placed on the device (:func:`build_training_system`)."""

    fabric: Any
    env: Any
    world_model: WorldModel
    actor_critic: ActorCritic
    replay: Any


def build_training_system(cfg: DramaConfig, device: torch.device, precision: str) -> TrainingSystem:
    """Fabric on ``device`` with ``precision``, the env, both models set up with their optimisers
    (the unwrapped modules, hot paths compiled per ``runtime.compile``) and the replay with its seeded generator."""

    from drama.data.replay import Replay, resolve_replay_device
    from drama.envs.runner import EnvRunner
    from drama.nn.compile import compile_hot_paths

    fabric = make_fabric(device, precision)
    env = EnvRunner(cfg.env, cfg.runtime.seed)
    world_model, actor_critic = build_models(cfg, env.spec, FabricRuntime(fabric))
    world_model, _ = fabric.setup(world_model, world_model.configure_optimizers())
    actor_critic, _ = fabric.setup(actor_critic, actor_critic.configure_optimizers())
    world_model, actor_critic = world_model.module, actor_critic.module
    compile_hot_paths(world_model, actor_critic, cfg.runtime.compile)
    generator = torch.Generator().manual_seed(cfg.runtime.seed)
    row_bytes = math.prod(env.spec.obs_shape) * (1 if world_model.pixels else 4) + 32  # + action, reward, flags
    replay_device = resolve_replay_device(cfg.replay.device, fabric.device, row_bytes, cfg.replay.capacity)
    replay = Replay(cfg.replay, cfg.train.batch_size, cfg.imagination.batch_size, generator=generator,
                    device=replay_device, batch_device=fabric.device)
    return TrainingSystem(fabric, env, world_model, actor_critic, replay)


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
    :class:`ConfigError` when the folder is not a run or the checkpoint does not fit its config;
    :class:`CheckpointError` when the checkpoint is missing or damaged."""
    from drama.envs import probe_env

    folder = RunFolder(Path(run_dir))
    cfg = folder.read_config([f"runtime.device={device}"] if device else [])
    if checkpoint is None:
        path, state = first_good([folder.checkpoint, folder.previous_checkpoint], read_checkpoint)
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise NoCheckpoint(f"no checkpoint at {path}")
        state = read_checkpoint(path)
    missing = [key for key in (*MODEL_KEYS, "loop") if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training state: it lacks {', '.join(missing)}")
    world_model, actor_critic = build_models(cfg, probe_env(cfg.env))
    try:
        for key, module in zip(MODEL_KEYS, (world_model, actor_critic), strict=True):
            module.load_state_dict(state[key])
    except RuntimeError as error:  # e.g. a config.yaml edited by hand to other model sizes
        raise mismatch_error(path, folder.config, error) from None
    world_model, actor_critic = ready_to_act(cfg, world_model, actor_critic)
    return Agent(cfg, world_model, actor_critic, int(state["loop"]["step"]), path)


def ready_to_act(cfg: DramaConfig, world_model: WorldModel, actor_critic: ActorCritic) -> tuple[Any, Any]:
    """Both models in eval mode on ``runtime.device`` under the precision ``runtime.precision`` resolves to there
    (the rule training used: acting, imagination and evaluation run under the training precision: an
    :class:`~drama.device.AutocastRuntime`, no Fabric). What :func:`load_agent` and the evaluation benchmarks act
    with."""
    device = resolve_device(cfg.runtime.device)
    runtime = AutocastRuntime(device, resolve_precision(cfg.runtime.precision, device))
    for module in (world_model, actor_critic):
        module.runtime = runtime
    return world_model.to(device).eval(), actor_critic.to(device).eval()
