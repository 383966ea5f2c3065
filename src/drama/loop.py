"""DramaLoop: the paper's schedule (docs/decisions.md, "Training schedule") on Lightning Fabric; no maths here.

One iteration: act (random during warm-up or with an empty acting window, else the policy on the cached window) ->
env step, whose result is the replay row -> world-model update(s) -> imagination + actor-critic update(s) -> batched
logging -> periodic checkpoint. No backbone is named here; the counters: :class:`drama.run.LoopState`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from tensordict import TensorDict

from drama.acting import ActingContext
from drama.config import DramaConfig, batch_shape
from drama.divergence import DivergenceGuard, as_divergence
from drama.errors import Diverged, RunStopped, StopOnSignal
from drama.imagination import imagine
from drama.metrics import STEPS_PER_SECOND, MetricAccumulator
from drama.progress import ProgressBar
from drama.run import LoopState, RunFolder, TrainingParts, load_training_state, save_training_state
from drama.tracking import Tracker


class DramaLoop:
    """Coordinates env, replay, the two LightningModules, the tracker and checkpoints; the run folder gives the
    checkpoint and visuals paths (:mod:`drama.run`)."""

    def __init__(self, cfg: DramaConfig, fabric, world_model, actor_critic, replay, env, run_dir: Path) -> None:
        self.cfg, self.fabric = cfg, fabric
        self.world_model, self.actor_critic, self.replay, self.env = world_model, actor_critic, replay, env
        self.folder, self.state, self.observation = RunFolder(Path(run_dir)), LoopState(), None
        self.acting = ActingContext(world_model, actor_critic, cfg.train.acting_context)
        self.parts = TrainingParts(world_model, actor_critic, replay, self.acting, env)
        self.metrics = MetricAccumulator()
        self.guard = DivergenceGuard([("world_model", world_model), ("actor_critic", actor_critic)])
        self.tracker: Tracker | None = None
        """the run's MLflow record while :meth:`run` runs (None: nothing is tracked, e.g. ``drama bench``)."""
        self.phase = "acting"
        """the phase of the iteration under way (named when the run diverges; :meth:`in_phase`)."""
        self._last_log_time, self._last_log_step = time.perf_counter(), 0

    # ------------------------------------------------------------------ schedule
    def run(self, tracker: Tracker | None = None, stop: StopOnSignal | None = None) -> LoopState:
        """Train to ``train.total_steps`` (or the target return), logging to ``tracker``; a signal recorded by
        ``stop`` (``drama fit``'s, armed since the run folder exists; by default one armed here) ends the run after
        the iteration in flight with a checkpoint (:class:`~drama.errors.RunStopped`)."""
        self.tracker, train = tracker, self.cfg.train
        if self.observation is None:
            self.start_episode()
        with ProgressBar(train.total_steps, self.state.step, enabled=self.cfg.runtime.progress) as bar, \
                (stop or StopOnSignal()) as stop:
            while self.state.step < train.total_steps and not self.state.reached(train.stop_at_return) \
                    and stop.signum is None:
                try:
                    self.iteration(bar)
                except (Diverged, RuntimeError) as error:
                    self.write_metrics(force=False)  # what led up to it, into the run's record
                    if isinstance(error, Diverged):
                        raise
                    self.check_divergence()  # e.g. sampling from non-finite probabilities: name what diverged
                    raise as_divergence(error, self.phase, self.state.step + 1, self.folder.last_good()) from None
        self.write_metrics(force=True)
        self.check_divergence()
        every = train.visuals_every
        if every and self.state.step % every and self.state.step > train.prefill_steps and stop.signum is None:
            self.log_visuals()  # the final state, unless the last periodic one just showed it (a signal: save now)
        self.save_checkpoint()
        if stop.signum is not None:  # stopped between two iterations: `drama fit --resume` continues exactly
            raise RunStopped(stop.signum, self.state.step, str(self.folder.root))
        return self.state

    def iteration(self, bar: ProgressBar) -> None:
        """One env step and what the schedule does after it, each in its named phase."""
        train = self.cfg.train
        with self.in_phase("acting"):
            self.env_step()
        if self.learning():
            with self.in_phase("the world-model update"):
                if self.due(train.world_model_every):
                    self.update("world_model", train.world_model_updates, self.train_world_model)
            with self.in_phase("imagination and the actor-critic update"):
                if self.due(train.actor_critic_every):
                    self.update("imagination", train.actor_critic_updates, self.train_actor_critic)
            with self.in_phase("the visuals"):
                if self.due(train.visuals_every):
                    self.log_visuals()
        with self.in_phase("logging"):
            if self.due(train.log_every):
                bar.update(self.state.step, self.write_metrics(force=False), self.state.last_return)
                self.check_divergence()
        with self.in_phase("the checkpoint"):
            if self.due(train.checkpoint_every):
                self.save_checkpoint()

    def due(self, every: int) -> bool:
        """Whether something done every ``every`` env steps (0: never) is due at this step."""
        return bool(every) and self.state.step % every == 0

    @contextmanager
    def in_phase(self, name: str) -> Iterator[None]:
        """Name the phase under way (an error inside it is reported as having happened in it)."""
        self.phase = name
        yield

    def learning(self) -> bool:
        """Updates happen after the warm-up and up to ``learning_steps``."""
        return self.cfg.train.prefill_steps < self.state.step <= self.cfg.train.learning_steps

    # ------------------------------------------------------------------ phases
    def env_step(self) -> None:
        """Act on the current observation, then step the env and store the row."""
        with self.metrics.timed("time/act"):
            action = self.choose_action()
        with self.metrics.timed("time/env"):
            self.step_env(action)

    def choose_action(self) -> int:
        """Random during the warm-up (nothing encoded), else the shared acting step (:mod:`drama.acting`)."""
        warm_up = self.state.step < self.cfg.train.prefill_steps or self.state.step == 0
        return self.acting.act_and_observe(self.observation, self.env.num_actions, random=warm_up)

    def step_env(self, action: int) -> None:
        """Step the env with ``action``, write its replay row, handle an episode end."""
        result = self.env.step(action)
        self.replay.extend(result.replay_row())
        ended = self.state.count(result.reward, result.episode_end)
        if ended is not None:
            self.track(ended, step=self.state.step)
            self.start_episode()
        else:
            self.observation = result.observation

    def start_episode(self) -> None:
        """Reset the env and clear the acting window."""
        self.observation = self.env.reset()
        self.acting.reset()

    def update(self, mode: str, updates: int, train) -> None:
        """``updates`` times: draw a replay batch for ``mode`` and ``train`` on it (skipped without valid starts)."""
        for _ in range(updates):
            batch = self.draw(mode)
            if batch is None:
                self.state.skipped_updates += 1
                return
            train(batch)

    def draw(self, mode: str) -> TensorDict | None:
        """A replay batch for ``mode`` (:func:`drama.config.batch_shape`) on the training device, or None if too few
        valid starts."""
        with self.metrics.timed("time/replay"):
            batch = self.replay.draw(mode, *batch_shape(self.cfg, mode))
            return None if batch is None else self.fabric.to_device(batch)

    def train_world_model(self, batch: TensorDict) -> None:
        """One world-model update on ``batch``."""
        with self.metrics.timed("time/world_model"):
            metrics = self.world_model.training_step(batch)
            self.state.world_model_updates += 1
            self.guard.watch_update("world_model/", metrics, self.state.step)
            self.metrics.add(metrics, prefix="world_model/")

    def train_actor_critic(self, context: TensorDict) -> None:
        """Imagine from ``context`` and make one actor-critic update on the rollouts."""
        with self.metrics.timed("time/actor_critic"):
            imagined = imagine(self.world_model, context, self.actor_critic.act, self.cfg.imagination.horizon)
            metrics = self.actor_critic.training_step(imagined)
            self.state.actor_critic_updates += 1
            self.guard.watch_update("actor_critic/", metrics, self.state.step)
            metrics["imagined_reward"] = imagined["reward"].mean()
            metrics["imagined_termination"] = imagined["termination"].float().mean()
            self.metrics.add(metrics, prefix="actor_critic/")

    # ------------------------------------------------------------------ logging and checkpoints
    def write_metrics(self, force: bool = True) -> float:
        """Write the means since the last write (non-finite ones too: the chart shows a blow-up), the counters and DFS
        statistics, unless nothing accumulated and not ``force``; returns env steps/s since the last write."""
        now, s = time.perf_counter(), self.state
        steps = s.step - self._last_log_step
        rate = steps / max(now - self._last_log_time, 1e-9)
        metrics = self.metrics.pop()
        if not metrics and not force:
            return rate
        metrics.update({**({STEPS_PER_SECOND: rate} if steps else {}), **s.progress(),
                        **{f"replay/{k}": v for k, v in self.replay.stats().items()}})
        self.track(metrics, step=s.step)
        self._last_log_time, self._last_log_step = now, s.step
        return rate

    def track(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def log_visuals(self) -> list[Path]:
        """:func:`drama.visuals.write_training_visuals` of the latest replay window (peeked: no DFS counts), also
        logged as MLflow artifacts of the same name."""
        from drama.visuals import write_training_visuals

        context, horizon = self.cfg.imagination.context_length, self.cfg.imagination.horizon
        window = self.replay.latest_window(context + horizon) if self.world_model.pixels else None
        if window is None:
            return []
        with self.metrics.timed("time/visuals"):
            paths = write_training_visuals(self.world_model, window, context, self.state.step, self.folder.visuals)
            for path in paths if self.tracker is not None else []:
                self.tracker.log_artifact(path, self.folder.artifact_path(path))
        return paths

    def check_divergence(self) -> None:
        """Stop (:class:`~drama.errors.Diverged`) if a watched value or a parameter is not finite."""
        self.guard.check(self.state.step, self.folder.last_good())

    def save_checkpoint(self) -> Path:
        """Save the training state, unless the run diverged (the last good checkpoint is never overwritten)."""
        self.check_divergence()
        with self.metrics.timed("time/checkpoint"):
            return save_training_state(self.fabric, self.folder.checkpoint, self.parts, asdict(self.state),
                                       self.observation)

    def load_checkpoint(self, path: Path | None = None) -> None:
        """Continue from the run folder's checkpoint (or ``path``): everything :meth:`save_checkpoint` saved."""
        restored = load_training_state(self.fabric, path or self.folder.checkpoint, self.parts,
                                       fallback=None if path else self.folder.previous_checkpoint,
                                       config=self.folder.config)
        self.state, self.observation = LoopState(**restored.loop), restored.observation
        self._last_log_step = self.state.step
