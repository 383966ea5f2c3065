"""Surviving faults: kill -9 at three points (one inside a checkpoint save) then resume, and SIGTERM; each
continues bitwise equal to an uninterrupted run (tiny deterministic config, real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL_DEBUG as SMALL
from conftest import assert_identical
from drama.run import RunFolder
from drama.tracking import Tracker
from test_fit import DEBUG, _checkpoint

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 40
COMMON = [*SMALL, "runtime.deterministic=true", "train.log_every=5", "train.checkpoint_every=10"]
STATE_KEYS = ["world_model", "actor_critic", "world_model_optimizer", "actor_critic_optimizer", "world_model_warmup",
              "actor_critic_warmup", "replay", "acting", "env", "observation", "rng", "loop"]
CURVES = ["episode/return", "world_model/loss/total", "actor_critic/loss/total", "replay/rows"]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]  # one worker builds its module fixture


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one is compared with, in a fresh process like them (the test
    process's thread count and other global state may differ after other tests)."""
    out = tmp_path_factory.mktemp("straight")
    proc = drama(out, "fit", "--config", DEBUG, *COMMON, f"train.total_steps={TOTAL}", f"runtime.output_dir={out}",
                 "runtime.run_name=straight")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "straight"


def drama(tmp: Path, *args: str, fault: str | None = None, wait: bool = True) -> subprocess.Popen:
    """``drama ARGS`` in a fresh process (through tests/fault_driver.py when ``fault`` is given), with its own
    empty TMPDIR; with ``wait``, ``stdout`` and ``stderr`` hold what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["TMPDIR"] = str(tmp)
    command = ([sys.executable, str(ROOT / "tests/fault_driver.py"), fault, "--"] if fault
               else [sys.executable, "-m", "drama"]) + list(args)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.stdout, proc.stderr = proc.communicate(timeout=600)  # the texts, for the assertions
    return proc


def assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert sum(assert_identical(a[k], b[k], k) for k in STATE_KEYS) > 50
    assert a["loop"]["step"] == b["loop"]["step"] == TOTAL


def test_kill_9_at_three_points_then_resume_is_bitwise_identical(straight, tmp_path):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    run = tmp_path / "runs" / "killed"
    first = ["fit", "--config", DEBUG, *COMMON, f"train.total_steps={TOTAL}", f"runtime.output_dir={run.parent}",
             "runtime.run_name=killed"]
    resume = ["fit", "--resume", str(run)]
    steps = []
    for args, fault in [(first, "step:27"), (resume, "save:30"), (resume, "log:35")]:
        proc = drama(tmp, *args, fault=fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-3000:])
        steps.append(_checkpoint(run)["loop"]["step"])
    assert steps == [20, 20, 30]  # the save at 30 was killed before it replaced the last checkpoint
    proc = drama(tmp, *resume)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert_same_run(straight, run)
    assert list(tmp.iterdir()) == []  # nothing was left in TMPDIR by any of the four processes
    assert not list(run.rglob("*.tmp"))
    tracker, reference = Tracker.open(RunFolder(run)), Tracker.open(RunFolder(straight))
    assert len(tracker.client.search_runs([tracker.client.get_run(tracker.run_id).info.experiment_id])) == 1
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"
    for key in CURVES:  # as drama report and the notebook read them: the superseded points are left out
        assert tracker.metric_history(key) == reference.metric_history(key), key
    raw = tracker.client.get_metric_history(tracker.run_id, "world_model/loss/total")
    assert len(raw) > len(reference.metric_history("world_model/loss/total")[0])  # MLflow itself keeps them


def test_sigterm_saves_marks_killed_and_resumes_bitwise(straight, tmp_path):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    run = tmp_path / "runs" / "preempted"
    proc = drama(tmp, "fit", "--config", DEBUG, *COMMON, f"train.total_steps={TOTAL}",
                 f"runtime.output_dir={run.parent}", "runtime.run_name=preempted", wait=False)
    deadline = time.monotonic() + 300
    while not RunFolder(run).checkpoint.exists():  # the first periodic checkpoint (env step 10)
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    grace = time.monotonic() - sent
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert grace < 30, grace
    step = _checkpoint(run)["loop"]["step"]
    assert stderr.splitlines() == [f"drama: stopped by SIGTERM at env step {step}, checkpoint saved; continue "
                                   f"with: drama fit --resume {run}"]  # one line on stderr, nothing else
    summary = json.loads(stdout.strip().splitlines()[-1])  # and the JSON summary on stdout, as at a normal end
    assert summary["stopped"] == "SIGTERM" and summary["env_steps"] == step and summary["run_dir"] == str(run)
    tracker = Tracker.open(RunFolder(run))
    assert tracker.client.get_run(tracker.run_id).info.status == "KILLED"

    proc = drama(tmp, "fit", "--resume", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(straight, run)
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"


def test_kill_9_inside_the_first_save_after_a_fallback_keeps_the_good_checkpoint(straight, tmp_path):
    """A run to env step 30 (its periodic save at 30 becomes previous.ckpt when the final one is written), last.ckpt
    damaged -> ``fit --resume`` falls back to previous.ckpt -> kill -9 inside its first save (env step 40, before
    the new file replaces last.ckpt): previous.ckpt is still the good file, and the next resume finishes bitwise
    equal to the uninterrupted run."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    run = tmp_path / "runs" / "fallback"
    folder = RunFolder(run)
    proc = drama(tmp, "fit", "--config", DEBUG, *COMMON, "train.total_steps=30", f"runtime.output_dir={run.parent}",
                 "runtime.run_name=fallback")
    assert proc.returncode == 0, proc.stderr[-3000:]
    good = folder.previous_checkpoint.read_bytes()
    damaged = bytearray(folder.checkpoint.read_bytes())  # one payload byte flipped
    damaged[len(damaged) // 2] ^= 0xFF
    folder.checkpoint.write_bytes(bytes(damaged))

    proc = drama(tmp, "fit", "--resume", str(run), f"train.total_steps={TOTAL}", fault="save:40", wait=False)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert f"using {folder.previous_checkpoint} instead" in stderr
    assert folder.previous_checkpoint.read_bytes() == good
    assert folder.checkpoint.read_bytes() == bytes(damaged)  # the kill came before the new file replaced it

    proc = drama(tmp, "fit", "--resume", str(run), f"train.total_steps={TOTAL}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(straight, run)
    assert _checkpoint(run)["loop"]["step"] == TOTAL


def test_sigterm_during_setup_is_one_line_and_the_run_starts_or_resumes_afterwards(straight, tmp_path):
    """SIGTERM while a new run builds its env and models: exit 143, one line, no checkpoint and no MLflow record;
    the same command then trains the run as if nothing happened. SIGTERM right after a resume opened its record:
    the record ends KILLED, the checkpoint is byte for byte unchanged, and the next resume finishes the run."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    run = tmp_path / "runs" / "setup"
    folder = RunFolder(run)
    new = ["fit", "--config", DEBUG, *COMMON, "train.total_steps=30", f"runtime.output_dir={run.parent}",
           "runtime.run_name=setup"]
    proc = drama(tmp, *new, fault="term:build")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f"drama: stopped by SIGTERM during setup, before the first env step; nothing "
                                        f"was trained and {run} holds no checkpoint: run the same drama fit again "
                                        "(it may reuse the folder)"]
    assert not folder.holds_run() and folder.read_info() is None  # no checkpoint, no MLflow record
    assert drama(tmp, *new).returncode == 0

    saved = folder.checkpoint.read_bytes()
    resume = ["fit", "--resume", str(run), f"train.total_steps={TOTAL}"]
    proc = drama(tmp, *resume, fault="term:tracker")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f"drama: stopped by SIGTERM during setup, before training resumed; the "
                                        f"checkpoints are unchanged; continue with: drama fit --resume {run}"]
    assert folder.checkpoint.read_bytes() == saved
    tracker = Tracker.open(folder)
    assert tracker.client.get_run(tracker.run_id).info.status == "KILLED"
    proc = drama(tmp, *resume)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(straight, run)
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"
