"""Typed configuration (OmegaConf structured dataclasses).

Every field is documented where it is declared, with its unit where it has one. Defaults are the paper's
(SPEC Appendix A, decisions of SPEC section 0). ``load_config`` merges a YAML file and ``key=value`` overrides
onto these defaults and validates the result; every user-facing problem raises :class:`ConfigError` whose
message is one line naming the offending key and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

BACKBONES = ("mamba2", "mamba", "gru", "transformer")
"""Dynamics backbones (``world_model.backbone.name``)."""
BACKBONE_IMPLS = ("auto", "torch", "kernel")
"""Execution paths of the Mamba backbones (``world_model.backbone.impl``)."""
KERNEL_BACKBONES = ("mamba2", "mamba")
"""Backbones with a mamba-ssm kernel path."""
SAMPLERS = ("dfs", "uniform")
"""Replay start samplers (``replay.sampler``)."""
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes of the hot paths (``runtime.compile``; none = eager)."""


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line."""


@dataclass
class EnvConfig:
    id: str = "ALE/Pong-v5"
    """gymnasium environment id; ``ALE/*`` ids use the Atari protocol (SPEC 1.1), others vector observations."""
    action_repeat: int = 4
    """Atari: times each action is repeated (raw frames); rewards are summed, the last 2 frames max-pooled."""
    noop_max: int = 0
    """Atari: at most this many random no-op raw frames after each reset (frames; 0 = off, the reference)."""
    reseed: str = "same"
    """reset seeding: same (every reset reuses the run seed, the reference) or sequence (seed + k at reset k)."""
    max_episode_frames: int = 108_000
    """Atari: episode time limit (raw frames; 108k = 27k agent steps); vector envs keep their own limit."""


@dataclass
class EncoderConfig:
    depth: int = 16
    """channels of the first conv layer (channels); layer i has ``depth * mults[i]``."""
    mults: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 4])
    """per-layer channel multipliers of the conv encoder; the decoder mirrors them (SPEC 2.2, 2.4)."""
    kernel: int = 5
    """conv / transposed-conv kernel size (pixels), 'same' padding."""
    mlp_hidden: int = 256
    """width of the MLP encoder/decoder used for vector observations (units; SPEC 2.11)."""
    mlp_layers: int = 2
    """hidden layers of the MLP encoder/decoder for vector observations (layers)."""


@dataclass
class BackboneConfig:
    name: str = "mamba2"
    """dynamics sequence model: mamba2 (default), mamba (Mamba-1), gru or transformer (SPEC 2.5)."""
    impl: str = "auto"
    """mamba2/mamba execution path: auto (mamba-ssm kernels on CUDA when importable, else torch), torch, kernel."""
    n_layer: int = 2
    """number of residual blocks (layers)."""
    d_state: int = 16
    """SSM state size N per head (state dims)."""
    expand: int = 2
    """inner width factor: d_inner = expand * hidden_dim."""
    headdim: int = 64
    """Mamba-2 head dimension P (channels); nheads = d_inner / headdim."""
    ngroups: int = 1
    """Mamba-2 groups sharing B and C (groups)."""
    d_conv: int = 4
    """depthwise causal conv width (time steps)."""
    chunk_size: int = 256
    """chunk length Q of the chunked SSD scan (time steps); any value >= 1 gives the same result."""
    dt_rank: int = 0
    """Mamba-1 rank of the step-size projection (dims); 0 = ceil(hidden_dim / 16)."""
    heads: int = 8
    """transformer attention heads (heads); must divide hidden_dim."""
    ffn_dim: int = 1024
    """transformer feed-forward hidden width (units)."""
    dropout: float = 0.1
    """transformer dropout on attention weights and block outputs (probability); off in acting and imagination."""
    max_length: int = 128
    """transformer learned positions (tokens): the longest sequence it can read (training, acting, imagination)."""


@dataclass
class HeadConfig:
    hidden: int = 256
    """hidden width of the reward/termination MLP (units)."""
    layers: int = 1
    """hidden layers of the reward/termination MLP (layers)."""


@dataclass
class TwoHotConfig:
    bins: int = 255
    """number of two-hot bins (bins)."""
    low: float = -20.0
    """lowest bin in symlog space."""
    high: float = 20.0
    """highest bin in symlog space."""


@dataclass
class OptimConfig:
    lr: float = 4e-5
    """LaProp learning rate (per optimiser step)."""
    eps: float = 1e-20
    """LaProp epsilon."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """LaProp (beta1, beta2)."""
    warmup_steps: int = 1000
    """linear learning-rate warm-up length (optimiser steps): factor min(1, (k+1)/warmup_steps)."""
    max_grad_norm: float = 1000.0
    """global gradient-norm clip (L2 norm)."""


@dataclass
class WorldModelLossConfig:
    reconstruction: float = 1.0
    """weight of the reconstruction loss (sum over pixels, mean over B*L)."""
    reward: float = 1.0
    """weight of the symlog two-hot reward loss."""
    termination: float = 1.0
    """weight of the termination BCE loss."""
    dynamics: float = 1.0
    """weight of KL(sg(q_{t+1}) || p_t) (SPEC 2.7)."""
    representation: float = 0.1
    """weight of KL(q_{t+1} || sg(p_t)) (SPEC 2.7)."""
    free_bits: float = 1.0
    """free bits (nats): the KL terms are max(free_bits, KL)."""
    free_bits_mode: str = "batch"
    """where free bits clip: batch (the reference: on the batch-mean KL) or step (per time step, DreamerV3)."""


@dataclass
class WorldModelConfig:
    stoch_dim: int = 32
    """number of categorical latent variables (variables)."""
    class_dim: int = 32
    """classes per categorical latent variable (classes)."""
    hidden_dim: int = 512
    """width of the sequence model output h (units)."""
    unimix: float = 0.01
    """uniform mixture on the latent categoricals (fraction)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """observation encoder/decoder."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """dynamics sequence model."""
    reward_head: HeadConfig = field(default_factory=HeadConfig)
    """reward head on h (SPEC 2.6)."""
    termination_head: HeadConfig = field(default_factory=HeadConfig)
    """termination head on h (SPEC 2.6)."""
    two_hot: TwoHotConfig = field(default_factory=TwoHotConfig)
    """two-hot bins of the reward head (and the critic)."""
    loss: WorldModelLossConfig = field(default_factory=WorldModelLossConfig)
    """loss weights and free bits."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """world-model optimiser (LaProp)."""


@dataclass
class ActorCriticConfig:
    num_layers: int = 3
    """hidden layers of actor and critic (layers)."""
    actor_hidden: int = 256
    """actor hidden width (units)."""
    critic_hidden: int = 512
    """critic hidden width (units)."""
    gamma: float = 0.985
    """discount per env step."""
    lambda_: float = 0.95
    """lambda of the lambda-return."""
    bootstrap: str = "textbook"
    """lambda-return bootstrap: textbook (v[t+1]) or reference (v[t], STORM/DRAMA's formula, SPEC B3)."""
    entropy_coef: float = 3e-4
    """entropy bonus coefficient."""
    slow_critic_decay: float = 0.98
    """EMA decay of the slow critic per update."""
    return_ema_decay: float = 0.99
    """EMA decay of the 5th/95th return percentiles per update."""
    return_percentiles: list[float] = field(default_factory=lambda: [0.05, 0.95])
    """low and high return percentiles (fractions) of the return scale S = P_high - P_low."""
    vecnorm_clip: float = 10.0
    """clip of the actor's normalised input (standard deviations)."""
    vecnorm_eps: float = 1e-8
    """epsilon of the actor's input normalisation."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_grad_norm=100.0))
    """actor-critic optimiser (LaProp)."""


REPLAY_DEVICES = ("auto", "cpu", "cuda")
"""Allowed values of ``replay.device``."""


@dataclass
class ReplayConfig:
    capacity: int = 100_000
    """replay buffer size (env steps); the oldest rows are overwritten."""
    sampler: str = "dfs"
    """start sampler: dfs (dynamic frequency-based sampling, SPEC 5) or uniform (STORM: uniform, with replacement)."""
    tau: float = 10.0
    """DFS temperature of world-model starts: p ~ exp(-c/tau) (sample counts)."""
    imagination_tau: float = 10.0
    """DFS temperature of imagination starts (sample counts)."""
    alpha: float = 1.0
    """DFS imagination-count penalty alpha (SPEC 5.3)."""
    beta: float = 1.0
    """DFS penalty beta on max(0, c - m/s) (SPEC 5.3)."""
    device: str = "auto"
    """where the stored rows live: auto (the training device when it is CUDA and the full buffer needs at most a
    quarter of its free memory, else cpu), cpu (batches copied through pinned memory to a CUDA device) or cuda
    (the training device, which must then be CUDA)."""


@dataclass
class TrainConfig:
    total_steps: int = 105_000
    """env steps of the run (agent steps, after action repeat)."""
    learning_steps: int = 100_000
    """no update after this env step (both models freeze; the rest lets the last episode finish)."""
    warmup_steps: int = 1032
    """random-action env steps before the first update (SPEC 5.4)."""
    world_model_every: int = 1
    """env steps between world-model updates (env steps)."""
    world_model_updates: int = 1
    """world-model updates each time (updates)."""
    actor_critic_every: int = 1
    """env steps between imagination + actor-critic updates (env steps)."""
    actor_critic_updates: int = 1
    """imagination + actor-critic updates each time (updates)."""
    batch_size: int = 16
    """sequences per world-model update (sequences)."""
    batch_length: int = 128
    """length of each world-model training sequence (env steps)."""
    acting_context: int = 16
    """frames and actions the policy sees when acting (env steps, SPEC 3.1)."""
    log_every: int = 100
    """env steps between batched metric logs (env steps)."""
    stop_at_return: float | None = None
    """end the run early once the mean return of the last 10 episodes reaches this (return; null = never)."""
    checkpoint_every: int = 2000
    """env steps between checkpoints (env steps; 0 = only at the end)."""
    visuals_every: int = 10_000
    """env steps between imagination videos and reconstruction images logged to MLflow (env steps; 0 = off;
    pixel observations only, after the warm-up, and once more at the end)."""


@dataclass
class ImaginationConfig:
    batch_size: int = 1024
    """imagined rollouts per actor-critic update (rollouts)."""
    context_length: int = 8
    """real steps encoded before imagining (env steps)."""
    horizon: int = 16
    """imagined steps per rollout (steps)."""


@dataclass
class RuntimeConfig:
    device: str = "auto"
    """torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps."""
    precision: str = "auto"
    """numeric precision: auto (bf16-mixed on CUDA with bf16 and on CPUs with AMX, else 32-true), 32-true,
    bf16-mixed (autocast; float32 weights, optimiser state and losses)."""
    channels_last: bool = False
    """conv encoder/decoder weights and activations in channels_last (NHWC) layout; same results, speed differs
    by device (measure with drama bench)."""
    compile: str = "none"
    """torch.compile mode of the world-model and actor-critic losses: none (eager), default, reduce-overhead,
    max-autotune (the first update of each then takes extra seconds to compile)."""
    seed: int = 3710
    """global random seed (torch, numpy, python, environment)."""
    deterministic: bool = False
    """use deterministic torch algorithms (bitwise-reproducible CPU runs; slower)."""
    output_dir: str = "runs"
    """parent folder of run directories (one sub-folder per run)."""
    run_name: str = ""
    """run directory name; empty = <env>-<backbone>-seed<seed>-<timestamp>."""
    experiment: str = "drama"
    """MLflow experiment name."""
    progress: bool = True
    """show a rich progress bar on interactive terminals."""


@dataclass
class DramaConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    """environment."""
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """world model (SPEC 2)."""
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """actor-critic (SPEC 4)."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """replay buffer and DFS (SPEC 5)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """training schedule (SPEC 6)."""
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    """imagination batches (SPEC 3.2)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """device, precision and seed."""


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DramaConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated. Raises :class:`ConfigError`."""
    schema = OmegaConf.structured(DramaConfig)
    merged: Any = schema
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # YAML syntax errors
            raise ConfigError(f"cannot parse {path}: {_one_line(exc)}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{path}: {_omegaconf_message(exc)}") from None
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {_omegaconf_message(exc)}") from None
    cfg: DramaConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(cfg)
    return cfg


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = getattr(exc, "msg", None) or _one_line(exc)
    msg = msg.strip().splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return f"unknown key '{key}'" if key else msg
    return f"{key}: {msg}" if key else msg


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def validate(cfg: DramaConfig) -> None:
    """Value checks that types alone cannot express. Raises :class:`ConfigError`."""
    wm, ac = cfg.world_model, cfg.actor_critic
    positive_ints = {
        "world_model.stoch_dim": wm.stoch_dim,
        "world_model.class_dim": wm.class_dim,
        "world_model.hidden_dim": wm.hidden_dim,
        "world_model.encoder.depth": wm.encoder.depth,
        "world_model.encoder.kernel": wm.encoder.kernel,
        "world_model.encoder.mlp_hidden": wm.encoder.mlp_hidden,
        "world_model.backbone.n_layer": wm.backbone.n_layer,
        "world_model.backbone.d_state": wm.backbone.d_state,
        "world_model.backbone.expand": wm.backbone.expand,
        "world_model.backbone.headdim": wm.backbone.headdim,
        "world_model.backbone.ngroups": wm.backbone.ngroups,
        "world_model.backbone.d_conv": wm.backbone.d_conv,
        "world_model.backbone.chunk_size": wm.backbone.chunk_size,
        "world_model.backbone.heads": wm.backbone.heads,
        "world_model.backbone.ffn_dim": wm.backbone.ffn_dim,
        "world_model.backbone.max_length": wm.backbone.max_length,
        "world_model.reward_head.hidden": wm.reward_head.hidden,
        "world_model.termination_head.hidden": wm.termination_head.hidden,
        "world_model.two_hot.bins": wm.two_hot.bins,
        "actor_critic.num_layers": ac.num_layers,
        "actor_critic.actor_hidden": ac.actor_hidden,
        "actor_critic.critic_hidden": ac.critic_hidden,
        "env.action_repeat": cfg.env.action_repeat,
        "env.max_episode_frames": cfg.env.max_episode_frames,
        "replay.capacity": cfg.replay.capacity,
        "train.total_steps": cfg.train.total_steps,
        "train.world_model_every": cfg.train.world_model_every,
        "train.actor_critic_every": cfg.train.actor_critic_every,
        "train.acting_context": cfg.train.acting_context,
        "train.log_every": cfg.train.log_every,
        "train.batch_size": cfg.train.batch_size,
        "train.batch_length": cfg.train.batch_length,
        "imagination.batch_size": cfg.imagination.batch_size,
        "imagination.context_length": cfg.imagination.context_length,
        "imagination.horizon": cfg.imagination.horizon,
    }
    for key, value in positive_ints.items():
        _check(value >= 1, key, value, "must be a positive integer")
    for key, value in {
        "world_model.encoder.mlp_layers": wm.encoder.mlp_layers,
        "world_model.reward_head.layers": wm.reward_head.layers,
        "world_model.termination_head.layers": wm.termination_head.layers,
        "world_model.optim.warmup_steps": wm.optim.warmup_steps,
        "env.noop_max": cfg.env.noop_max,
        "train.learning_steps": cfg.train.learning_steps,
        "train.warmup_steps": cfg.train.warmup_steps,
        "train.world_model_updates": cfg.train.world_model_updates,
        "train.actor_critic_updates": cfg.train.actor_critic_updates,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.visuals_every": cfg.train.visuals_every,
        "actor_critic.optim.warmup_steps": ac.optim.warmup_steps,
    }.items():
        _check(value >= 0, key, value, "must be a non-negative integer")
    _check(len(wm.encoder.mults) >= 1 and all(m >= 1 for m in wm.encoder.mults), "world_model.encoder.mults",
           list(wm.encoder.mults), "must be a non-empty list of positive integers")
    _check(wm.backbone.name in BACKBONES, "world_model.backbone.name", wm.backbone.name,
           f"allowed: {', '.join(BACKBONES)}")
    _check(wm.backbone.impl in BACKBONE_IMPLS, "world_model.backbone.impl", wm.backbone.impl,
           f"allowed: {', '.join(BACKBONE_IMPLS)}")
    _check(wm.backbone.dt_rank >= 0, "world_model.backbone.dt_rank", wm.backbone.dt_rank,
           "must be >= 0 (0 = ceil(hidden_dim / 16))")
    _check(0.0 <= wm.backbone.dropout < 1.0, "world_model.backbone.dropout", wm.backbone.dropout,
           "must be in [0, 1)")
    if wm.backbone.name == "transformer":
        _check(wm.hidden_dim % wm.backbone.heads == 0, "world_model.backbone.heads", wm.backbone.heads,
               f"must divide world_model.hidden_dim ({wm.hidden_dim})")
        longest = max(cfg.train.batch_length, cfg.train.acting_context,
                      cfg.imagination.context_length + cfg.imagination.horizon)
        _check(wm.backbone.max_length >= longest, "world_model.backbone.max_length", wm.backbone.max_length,
               f"must be >= {longest} (the longest of train.batch_length, train.acting_context and "
               "imagination.context_length + imagination.horizon)")
    if wm.backbone.name == "mamba2":
        d_inner = wm.backbone.expand * wm.hidden_dim
        _check(d_inner % wm.backbone.headdim == 0, "world_model.backbone.headdim", wm.backbone.headdim,
               f"must divide expand*hidden_dim = {d_inner}")
        _check((d_inner // wm.backbone.headdim) % wm.backbone.ngroups == 0, "world_model.backbone.ngroups",
               wm.backbone.ngroups, "must divide the number of heads")
    _check(0.0 <= wm.unimix < 1.0, "world_model.unimix", wm.unimix, "must be in [0, 1)")
    _check(wm.two_hot.low < wm.two_hot.high and wm.two_hot.bins >= 2, "world_model.two_hot",
           f"{wm.two_hot.bins} bins over [{wm.two_hot.low}, {wm.two_hot.high}]", "need bins >= 2 and low < high")
    _check(wm.loss.free_bits_mode in ("batch", "step"), "world_model.loss.free_bits_mode",
           wm.loss.free_bits_mode, "allowed: batch, step")
    for name in ("reconstruction", "reward", "termination", "dynamics", "representation", "free_bits"):
        value = getattr(wm.loss, name)
        _check(value >= 0 and math.isfinite(value), f"world_model.loss.{name}", value,
               "must be a finite number >= 0")
    _check(ac.bootstrap in ("textbook", "reference"), "actor_critic.bootstrap", ac.bootstrap,
           "allowed: textbook, reference")
    for key, value in {"actor_critic.gamma": ac.gamma, "actor_critic.lambda_": ac.lambda_,
                       "actor_critic.slow_critic_decay": ac.slow_critic_decay,
                       "actor_critic.return_ema_decay": ac.return_ema_decay}.items():
        _check(0.0 <= value <= 1.0, key, value, "must be in [0, 1]")
    lo_hi = list(ac.return_percentiles)
    _check(len(lo_hi) == 2 and 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0, "actor_critic.return_percentiles", lo_hi,
           "must be [low, high] with 0 <= low < high <= 1")
    _check(ac.entropy_coef >= 0, "actor_critic.entropy_coef", ac.entropy_coef, "must be >= 0")
    for prefix, opt in (("world_model.optim", wm.optim), ("actor_critic.optim", ac.optim)):
        _check(opt.lr > 0, f"{prefix}.lr", opt.lr, "must be > 0")
        _check(opt.eps > 0, f"{prefix}.eps", opt.eps,
               "must be > 0 (with 0, an element whose gradients are all zero becomes 0/0 = NaN)")
        _check(opt.max_grad_norm > 0, f"{prefix}.max_grad_norm", opt.max_grad_norm, "must be > 0")
        betas = list(opt.betas)
        _check(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), f"{prefix}.betas", betas,
               "must be [beta1, beta2] in [0, 1)")
    _check(cfg.env.reseed in ("same", "sequence"), "env.reseed", cfg.env.reseed, "allowed: same, sequence")
    _check(cfg.env.noop_max <= 30, "env.noop_max", cfg.env.noop_max, "must be in [0, 30]")
    _check(cfg.replay.sampler in SAMPLERS, "replay.sampler", cfg.replay.sampler, f"allowed: {', '.join(SAMPLERS)}")
    for key in ("tau", "imagination_tau"):
        value = getattr(cfg.replay, key)
        _check(value > 0, f"replay.{key}", value, "must be > 0")
    for key in ("alpha", "beta"):
        value = getattr(cfg.replay, key)
        _check(value >= 0, f"replay.{key}", value, "must be >= 0")
    _check(cfg.train.batch_length <= cfg.replay.capacity, "train.batch_length", cfg.train.batch_length,
           f"must be <= replay.capacity ({cfg.replay.capacity})")
    _check(cfg.runtime.output_dir != "", "runtime.output_dir", cfg.runtime.output_dir, "must not be empty")
    _check("/" not in cfg.runtime.run_name and cfg.runtime.run_name not in (".", ".."), "runtime.run_name",
           cfg.runtime.run_name, "must be a plain folder name")
    device = cfg.runtime.device
    _check(device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit()),
           "runtime.device", device, "allowed: auto, cpu, cuda, cuda:N, mps")
    _check(cfg.runtime.compile in COMPILE_MODES, "runtime.compile", cfg.runtime.compile,
           f"allowed: {', '.join(COMPILE_MODES)}")
    _check(cfg.replay.device in REPLAY_DEVICES, "replay.device", cfg.replay.device,
           f"allowed: {', '.join(REPLAY_DEVICES)}")
    _check(cfg.replay.device != "cuda" or cfg.runtime.device.startswith(("auto", "cuda")), "replay.device",
           cfg.replay.device, f"cuda needs a CUDA runtime.device (runtime.device is {cfg.runtime.device})")
    _check(cfg.runtime.precision in ("auto", "32-true", "bf16-mixed"), "runtime.precision",
           cfg.runtime.precision, "allowed: auto, 32-true, bf16-mixed")
    if wm.backbone.impl == "kernel":
        _check(wm.backbone.name in KERNEL_BACKBONES, "world_model.backbone.impl", "kernel",
               f"mamba-ssm kernels exist only for {', '.join(KERNEL_BACKBONES)} (use auto or torch)")


def to_yaml(cfg: DramaConfig) -> str:
    """The resolved configuration as YAML."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_flat_dict(cfg: DramaConfig) -> dict[str, Any]:
    """Dotted keys -> values (for tracking params)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = value

    walk(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), "")
    return out
