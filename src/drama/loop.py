"""DramaLoop: the paper's schedule (docs/decisions.md, "Training schedule") on Lightning Fabric; no maths here.

One iteration: act (random during warm-up or with an empty acting window, else the policy on the cached
window) -> env step -> store the row -> world-model update(s) -> imagination + actor-critic update(s) ->
batched logging -> periodic checkpoint. Nothing here knows which dynamics backbone is inside the world model.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict

from drama.acting import ActingContext
from drama.config import DramaConfig, one_line
from drama.divergence import DivergenceGuard
from drama.errors import Diverged, RunStopped, StopOnSignal
from drama.imagination import imagine
from drama.progress import ProgressBar
from drama.run import RunFolder, TrainingParts, load_training_state, save_training_state
from drama.tracking import ENV_STEPS, EPISODE_LENGTH, EPISODE_RETURN, STEPS_PER_SECOND, MetricAccumulator, Tracker

_NON_FINITE = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)
"""An error message about non-finite values (e.g. torch.multinomial's "contains either `inf`, `nan` or ...")."""


@dataclass
class LoopState:
    """Counters that a checkpoint restores."""

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


class DramaLoop:
    """Coordinates env, replay, the two LightningModules, the tracker and checkpoints.

    ``tracker`` is the run's MLflow record (None: nothing is tracked, e.g. ``drama bench`` and tests); the run
    folder gives the checkpoint and visuals paths (:mod:`drama.run`).
    """

    def __init__(self, cfg: DramaConfig, fabric, world_model, actor_critic, replay, env, run_dir: Path,
                 tracker: Tracker | None = None) -> None:
        self.cfg, self.fabric = cfg, fabric
        self.world_model, self.actor_critic = world_model, actor_critic
        self.replay, self.env, self.tracker = replay, env, tracker
        self.folder = RunFolder(Path(run_dir))
        self.state = LoopState()
        self.acting = ActingContext(world_model, actor_critic, cfg.train.acting_context)
        self.parts = TrainingParts(world_model, actor_critic, replay, self.acting, env)
        self.metrics = MetricAccumulator()
        self.guard = DivergenceGuard()
        self.phase = "acting"
        """the phase of the iteration under way (named when the run diverges)."""
        self.observation: torch.Tensor | None = None
        self._last_log_time = time.perf_counter()
        self._last_log_step = 0

    # ------------------------------------------------------------------ schedule
    def run(self, stop: StopOnSignal | None = None) -> LoopState:
        """Train to ``train.total_steps`` (or the target return); a signal recorded by ``stop`` (``drama fit``'s,
        armed since the run folder exists; by default one armed here) ends the run after the iteration in flight
        with a checkpoint (:class:`~drama.errors.RunStopped`)."""
        train = self.cfg.train
        if self.observation is None:
            self.observation = self.env.reset()
            self.acting.reset()
        with ProgressBar(train.total_steps, self.state.step, enabled=self.cfg.runtime.progress) as bar, \
                (stop or StopOnSignal()) as stop:
            while self.state.step < train.total_steps and not self.reached_target() and stop.signum is None:
                try:
                    self.iteration(bar)
                except Diverged:
                    self.write_metrics(force=False)  # what led up to it, into the run's record
                    raise
                except RuntimeError as error:  # e.g. sampling from non-finite probabilities: name what diverged
                    self.write_metrics(force=False)
                    self.check_divergence()
                    first_line = one_line(error)
                    if not _NON_FINITE.search(first_line):
                        raise
                    raise Diverged(f"{self.phase} failed at env step {self.state.step + 1} ({first_line}); "
                                   f"the run stopped and kept the last good checkpoint: {self.last_good()}") from None
        self.log_metrics(force=True)
        every = self.cfg.train.visuals_every
        if (every and self.state.step % every and self.state.step > self.cfg.train.prefill_steps
                and stop.signum is None):  # a signal stop saves at once: a scheduler's grace period is short
            self.log_visuals()  # the final state, unless the last periodic one just showed it
        self.save_checkpoint()
        if stop.signum is not None:  # stopped between two iterations: `drama fit --resume` continues exactly
            raise RunStopped(stop.signum, self.state.step, str(self.folder.root))
        return self.state

    def iteration(self, bar: ProgressBar) -> None:
        """One env step and what the schedule does after it (``phase`` names the one under way)."""
        self.phase = "acting"
        self.env_step()
        if self.learning():
            self.phase = "the world-model update"
            self.update_world_model()
            self.phase = "imagination and the actor-critic update"
            self.update_actor_critic()
            self.phase = "the visuals"
            self.maybe_log_visuals()
        self.phase = "logging"
        self.maybe_log(bar)
        self.phase = "the checkpoint"
        self.maybe_checkpoint()

    def reached_target(self) -> bool:
        """``train.stop_at_return`` reached by the mean of the last 10 episode returns."""
        target, returns = self.cfg.train.stop_at_return, self.state.returns[-10:]
        return target is not None and len(returns) == 10 and sum(returns) / 10 >= target

    def learning(self) -> bool:
        """Updates happen after the warm-up and up to ``learning_steps``."""
        step = self.state.step
        return self.cfg.train.prefill_steps < step <= self.cfg.train.learning_steps

    def policy_active(self) -> bool:
        return self.state.step >= self.cfg.train.prefill_steps and self.state.step > 0

    # ------------------------------------------------------------------ phases
    def env_step(self) -> None:
        """Act on the current observation, then step the env and store the row."""
        start = time.perf_counter()
        action = self.choose_action()
        act_time = time.perf_counter()
        self.step_env(action)
        self.metrics.add({"time/act": act_time - start, "time/env": time.perf_counter() - act_time})

    def choose_action(self) -> int:
        """Random during the warm-up (nothing encoded), else the shared acting step (:mod:`drama.acting`)."""
        return self.acting.act_and_observe(self.observation, self.env.num_actions, random=not self.policy_active())

    def step_env(self, action: int) -> None:
        """Step the env with ``action``, write the row to the replay, handle an episode end."""
        result = self.env.step(action)
        self.replay.extend(TensorDict({
            "observation": self.observation.unsqueeze(0),
            "action": torch.tensor([action]),
            "reward": torch.tensor([result.reward], dtype=torch.float32),
            "termination": torch.tensor([result.terminated or result.life_loss]),
            "episode_end": torch.tensor([result.terminated or result.truncated]),
        }, batch_size=[1]))
        self.state.step += 1
        self.state.episode_return += result.reward
        self.state.episode_length += 1
        if result.terminated or result.truncated:
            self.end_episode()
            self.observation = self.env.reset()
            self.acting.reset()
        else:
            self.observation = result.observation

    def end_episode(self) -> None:
        s = self.state
        s.episodes += 1
        s.last_return = s.episode_return
        s.returns.append(s.episode_return)
        self.track({EPISODE_RETURN: s.episode_return, EPISODE_LENGTH: s.episode_length,
                    "episode/index": s.episodes}, step=s.step)
        s.episode_return, s.episode_length = 0.0, 0

    def update_world_model(self) -> None:
        train = self.cfg.train
        if self.state.step % train.world_model_every:
            return
        for _ in range(train.world_model_updates):
            batch = self.draw("world_model")
            if batch is None:
                self.state.skipped_updates += 1
                return
            self.train_world_model(batch)

    def update_actor_critic(self) -> None:
        if self.state.step % self.cfg.train.actor_critic_every:
            return
        for _ in range(self.cfg.train.actor_critic_updates):
            context = self.draw("imagination")
            if context is None:
                self.state.skipped_updates += 1
                return
            self.train_actor_critic(context)

    def draw(self, mode: str) -> TensorDict | None:
        """A replay batch for ``mode`` (``world_model``: train.batch_size x batch_length windows; ``imagination``:
        imagination.batch_size x context_length) on the training device, or None if too few valid starts."""
        start = time.perf_counter()
        batch = self.replay.draw(mode, *self.batch_shape(mode))
        if batch is None:
            return None
        batch = self.fabric.to_device(batch)
        self.metrics.add({"time/replay": time.perf_counter() - start})
        return batch

    def batch_shape(self, mode: str) -> tuple[int, int]:
        """(sequences, length) of the replay batches of ``mode``."""
        if mode == "world_model":
            return self.cfg.train.batch_size, self.cfg.train.batch_length
        return self.cfg.imagination.batch_size, self.cfg.imagination.context_length

    def train_world_model(self, batch: TensorDict) -> None:
        """One world-model update on ``batch``."""
        start = time.perf_counter()
        metrics = self.world_model.training_step(batch)
        self.state.world_model_updates += 1
        self.watch("world_model/", metrics)
        self.metrics.add(metrics, prefix="world_model/")
        self.metrics.add({"time/world_model": time.perf_counter() - start})

    def train_actor_critic(self, context: TensorDict) -> None:
        """Imagine from ``context`` and make one actor-critic update on the rollouts."""
        start = time.perf_counter()
        imagined = imagine(self.world_model, context, self.actor_critic.act, self.cfg.imagination.horizon)
        metrics = self.actor_critic.training_step(imagined)
        self.state.actor_critic_updates += 1
        self.watch("actor_critic/", metrics)
        metrics["imagined_reward"] = imagined["reward"].mean()
        metrics["imagined_termination"] = imagined["termination"].float().mean()
        self.metrics.add(metrics, prefix="actor_critic/")
        self.metrics.add({"time/actor_critic": time.perf_counter() - start})

    # ------------------------------------------------------------------ logging and checkpoints
    def maybe_log(self, bar: ProgressBar) -> None:
        if self.state.step % self.cfg.train.log_every == 0:
            rate = self.log_metrics()
            bar.update(self.state.step, rate, self.state.last_return)

    def log_metrics(self, force: bool = False) -> float:
        """Write the accumulated means as one batch, then check for divergence; returns env steps/s since the last
        log."""
        rate = self.write_metrics(force)
        self.check_divergence()
        return rate

    def write_metrics(self, force: bool = True) -> float:
        """Write the means accumulated since the last write (non-finite values too: the chart shows a blow-up) with
        the progress counters and DFS statistics, unless nothing accumulated and not ``force``; returns env steps/s
        since the last write."""
        now = time.perf_counter()
        steps = self.state.step - self._last_log_step
        rate = steps / max(now - self._last_log_time, 1e-9)
        metrics = self.metrics.pop()
        if not metrics and not force:
            return rate
        s = self.state
        if steps:
            metrics[STEPS_PER_SECOND] = rate
        metrics.update({ENV_STEPS: s.step, "progress/world_model_updates": s.world_model_updates,
                        "progress/actor_critic_updates": s.actor_critic_updates,
                        "progress/episodes": s.episodes, "progress/skipped_updates": s.skipped_updates})
        metrics.update({f"replay/{k}": v for k, v in self.replay.stats().items()})
        self.track(metrics, step=self.state.step)
        self._last_log_time, self._last_log_step = now, self.state.step
        return rate

    def track(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def maybe_log_visuals(self) -> None:
        every = self.cfg.train.visuals_every
        if every and self.state.step % every == 0:
            self.log_visuals()

    def log_visuals(self) -> list[Path]:
        """Imagination video (raw 64x64 frames), its comparison with reality and a reconstruction image of the
        latest replay window (both labelled and upscaled), written to the run folder's visuals and logged as MLflow
        artifacts of the same name. Training is unaffected: the window is peeked (no DFS counts) and the RNG state
        is restored afterwards."""
        from drama.visuals import (
            LABELLED_FPS,
            imagination_frames,
            labelled_imagination,
            labelled_reconstruction,
            reconstruction_grid,
            write_gif,
            write_png,
        )

        context, horizon = self.cfg.imagination.context_length, self.cfg.imagination.horizon
        window = self.replay.latest_window(context + horizon) if self.world_model.pixels else None
        if window is None:
            return []
        start = time.perf_counter()
        device = self.world_model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            frames = imagination_frames(self.world_model, window, context)
            grid = reconstruction_grid(self.world_model, window["observation"])
        step = self.state.step
        folder, tag = self.folder.visuals, f"step{step:08d}"
        paths = [write_gif(frames["imagination"], folder / f"{tag}_imagination.gif"),
                 write_gif(labelled_imagination(frames, context, step), folder / f"{tag}_imagination_vs_real.gif",
                           fps=LABELLED_FPS),
                 write_png(labelled_reconstruction(grid, step), folder / f"{tag}_reconstruction.png")]
        if self.tracker is not None:
            for path in paths:
                self.tracker.log_artifact(path, self.folder.artifact_path(path))
        self.metrics.add({"time/visuals": time.perf_counter() - start})
        return paths

    def maybe_checkpoint(self) -> None:
        every = self.cfg.train.checkpoint_every
        if every and self.state.step % every == 0:
            self.save_checkpoint()

    def watch(self, prefix: str, metrics: dict) -> None:
        """Let the divergence guard see an update's loss and gradient norm (no host sync)."""
        for key in ("loss/total", "grad_norm"):
            self.guard.watch(prefix + key, metrics[key], self.state.step)

    def last_good(self) -> str:
        last = self.folder.checkpoint
        return str(last) if last.exists() else "none (no checkpoint was saved yet)"

    def check_divergence(self) -> None:
        """Stop (:class:`~drama.errors.Diverged`) if a watched value or a parameter is not finite."""
        self.guard.check([("world_model", self.world_model), ("actor_critic", self.actor_critic)], self.state.step,
                         self.last_good())

    def save_checkpoint(self) -> Path:
        """Save the training state, unless the run diverged (the last good checkpoint is never overwritten)."""
        self.check_divergence()
        start = time.perf_counter()
        last = self.folder.checkpoint
        try:
            path = save_training_state(self.fabric, last, self.parts, asdict(self.state), self.observation)
        except OSError as exc:  # e.g. a full disk: say what was being written and that nothing was lost
            size = f"about {last.stat().st_size / 2**20:,.0f} MiB like the last one, " if last.exists() else ""
            kept = f"the last good checkpoint {last} is intact" if last.exists() else "no checkpoint was saved before"
            exc.add_note(f"the checkpoint of env step {self.state.step}, {size}in {last.parent}; {kept}")
            raise
        self.metrics.add({"time/checkpoint": time.perf_counter() - start})
        return path

    def load_checkpoint(self, path: Path | None = None) -> None:
        """Continue from the run folder's checkpoint (or ``path``): everything :meth:`save_checkpoint` saved."""
        restored = load_training_state(self.fabric, path or self.folder.checkpoint, self.parts,
                                       fallback=None if path else self.folder.previous_checkpoint,
                                       config=self.folder.config)
        self.state = LoopState(**restored.loop)
        self.observation = restored.observation
        self._last_log_step = self.state.step
