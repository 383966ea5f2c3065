"""DramaLoop schedule (docs/design.md, "One env step") with a scripted env and tiny real models."""

from __future__ import annotations

import math
import os
import signal

import lightning as L
import pytest
import torch

from conftest import tiny_config
from drama.build import build_models
from drama.checkpoint import read_checkpoint
from drama.data.replay import Replay
from drama.envs.runner import StepResult
from drama.envs.spec import EnvSpec
from drama.errors import Diverged, RunStopped
from drama.loop import DramaLoop
from drama.metrics import ENV_STEPS

EPISODE = 30  # every episode terminates after 30 steps; a life is lost at step 10 of each


class ScriptedEnv:
    spec = EnvSpec((4,), 3)
    num_actions = 3

    def __init__(self) -> None:
        self.t, self.resets, self.actions = 0, 0, []

    def reset(self) -> torch.Tensor:
        self.t, self.resets = 0, self.resets + 1
        return torch.zeros(4)

    def step(self, action: int) -> StepResult:
        self.actions.append(action)
        self.t += 1
        return StepResult(torch.full((4,), float(self.t)), reward=1.0, terminated=self.t == EPISODE,
                          truncated=False, life_loss=self.t == 10, acted_on=torch.full((4,), float(self.t - 1)),
                          action=action)

    def state_dict(self) -> dict:
        return {}


def make_loop(tmp_path, *overrides: str) -> tuple[DramaLoop, list[int], list[int]]:
    cfg = tiny_config("train.batch_size=2", "train.batch_length=5", "imagination.batch_size=4",
                      "imagination.context_length=3", "imagination.horizon=3", "runtime.progress=false",
                      "train.log_every=20", "train.checkpoint_every=0", *overrides)
    env = ScriptedEnv()
    world_model, actor_critic = build_models(cfg, env.spec)
    world_model.configure_optimizers()
    actor_critic.configure_optimizers()
    fabric = L.Fabric(accelerator="cpu", devices=1)
    replay = Replay(cfg.replay, cfg.train.batch_size, cfg.imagination.batch_size)
    loop = DramaLoop(cfg, fabric, world_model, actor_critic, replay, env, tmp_path)
    wm_steps, ac_steps = [], []
    wm_update, ac_update = world_model.training_step, actor_critic.training_step
    world_model.training_step = lambda batch: (wm_steps.append(loop.state.step), wm_update(batch))[1]
    actor_critic.training_step = lambda imagined: (ac_steps.append(loop.state.step), ac_update(imagined))[1]
    return loop, wm_steps, ac_steps


def test_schedule_warmup_ratios_and_freeze(tmp_path):
    loop, wm_steps, ac_steps = make_loop(
        tmp_path, "train.total_steps=70", "train.prefill_steps=40", "train.learning_steps=60",
        "train.world_model_every=2", "train.world_model_updates=2", "train.actor_critic_every=5")
    state = loop.run()
    assert state.step == 70 and state.episodes == 2 and loop.env.resets == 3
    assert wm_steps == [s for s in range(42, 61, 2) for _ in range(2)]  # after warm-up, until the freeze
    assert ac_steps == list(range(45, 61, 5))
    assert state.world_model_updates == 20 and state.actor_critic_updates == 4
    assert state.returns == [30.0, 30.0]
    rows = loop.replay.storage.get(slice(None))
    t = rows["observation"][:, 0]  # the scripted observation is the step index within the episode
    assert torch.equal(rows["termination"], (t == 29) | (t == 9))  # terminated or life lost, caused by a_t
    assert torch.equal(rows["episode_end"], t == 29)  # life losses do not end episodes
    assert torch.equal(rows["action"], torch.tensor(loop.env.actions))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_acting_window_starts_after_warmup_and_is_cleared_at_episode_start(tmp_path):
    loop, _, _ = make_loop(tmp_path, "train.total_steps=65", "train.prefill_steps=40", "train.learning_steps=41",
                           "train.acting_context=16")
    loop.run()
    # the last reset was at step 60; the window holds only frames of the running episode (5 steps)
    assert len(loop.acting) == 5
    assert list(loop.acting.actions) == loop.env.actions[-5:]


def test_updates_are_skipped_while_no_window_fits(tmp_path):
    loop, wm_steps, _ = make_loop(tmp_path, "train.total_steps=40", "train.prefill_steps=2",
                                  "train.batch_length=31", "train.actor_critic_every=1000")  # longer than any episode
    state = loop.run()
    assert wm_steps == [] and state.skipped_updates > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_between_iterations_and_saves_a_checkpoint(tmp_path, signum):
    loop, _, _ = make_loop(tmp_path, "train.total_steps=50", "train.prefill_steps=100")
    step = loop.env.step
    # what the process had before (SIG_IGN for SIGINT when started in the background by a non-interactive shell)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def step_then_interrupt(action):
        result = step(action)
        if len(loop.env.actions) == 7:
            os.kill(os.getpid(), signum)
        return result

    loop.env.step = step_then_interrupt
    with pytest.raises(RunStopped) as stopped:
        loop.run()
    assert stopped.value.exit_code == 128 + signum and stopped.value.step == 7
    assert str(stopped.value).startswith(f"stopped by {signal.Signals(signum).name} at env step 7, checkpoint saved")
    assert loop.state.step == 7  # the iteration in flight was completed, nothing after it
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["loop"]["step"] == 7 and len(saved["replay"]["_storage"]["_storage"]["action"]) == 7
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """A learning rate that blows the world model up: the guard stops the run naming the quantity and the last
    good checkpoint, which still loads and holds finite weights."""
    loop, _, _ = make_loop(tmp_path, "train.total_steps=80", "train.prefill_steps=20", "train.log_every=5",
                           "train.checkpoint_every=20", "world_model.optim.lr=1e6",
                           "world_model.optim.max_grad_norm=1e9", "world_model.optim.warmup_steps=0")
    with pytest.raises(Diverged) as diverged:
        loop.run()
    message = str(diverged.value)
    assert "\n" not in message and ("not finite at env step" in message or "failed at env step" in message)
    assert f"last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'}" in message
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["loop"]["step"] < loop.state.step
    assert all(torch.isfinite(v).all() for v in saved["world_model"].values() if v.is_floating_point())


class RecordingTracker:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((step, dict(metrics)))


def test_the_guard_stops_a_non_finite_loss_on_its_own_and_the_metrics_up_to_it_are_written(tmp_path):
    """A world-model loss turns NaN while weights and sampling stay finite (nothing else fails): the guard names it
    at the next checkpoint (env step 30, between two logs), and the metrics of the steps since the last log are
    written, the NaN loss among them, before the run stops."""
    loop, _, _ = make_loop(tmp_path, "train.total_steps=80", "train.prefill_steps=20", "train.log_every=25",
                           "train.checkpoint_every=30")
    tracker = RecordingTracker()
    update = loop.world_model.training_step

    def nan_loss_from_step_27(batch):
        metrics = update(batch)
        if loop.state.step >= 27:
            metrics["loss/total"] = metrics["loss/total"] * float("nan")
        return metrics

    loop.world_model.training_step = nan_loss_from_step_27
    with pytest.raises(Diverged) as diverged:
        loop.run(tracker)
    assert str(diverged.value) == ("world_model/loss/total is not finite at env step 27 (checked at step 30); the run "
                                   "stopped and kept the last good checkpoint: none (no checkpoint was saved yet)")
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # nothing saved from a diverged state
    logs = [(step, metrics) for step, metrics in tracker.logged if ENV_STEPS in metrics]  # not the episode ends
    assert [step for step, _ in logs] == [25, 30]
    assert math.isfinite(logs[0][1]["world_model/loss/total"]) and math.isnan(logs[1][1]["world_model/loss/total"])


def test_other_runtime_errors_are_not_reported_as_divergence(tmp_path):
    loop, _, _ = make_loop(tmp_path, "train.total_steps=5")

    def fail(bar):
        raise RuntimeError("Inference tensors cannot be saved for backward")

    loop.iteration = fail
    with pytest.raises(RuntimeError, match="Inference tensors") as raised:
        loop.run()
    assert not isinstance(raised.value, Diverged)
