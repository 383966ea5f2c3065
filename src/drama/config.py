"""Typed configuration (OmegaConf structured dataclasses).

Every field is documented where it is declared, with its unit where it has one, and declares there the values it
accepts (:func:`choice`, :func:`positive`, :func:`non_negative`, :func:`in_range`, :func:`bounded`); each switch's
allowed values are one tuple constant below, which the modules that act on the switch use too. Defaults are the
paper's hyper-parameters (DRAMA, Wang et al., ICLR 2025); where drama departs from the authors' code, the switch
that restores their behaviour is listed in docs/decisions.md. ``load_config`` merges a YAML file and ``key=value``
overrides onto these defaults and validates the result; every user-facing problem raises :class:`ConfigError`
whose message is one line naming the offending key and what is allowed.

This module is the bottom layer of the package: it imports no other drama module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import drama.packaged_configs as packaged_configs

# ------------------------------------------------------------------ allowed values of the switches
BACKBONES = ("mamba2", "mamba", "gru", "transformer")
"""Dynamics backbones (``world_model.backbone.name``)."""
BACKBONE_IMPLS = ("auto", "torch", "kernel")
"""Execution paths of the Mamba backbones (``world_model.backbone.impl``)."""
KERNEL_BACKBONES = ("mamba2", "mamba")
"""Backbones with a mamba-ssm kernel path (the only ones that accept ``world_model.backbone.impl=kernel``)."""
FREE_BITS_MODES = ("batch", "step")
"""Where free bits clip (``world_model.loss.free_bits_mode``)."""
BOOTSTRAPS = ("textbook", "reference")
"""Bootstraps of the lambda-return (``actor_critic.bootstrap``)."""
SAMPLERS = ("dfs", "uniform")
"""Replay start samplers (``replay.sampler``)."""
REPLAY_DEVICES = ("auto", "cpu", "cuda")
"""Where the replay rows live (``replay.device``)."""
RESEED_MODES = ("same", "sequence")
"""Reset seeding of the environment (``env.reseed``)."""
RUNTIME_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""Torch devices (``runtime.device``); ``cuda:N`` stands for ``cuda:0``, ``cuda:1``, ... (any integer index)."""
PRECISIONS = ("auto", "32-true", "bf16-mixed")
"""Numeric precisions (``runtime.precision``)."""
CHANNELS_LAST = ("auto", True, False)
"""Conv layouts (``runtime.channels_last``): auto (NHWC on CPUs with bf16 hardware, drama.device), true, false."""
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes of the hot paths (``runtime.compile``; none = eager)."""
SEED_MAX = 2**32 - 1
"""The largest seed numpy and Lightning take (``runtime.seed``; ``drama evaluate --seed``, ``drama report --seed``)."""

RENAMED = {
    "train.warmup_steps": ("train.prefill_steps", "random-action env steps before the first update"),
}
"""Former keys -> (new key, what it means); a former key in a YAML file or an override is a :class:`ConfigError`."""


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line."""


# ------------------------------------------------------------------ per-field bounds (dataclass field metadata)
def _matches_choice(value: Any, options: tuple[str, ...]) -> bool:
    """``value`` is one of ``options``, where an option ending in ``:N`` stands for that prefix + an integer."""
    if value in options:
        return True
    return isinstance(value, str) and any(
        isinstance(opt, str) and opt.endswith(":N") and value.startswith(opt[:-1])
        and value[len(opt) - 1:].isdigit() for opt in options)


RULES: dict[str, Any] = {
    "choices": _matches_choice,
    "ge": lambda value, bound: value >= bound,
    "gt": lambda value, bound: value > bound,
    "le": lambda value, bound: value <= bound,
    "lt": lambda value, bound: value < bound,
    "finite": lambda value, on: not on or math.isfinite(value),
    "length": lambda value, n: len(value) == n,
    "min_length": lambda value, n: len(value) >= n,
    "increasing": lambda value, on: not on or all(a < b for a, b in zip(value[:-1], value[1:], strict=True)),
    "excludes": lambda value, chars: not any(c in value for c in chars),
    "not_in": lambda value, options: value not in options,
    "each": lambda value, rules: all(satisfies(item, rules) for item in value),
    "nullable": lambda value, on: True,
}
"""Bound rules a field's metadata may hold: rule name -> predicate(value, rule argument). NaN fails every
comparison. ``each`` applies a dict of rules to every item of a list. ``nullable`` lets ``None`` (null) pass
every rule of the field; a field without it fails on ``None``."""


def satisfies(value: Any, rules: dict[str, Any]) -> bool:
    """Whether ``value`` passes every rule of ``rules`` (:data:`RULES` names; ``allowed`` is the message)."""
    if value is None:
        return bool(rules.get("nullable"))
    return all(RULES[name](value, arg) for name, arg in rules.items() if name != "allowed")


def bounded(default: Any, allowed: str, **rules: Any) -> Any:
    """A dataclass field with ``default`` (a list is copied per instance) whose values must pass ``rules`` (see
    :data:`RULES`); ``allowed`` describes them in the error message ``{key}={value!r} is invalid: {allowed}``."""
    unknown = set(rules) - set(RULES)
    if unknown:
        raise TypeError(f"unknown bound rules {sorted(unknown)}")
    metadata = {"allowed": allowed, **rules}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def choice(options: tuple[str, ...], default: str) -> Any:
    """A field whose value must be one of ``options``."""
    return bounded(default, f"allowed: {', '.join(options)}", choices=options)


def positive(default: int | float, allowed: str | None = None) -> Any:
    """A field whose value must be > 0 (a positive integer for an int default)."""
    return bounded(default, allowed or ("must be a positive integer" if isinstance(default, int) else "must be > 0"),
                   gt=0)


def non_negative(default: int | float, allowed: str | None = None) -> Any:
    """A field whose value must be >= 0."""
    return bounded(default, allowed or ("must be a non-negative integer" if isinstance(default, int)
                                        else "must be >= 0"), ge=0)


def in_range(default: int | float, low: int | float, high: int | float, *, high_open: bool = False) -> Any:
    """A field whose value must lie in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    if high_open:
        return bounded(default, f"must be in [{low}, {high})", ge=low, lt=high)
    return bounded(default, f"must be in [{low}, {high}]", ge=low, le=high)


@dataclass
class EnvConfig:
    id: str = "ALE/Pong-v5"
    """gymnasium environment id; ``ALE/*`` ids use the Atari protocol of drama.envs.atari, others vector
    observations."""
    action_repeat: int = positive(4)
    """Atari: times each action is repeated (raw frames); rewards are summed, the last 2 frames max-pooled."""
    noop_max: int = in_range(0, 0, 30)
    """Atari: at most this many random no-op raw frames after each reset (frames; 0 = off, the reference)."""
    reseed: str = choice(RESEED_MODES, "same")
    """reset seeding: same (every reset reuses the run seed, the reference) or sequence (seed + k at reset k)."""
    max_episode_frames: int = positive(108_000)
    """Atari: episode time limit (raw frames; 108k = 27k agent steps); vector envs keep their own limit."""


@dataclass
class EncoderConfig:
    depth: int = positive(16)
    """channels of the first conv layer (channels); layer i has ``depth * mults[i]``."""
    mults: list[int] = bounded([1, 2, 3, 4, 4], "must be a non-empty list of positive integers", min_length=1,
                               each={"ge": 1})
    """per-layer channel multipliers of the conv encoder (layer 0 keeps the resolution, each later one halves it);
    the decoder mirrors them."""
    kernel: int = positive(5)
    """conv / transposed-conv kernel size (pixels), 'same' padding."""
    mlp_hidden: int = positive(256)
    """width of the MLP encoder/decoder used for vector observations (units)."""
    mlp_layers: int = non_negative(2)
    """hidden layers of the MLP encoder/decoder for vector observations (layers)."""


@dataclass
class BackboneConfig:
    name: str = choice(BACKBONES, "mamba2")
    """dynamics sequence model: mamba2 (default), mamba (Mamba-1), gru or transformer."""
    impl: str = choice(BACKBONE_IMPLS, "auto")
    """mamba2/mamba execution path: auto (mamba-ssm kernels on CUDA when importable, else torch), torch, kernel."""
    n_layer: int = positive(2)
    """number of residual blocks (layers)."""
    d_state: int = positive(16)
    """SSM state size N per head (state dims)."""
    expand: int = positive(2)
    """inner width factor: d_inner = expand * hidden_dim."""
    headdim: int = positive(64)
    """Mamba-2 head dimension P (channels); nheads = d_inner / headdim."""
    ngroups: int = positive(1)
    """Mamba-2 groups sharing B and C (groups)."""
    d_conv: int = positive(4)
    """depthwise causal conv width (time steps)."""
    chunk_size: int = positive(256)
    """chunk length Q of the chunked SSD scan (time steps); any value >= 1 gives the same result."""
    dt_rank: int = non_negative(0, "must be >= 0 (0 = ceil(hidden_dim / 16))")
    """Mamba-1 rank of the step-size projection (dims); 0 = ceil(hidden_dim / 16)."""
    heads: int = positive(8)
    """transformer attention heads (heads); must divide hidden_dim."""
    ffn_dim: int = positive(1024)
    """transformer feed-forward hidden width (units)."""
    dropout: float = in_range(0.1, 0, 1, high_open=True)
    """transformer dropout on attention weights and block outputs (probability); off in acting and imagination."""
    max_length: int = positive(128)
    """transformer learned positions (tokens): the longest sequence it can read (training, acting, imagination)."""


@dataclass
class HeadConfig:
    hidden: int = positive(256)
    """hidden width of the reward/termination MLP (units)."""
    layers: int = non_negative(1)
    """hidden layers of the reward/termination MLP (layers)."""


@dataclass
class TwoHotConfig:
    bins: int = bounded(255, "must be an integer >= 2", ge=2)
    """number of two-hot bins (bins)."""
    low: float = -20.0
    """lowest bin in symlog space; must be < high."""
    high: float = 20.0
    """highest bin in symlog space."""


@dataclass
class OptimConfig:
    lr: float = positive(4e-5)
    """LaProp learning rate (per optimiser step)."""
    eps: float = positive(1e-20, "must be > 0 (with 0, an element whose gradients are all zero becomes 0/0 = NaN)")
    """LaProp epsilon."""
    betas: list[float] = bounded([0.9, 0.999], "must be [beta1, beta2] in [0, 1)", length=2,
                                 each={"ge": 0, "lt": 1})
    """LaProp (beta1, beta2)."""
    warmup_steps: int = non_negative(1000)
    """linear learning-rate warm-up length (optimiser steps): factor min(1, (k+1)/warmup_steps); 0 = none."""
    max_grad_norm: float = positive(1000.0)
    """global gradient-norm clip (L2 norm)."""


_WEIGHT = {"allowed": "must be a finite number >= 0", "ge": 0, "finite": True}


@dataclass
class WorldModelLossConfig:
    reconstruction: float = bounded(1.0, **_WEIGHT)
    """weight of the reconstruction loss (sum over pixels, mean over B*L)."""
    reward: float = bounded(1.0, **_WEIGHT)
    """weight of the symlog two-hot reward loss."""
    termination: float = bounded(1.0, **_WEIGHT)
    """weight of the termination BCE loss."""
    dynamics: float = bounded(1.0, **_WEIGHT)
    """weight of the dynamics loss KL(sg(q_{t+1}) || p_t) (trains the prior)."""
    representation: float = bounded(0.1, **_WEIGHT)
    """weight of the representation loss KL(q_{t+1} || sg(p_t)) (trains the posterior)."""
    free_bits: float = bounded(1.0, **_WEIGHT)
    """free bits (nats): the KL terms are max(free_bits, KL)."""
    representation_free_bits: float | None = bounded(None, "must be null or a finite number >= 0", nullable=True,
                                                     ge=0, finite=True)
    """free bits of the representation term alone (nats; null = free_bits): a floor above free_bits lets the
    posterior carry that many nats unpenalised while the dynamics term keeps training the prior above free_bits."""
    detach_dynamics_input: bool = False
    """the sequence model reads stopgrad(z_t) in the loss (switch): the reward, termination and dynamics losses
    then train the sequence model and heads but not the encoder, which learns from reconstruction and the
    representation term alone (the reference: false)."""
    free_bits_mode: str = choice(FREE_BITS_MODES, "batch")
    """where free bits clip: batch (the reference: on the batch-mean KL) or step (per time step, DreamerV3)."""


@dataclass
class WorldModelConfig:
    stoch_dim: int = positive(32)
    """number of categorical latent variables (variables)."""
    class_dim: int = positive(32)
    """classes per categorical latent variable (classes)."""
    hidden_dim: int = positive(512)
    """width of the sequence model output h (units)."""
    unimix: float = in_range(0.01, 0, 1, high_open=True)
    """uniform mixture on the latent categoricals (fraction)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """observation encoder/decoder."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """dynamics sequence model."""
    reward_head: HeadConfig = field(default_factory=HeadConfig)
    """reward head on h."""
    termination_head: HeadConfig = field(default_factory=HeadConfig)
    """termination head on h."""
    two_hot: TwoHotConfig = field(default_factory=TwoHotConfig)
    """two-hot bins of the reward head (and the critic)."""
    loss: WorldModelLossConfig = field(default_factory=WorldModelLossConfig)
    """loss weights and free bits."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """world-model optimiser (LaProp)."""


@dataclass
class ActorCriticConfig:
    num_layers: int = positive(3)
    """hidden layers of actor and critic (layers)."""
    actor_hidden: int = positive(256)
    """actor hidden width (units)."""
    critic_hidden: int = positive(512)
    """critic hidden width (units)."""
    gamma: float = in_range(0.985, 0, 1)
    """discount per env step."""
    lambda_: float = in_range(0.95, 0, 1)
    """lambda of the lambda-return."""
    bootstrap: str = choice(BOOTSTRAPS, "textbook")
    """lambda-return bootstrap: textbook (v[t+1]) or reference (v[t], the formula of the STORM and DRAMA code; see
    docs/decisions.md)."""
    entropy_coef: float = non_negative(3e-4)
    """entropy bonus coefficient."""
    slow_critic_decay: float = in_range(0.98, 0, 1)
    """EMA decay of the slow critic per update."""
    return_ema_decay: float = in_range(0.99, 0, 1)
    """EMA decay of the 5th/95th return percentiles per update."""
    return_percentiles: list[float] = bounded([0.05, 0.95], "must be [low, high] with 0 <= low < high <= 1",
                                              length=2, each={"ge": 0, "le": 1}, increasing=True)
    """low and high return percentiles (fractions) of the return scale S = P_high - P_low."""
    vecnorm_clip: float = positive(10.0)
    """clip of the actor's normalised input (standard deviations)."""
    vecnorm_eps: float = non_negative(1e-8)
    """epsilon of the actor's input normalisation."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_grad_norm=100.0))
    """actor-critic optimiser (LaProp)."""


@dataclass
class ReplayConfig:
    capacity: int = positive(100_000)
    """replay buffer size (env steps); the oldest rows are overwritten."""
    sampler: str = choice(SAMPLERS, "dfs")
    """start sampler: dfs (dynamic frequency-based sampling: rarely sampled starts are preferred, see
    drama.data.dfs) or uniform (STORM: uniform, with replacement)."""
    tau: float = positive(10.0)
    """DFS temperature of world-model starts: p ~ exp(-c/tau) (sample counts)."""
    imagination_tau: float = positive(10.0)
    """DFS temperature of imagination starts (sample counts)."""
    alpha: float = non_negative(1.0)
    """DFS imagination-count penalty alpha: imagination scores are c - alpha m - beta max(0, c - m), with c the
    world-model and m the (rescaled) imagination sample count of a start."""
    beta: float = non_negative(1.0)
    """DFS penalty beta on max(0, c - m) in the imagination score."""
    device: str = choice(REPLAY_DEVICES, "auto")
    """where the stored rows live: auto (the training device when it is CUDA and the full buffer needs at most a
    quarter of its free memory, else cpu), cpu (batches copied through pinned memory to a CUDA device) or cuda
    (the training device, which must then be CUDA)."""


@dataclass
class TrainConfig:
    total_steps: int = positive(105_000)
    """env steps of the run (agent steps, after action repeat)."""
    learning_steps: int = non_negative(100_000)
    """no update after this env step (both models freeze; the rest lets the last episode finish)."""
    prefill_steps: int = non_negative(1032)
    """random-action env steps before the first update (env steps; called warmup_steps before, which is now only
    the learning-rate warm-up ``*.optim.warmup_steps``)."""
    world_model_every: int = positive(1)
    """env steps between world-model updates (env steps)."""
    world_model_updates: int = non_negative(1)
    """world-model updates each time (updates)."""
    actor_critic_every: int = positive(1)
    """env steps between imagination + actor-critic updates (env steps)."""
    actor_critic_updates: int = non_negative(1)
    """imagination + actor-critic updates each time (updates)."""
    batch_size: int = positive(16)
    """sequences per world-model update (sequences)."""
    batch_length: int = positive(128)
    """length of each world-model training sequence (env steps); at most replay.capacity."""
    acting_context: int = positive(16)
    """frames and actions the policy sees when acting (env steps)."""
    log_every: int = positive(100)
    """env steps between batched metric logs (env steps)."""
    stop_at_return: float | None = None
    """end the run early once the mean return of the last 10 episodes reaches this (return; null = never)."""
    checkpoint_every: int = non_negative(2000)
    """env steps between checkpoints (env steps; 0 = only at the end)."""
    visuals_every: int = non_negative(10_000)
    """env steps between imagination videos and reconstruction images logged to MLflow (env steps; 0 = off;
    pixel observations only, after the prefill, and once more at the end)."""


@dataclass
class ImaginationConfig:
    batch_size: int = positive(1024)
    """imagined rollouts per actor-critic update (rollouts)."""
    context_length: int = positive(8)
    """real steps encoded before imagining (env steps)."""
    horizon: int = positive(16)
    """imagined steps per rollout (steps)."""


@dataclass
class RuntimeConfig:
    device: str = choice(RUNTIME_DEVICES, "auto")
    """torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps."""
    precision: str = choice(PRECISIONS, "auto")
    """numeric precision: auto (bf16-mixed on CPUs with bf16 dot products, avx512_bf16 or AMX; else 32-true, CUDA
    included: bf16 measured slower there, drama.device), 32-true, bf16-mixed (autocast; float32 weights, optimiser
    state and losses). Training, imagination, acting and evaluation run under the same precision."""
    channels_last: bool | str = bounded("auto", "allowed: auto, true, false", choices=CHANNELS_LAST)
    """conv encoder/decoder weights and activations in channels_last (NHWC) layout: auto (on CPUs with bf16
    hardware, where it measured faster), true, false; same results, speed differs by device (drama bench)."""
    compile: str = choice(COMPILE_MODES, "none")
    """torch.compile mode of the world-model and actor-critic losses: none (eager), default, reduce-overhead,
    max-autotune (the first update of each then takes extra seconds to compile)."""
    seed: int = in_range(3710, 0, SEED_MAX)
    """global random seed (torch, numpy, python, environment)."""
    deterministic: bool = False
    """use deterministic torch algorithms (bitwise-reproducible CPU runs; slower)."""
    output_dir: str = bounded("runs", "must not be empty", min_length=1)
    """parent folder of run directories (one sub-folder per run)."""
    run_name: str = bounded("", "must be a plain folder name", excludes="/", not_in=(".", ".."))
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
    """world model: encoder/decoder, latent heads, dynamics backbone, reward and termination heads."""
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """actor-critic trained on imagined rollouts."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """replay buffer and its start sampler."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """training schedule."""
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    """imagination batches."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """device, precision and seed."""


def one_line(exc: object) -> str:
    """The first line of an exception's message (its type's name when the message is empty): how an error from
    elsewhere is quoted in a ``drama: error:`` line. Also takes a plain reason (e.g. ``URLError.reason``)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_renamed(node: DictConfig) -> None:
    """Raise :class:`ConfigError` when ``node`` (a YAML file or one override) sets a key of :data:`RENAMED`."""
    for old, (new, meaning) in RENAMED.items():
        parent, _, leaf = old.rpartition(".")
        section = OmegaConf.select(node, parent) if parent else node
        if isinstance(section, DictConfig) and leaf in section:
            raise ConfigError(f"{old} was renamed to {new} ({meaning})")


def find_config_file(name: str | Path, what: str = "config file") -> Path:
    """A config or sweep file: ``name`` as a path when that file exists, else the packaged config of that name
    (``atari``, ``sweeps/tiny``, also ``conf/atari.yaml`` outside a checkout: :mod:`drama.packaged_configs`);
    :class:`ConfigError` listing the packaged names otherwise."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_configs.path(str(name))
    if packaged is not None:
        return packaged
    raise ConfigError(f"{what} not found: {name} (neither a file nor a packaged config: "
                      f"{', '.join(packaged_configs.names())}; see drama config list)")


def load_yaml_mapping(path: Path, what: str) -> DictConfig:
    """A YAML file with a mapping at the top level (configs, sweep files); :class:`ConfigError` otherwise."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # YAML syntax errors
        raise ConfigError(f"cannot parse {path}: {one_line(exc)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DramaConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated. Raises :class:`ConfigError`."""
    schema = OmegaConf.structured(DramaConfig)
    merged: Any = schema
    if path is not None:
        path = find_config_file(path)
        loaded = load_yaml_mapping(path, "config file")
        try:
            _check_renamed(loaded)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{path}: {_omegaconf_message(exc)}") from None
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            override = OmegaConf.from_dotlist([item])
            _check_renamed(override)
            merged = OmegaConf.merge(merged, override)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {_omegaconf_message(exc)}") from None
    try:
        cfg: DramaConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:  # interpolations (${...}) resolve only here
        raise ConfigError(_omegaconf_message(exc)) from None
    validate(cfg)
    return cfg


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = one_line(getattr(exc, "msg", None) or exc)
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return f"unknown key '{key}'" if key else msg
    return f"{key}: {msg}" if key else msg


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def bounded_fields(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """``(dotted key, value, bound metadata)`` of every field of the dataclass tree ``node`` that declares a
    bound, in declaration order."""
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            yield from bounded_fields(value, f"{prefix}{f.name}.")
        elif f.metadata:
            yield f"{prefix}{f.name}", value, dict(f.metadata)


def validate(cfg: DramaConfig) -> None:
    """Every field's declared bound, then the rules that relate several fields. Raises :class:`ConfigError`."""
    for key, value, bound in bounded_fields(cfg):
        _check(satisfies(value, bound), key, list(value) if isinstance(value, list) else value, bound["allowed"])
    wm, bb, train, imagination = cfg.world_model, cfg.world_model.backbone, cfg.train, cfg.imagination
    if bb.name == "transformer":
        _check(wm.hidden_dim % bb.heads == 0, "world_model.backbone.heads", bb.heads,
               f"must divide world_model.hidden_dim ({wm.hidden_dim})")
        longest = max(train.batch_length, train.acting_context, imagination.context_length + imagination.horizon)
        _check(bb.max_length >= longest, "world_model.backbone.max_length", bb.max_length,
               f"must be >= {longest} (the longest of train.batch_length, train.acting_context and "
               "imagination.context_length + imagination.horizon)")
    if bb.name == "mamba2":
        d_inner = bb.expand * wm.hidden_dim
        _check(d_inner % bb.headdim == 0, "world_model.backbone.headdim", bb.headdim,
               f"must divide expand*hidden_dim = {d_inner}")
        _check((d_inner // bb.headdim) % bb.ngroups == 0, "world_model.backbone.ngroups", bb.ngroups,
               "must divide the number of heads")
    if bb.impl == "kernel":
        _check(bb.name in KERNEL_BACKBONES, "world_model.backbone.impl", "kernel",
               f"mamba-ssm kernels exist only for {', '.join(KERNEL_BACKBONES)} (use auto or torch)")
    _check(wm.two_hot.low < wm.two_hot.high, "world_model.two_hot.low", wm.two_hot.low,
           f"must be < world_model.two_hot.high ({wm.two_hot.high})")
    _check(train.batch_length <= cfg.replay.capacity, "train.batch_length", train.batch_length,
           f"must be <= replay.capacity ({cfg.replay.capacity})")
    _check(imagination.context_length <= cfg.replay.capacity, "imagination.context_length",
           imagination.context_length, f"must be <= replay.capacity ({cfg.replay.capacity})")
    for key, batch, length_key, length in (
            ("train.batch_size", train.batch_size, "train.batch_length", train.batch_length),
            ("imagination.batch_size", imagination.batch_size, "imagination.context_length",
             imagination.context_length)):
        starts = cfg.replay.capacity - length + 1  # a batch draws distinct window starts
        _check(batch <= starts, key, batch, f"must be <= replay.capacity - {length_key} + 1 = {starts}, the most "
                                            "window starts the replay can hold (no batch could ever be drawn)")
    check_updates_happen(cfg, train.learning_steps, "train.learning_steps")
    # replay.device=cuda needs a CUDA training device: a rule about this machine, checked by preflight.check_runtime


def batch_shape(cfg: DramaConfig, mode: str) -> tuple[int, int]:
    """(sequences, length) of the replay batches of ``mode``: ``world_model`` windows (``train.batch_size`` x
    ``train.batch_length``) or ``imagination`` contexts (``imagination.batch_size`` x ``context_length``)."""
    if mode == "world_model":
        return cfg.train.batch_size, cfg.train.batch_length
    return cfg.imagination.batch_size, cfg.imagination.context_length


def check_updates_happen(cfg: DramaConfig, last_step: int, last_key: str) -> None:
    """Raise :class:`ConfigError` unless each model that updates (``train.*_updates`` > 0) gets its first update by
    env step ``last_step`` (the value of ``last_key``): updates come at the env steps after ``train.prefill_steps``,
    up to ``last_step``, that are multiples of ``train.world_model_every`` / ``train.actor_critic_every``."""
    train = cfg.train
    _check(train.prefill_steps < last_step, last_key, last_step,
           f"must be > train.prefill_steps ({train.prefill_steps}): no update would ever happen")
    for model in ("world_model", "actor_critic"):
        every = getattr(train, f"{model}_every")
        first = (train.prefill_steps // every + 1) * every
        _check(first <= last_step or not getattr(train, f"{model}_updates"), f"train.{model}_every", every,
               f"the first {model} update would come at env step {first}, after {last_key} ({last_step})")


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
