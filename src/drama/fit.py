"""``drama fit``, the whole protocol (:func:`fit_command`): plan a new run or a resume, writing nothing; then, under
the run folder's :class:`~drama.run_lock.RunLock`, assemble config, env, replay, models, Fabric and MLflow and run
:class:`DramaLoop`.

Everything that can reject user input (config, env id, resume folder, and what this machine refuses: device,
backbone kernels, output folder, MLflow store; :mod:`drama.preflight`) runs before the run directory is created, so
a bad invocation leaves nothing behind. ``drama fit`` holds the folder's lock while it writes there.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from drama.config import ConfigError, DramaConfig, load_config, to_flat_dict, to_yaml
from drama.envs import probe_env
from drama.errors import RunStopped, StopOnSignal
from drama.preflight import check_model_shapes, check_new_run, check_resume
from drama.run import RunFolder
from drama.run_lock import RunLock
from drama.version import provenance

if TYPE_CHECKING:
    from drama.loop import DramaLoop
    from drama.tracking import Tracker


@dataclass
class FitResult:
    run_dir: Path
    steps: int
    episodes: int
    world_model_updates: int
    actor_critic_updates: int
    returns: list[float]
    seconds: float
    stopped: str | None = None
    """the signal that stopped the run early (``"SIGTERM"``, ``"SIGINT"``), None when it ran to its end."""

    @classmethod
    def of(cls, loop: DramaLoop, start: float, stopped: str | None = None) -> FitResult:
        """The result of ``loop``'s run so far, begun at ``time.perf_counter()`` ``start``."""
        s = loop.state
        return cls(loop.folder.root, s.step, s.episodes, s.world_model_updates, s.actor_critic_updates,
                   list(s.returns), time.perf_counter() - start, stopped)

    def summary(self) -> dict:
        """The one-line JSON ``drama fit`` prints on stdout when it ends (also after a signal stop)."""
        last = self.returns[-10:]
        return {"run_dir": str(self.run_dir), "env_steps": self.steps, "episodes": self.episodes,
                "world_model_updates": self.world_model_updates, "actor_critic_updates": self.actor_critic_updates,
                "mean_return_last_10": sum(last) / len(last) if last else None, "seconds": round(self.seconds, 1),
                **({"stopped": self.stopped} if self.stopped else {})}


def default_run_name(cfg: DramaConfig) -> str:
    game = cfg.env.id.replace("ALE/", "").replace("/", "-")
    return f"{game}-{cfg.world_model.backbone.name}-seed{cfg.runtime.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_new_run(config: str, overrides: list[str]) -> tuple[DramaConfig, Path]:
    """Check a new run fully and choose its directory; writes nothing. Config and env id, then what this machine
    can refuse (:func:`drama.preflight.check_new_run`: device, output folder, MLflow store), then the folder: not
    locked by another ``drama fit``, not holding a run. Then, under the folder's :class:`~drama.run_lock.RunLock`,
    :func:`start_new_run`."""
    cfg = load_config(config, overrides)
    check_model_shapes(cfg, probe_env(cfg.env).obs_shape)
    folder = RunFolder(Path(cfg.runtime.output_dir) / (cfg.runtime.run_name or default_run_name(cfg)))
    check_new_run(cfg, folder)
    RunLock.check_free(folder.root)
    _check_no_run(folder)
    return cfg, folder.root


def start_new_run(cfg: DramaConfig, run_dir: Path) -> None:
    """Write the new run's resolved config, the first file of the run folder; call it holding the folder's lock."""
    folder = RunFolder(run_dir)
    _check_no_run(folder)  # again, under the lock: a drama fit that held it until just now may have saved a run
    try:
        folder.write_config(cfg)
    except OSError as exc:  # e.g. a full disk: the lock removes the folder it made
        exc.add_note(f"the config of the new run, its first file ({len(to_yaml(cfg).encode()):,} bytes); nothing "
                     "was left behind")
        raise


def _check_no_run(folder: RunFolder) -> None:
    if folder.holds_run():
        raise ConfigError(f"run directory {folder.root} already holds a run: use --resume {folder.root} or another "
                          "runtime.run_name")


RESUMABLE_KEYS = ("train.total_steps", "train.learning_steps", "train.log_every", "train.checkpoint_every",
                  "train.visuals_every", "train.stop_at_return", "runtime.progress")
"""Config keys that may change on ``--resume``: how long the run goes on and how often it logs and saves.
Everything else shaped the saved state (models, env, replay, schedule) and is refused."""


def prepare_resume(run_dir: str, overrides: list[str]) -> tuple[DramaConfig, Path]:
    """The saved config of ``run_dir`` plus ``overrides`` of :data:`RESUMABLE_KEYS` (e.g. a larger
    ``train.total_steps``), checked against the saved one, then what this machine can refuse
    (:func:`drama.preflight.check_resume`: device, a good checkpoint, writable folders, the MLflow store); nothing is
    written here (:func:`fit` rewrites ``config.yaml`` once the checkpoint has loaded and the new budget covers its
    env step)."""
    folder = RunFolder(Path(run_dir))
    if not folder.config.is_file():
        raise ConfigError(f"--resume {run_dir}: no {folder.config.name} there (not a drama run directory)")
    if not (folder.checkpoint.is_file() or folder.previous_checkpoint.is_file()):
        raise ConfigError(f"--resume {run_dir}: no checkpoint at {folder.checkpoint}")
    saved = to_flat_dict(folder.read_config())
    cfg = folder.read_config(overrides)
    for key, value in to_flat_dict(cfg).items():
        if value != saved.get(key) and key not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume {run_dir}: {key} cannot change on resume (the run was saved with "
                              f"{saved.get(key)!r}); allowed on resume: {', '.join(RESUMABLE_KEYS)}")
    check_resume(cfg, folder)
    return cfg, folder.root


def fit_command(config: str | None, overrides: list[str], resume: str | None = None) -> FitResult:
    """``drama fit``: plan (a new run from ``config`` + ``overrides``, or ``--resume`` of the run folder ``resume``
    with ``overrides``), writing nothing; then lock the run folder (a new one is created by the lock, and its config
    is its first file) and train, a signal stopping the setup or the loop at a safe point (:mod:`drama.errors`)."""
    if resume:
        cfg, run_dir = prepare_resume(resume, overrides)
        with StopOnSignal() as stop, RunLock(run_dir):
            return fit(cfg, run_dir, resume=True, stop=stop)
    cfg, run_dir = prepare_new_run(config, overrides)
    with StopOnSignal() as stop, RunLock(run_dir, create=True):
        start_new_run(cfg, run_dir)
        return fit(cfg, run_dir, stop=stop)


def fit(cfg: DramaConfig, run_dir: Path, resume: bool = False, stop: StopOnSignal | None = None) -> FitResult:
    """Train (or continue) the run in ``run_dir``; prints the resolved config and parameter counts first. A signal
    recorded by ``stop`` (armed by the caller since the run folder exists; by default armed here) ends the setup
    between two of its phases (:class:`~drama.errors.SetupStopped`: the run's record, if opened, ends KILLED) or
    the loop between two env steps."""
    from drama.device import resolve_device, resolve_precision

    start = time.perf_counter()
    device = resolve_device(cfg.runtime.device)
    precision = resolve_precision(cfg.runtime.precision, device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if cfg.runtime.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        with stop or StopOnSignal() as stop:
            return _fit(cfg, run_dir, resume, device, precision, start, stop)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _fit(cfg: DramaConfig, run_dir: Path, resume: bool, device: torch.device, precision: str,
         start: float, stop: StopOnSignal) -> FitResult:
    import lightning as L
    import torchrl  # noqa: F401  (imported first: its import sets its logger's level, which we lower)

    from drama.build import build_training_system
    from drama.loop import DramaLoop
    from drama.summary import parameter_counts
    from drama.tracking import Tracker

    logging.getLogger("torchrl").setLevel(logging.WARNING)  # no storage-init chatter on stdout
    L.seed_everything(cfg.runtime.seed, verbose=False)

    folder = RunFolder(run_dir)
    stop.during_setup(str(run_dir), resume)
    system = build_training_system(cfg, device, precision)
    fabric, env, replay = system.fabric, system.env, system.replay
    world_model, actor_critic = system.world_model, system.actor_critic
    tracker = None
    try:  # a signal, an error or a bad budget here: close the env and end an opened record, then re-raise
        stop.during_setup(str(run_dir), resume)
        counts = parameter_counts(world_model, actor_critic)
        loop = DramaLoop(cfg, fabric, world_model, actor_critic, replay, env, run_dir)
        if resume:
            loop.load_checkpoint()
            if cfg.train.total_steps < loop.state.step:
                raise ConfigError(f"train.total_steps={cfg.train.total_steps} is invalid: the run is already at env "
                                  f"step {loop.state.step}")
            stop.during_setup(str(run_dir), resume)
            folder.write_config(cfg)  # only now: the overrides were checked against the saved run
        tracker = Tracker.start(folder, cfg.runtime.experiment, resume=resume, step=loop.state.step)
        if not resume:
            made_by = provenance()
            tracker.log_params({**to_flat_dict(cfg), **{f"parameters/{k}": v for k, v in counts.items()},
                                "drama/version": made_by["drama_version"], "drama/git_commit": made_by["git_commit"]
                                or "none"})
        stop.during_setup(str(run_dir), resume)
    except BaseException as error:
        if tracker is not None:
            tracker.finish("KILLED" if isinstance(error, RunStopped) else "FAILED")
        env.close()
        raise
    print(to_yaml(cfg), end="")
    print(f"# run {run_dir} | device {device} | precision {precision} | compile {cfg.runtime.compile} | "
          f"{'resuming at step ' + str(loop.state.step) if resume else 'new run'}")
    print(json.dumps(counts), flush=True)
    return _train(loop, tracker, stop, start)


def _train(loop: DramaLoop, tracker: Tracker, stop: StopOnSignal, start: float) -> FitResult:
    """Run the loop, then end the run's record ``FINISHED``, or ``KILLED`` after a signal (the result rides on the
    :class:`~drama.errors.RunStopped`), or ``FAILED``; the env is closed in every case."""
    try:
        loop.run(tracker, stop)
    except RunStopped as stopped:
        tracker.finish("KILLED")
        stopped.result = FitResult.of(loop, start, stopped=signal.Signals(stopped.signum).name)
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    finally:
        loop.env.close()
    result = FitResult.of(loop, start)
    tracker.finish("FINISHED")
    return result
