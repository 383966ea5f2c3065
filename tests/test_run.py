"""The run folder: one layout, run.json, the checkpoint file (round trip, damage, fallback) and the agent
loader."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from conftest import assert_identical, tiny_config
from drama.acting import ActingContext
from drama.build import build_models, load_agent
from drama.checkpoint import CHECKPOINT_HEADER, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, CheckpointError, read_checkpoint
from drama.config import ConfigError, load_config
from drama.data.replay import Replay
from drama.envs.spec import EnvSpec
from drama.errors import EXIT_CHECKPOINT
from drama.run import (
    TRAINING_STATE_KEYS,
    RunFolder,
    TrainingParts,
    load_training_state,
    newest_good_checkpoint,
    save_training_state,
)


def test_layout_is_relative_to_the_root(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.name == "run"
    paths = {name: getattr(folder, name) for name in
             ("config", "info", "checkpoint", "previous_checkpoint", "mlflow_db", "artifacts", "visuals", "evaluations",
              "evaluation_videos")}
    assert all(path.is_relative_to(folder.root) for path in paths.values())
    assert len(set(paths.values())) == len(paths)
    assert folder.artifact_path(folder.evaluation_videos / "x.gif") == "evaluations/videos"
    assert folder.artifact_path(folder.visuals / "x.png") == "visuals"


def test_config_and_run_info_round_trip(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = RunFolder(tmp_path / "run")
    assert not folder.holds_run() and folder.read_info() is None
    cfg = load_config(None, ["train.total_steps=7"])
    folder.write_config(cfg)
    assert folder.read_config().train.total_steps == 7
    assert folder.read_config(["train.total_steps=9"]).train.total_steps == 9
    assert folder.tracking_uri() == f"sqlite:///{folder.mlflow_db.resolve()}"
    folder.write_info("abc", folder.tracking_uri())
    assert folder.read_info() == {"mlflow_run_id": "abc", "tracking_uri": folder.tracking_uri()}
    assert str(tmp_path) not in folder.info.read_text()  # self-contained: the own store is recorded relatively
    moved = RunFolder(tmp_path / "moved")
    folder.root.rename(moved.root)
    assert moved.read_info()["tracking_uri"] == f"sqlite:///{moved.mlflow_db.resolve()}"
    folder = moved
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert folder.tracking_uri() == "http://127.0.0.1:5000"


def test_load_agent_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not a drama run directory"):
        load_agent(tmp_path)
    RunFolder(tmp_path).write_config(load_config(None, []))
    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_agent(tmp_path)
    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_agent(tmp_path, checkpoint=Path(tmp_path / "other.ckpt"))


# ---------------------------------------------------------------------- the checkpoint file
def _parts(seed: int, *overrides: str) -> TrainingParts:
    """Tiny models with stepped optimisers, a part-filled replay, an acting window and an env state, all from
    ``seed`` (different seeds: different contents everywhere)."""
    torch.manual_seed(seed)
    cfg = tiny_config("train.batch_size=2", "train.batch_length=3", "imagination.batch_size=4",
                      "imagination.context_length=3", "replay.capacity=16", *overrides)
    world_model, actor_critic = build_models(cfg, EnvSpec((4,), 3))
    for module in (world_model, actor_critic):
        module.configure_optimizers()
        for parameter in module.parameters():
            parameter.grad = torch.randn_like(parameter)
        module.optimizer.step()
        module.lr_warmup.step()
    replay = Replay(cfg.replay, 2, 4, generator=torch.Generator().manual_seed(seed))
    n = 10 + seed
    ends = torch.arange(n) % 7 == 6
    replay.extend(TensorDict(observation=torch.randn(n, 4), action=torch.randint(3, (n,)), reward=torch.randn(n),
                             termination=ends, episode_end=ends.clone(), batch_size=[n]))
    replay.sample("world_model", 2, 3)  # moves the sampler's counters and generator
    acting = ActingContext(world_model, actor_critic, 4)
    acting.latents.extend(torch.randn(2, world_model.latent_dim).unbind())
    acting.actions.extend([seed, 2])
    return TrainingParts(world_model, actor_critic, replay, acting, _Env(seed))


class _Env:
    def __init__(self, seed: int) -> None:
        self.state = {"before_reset": {"seed": seed, "resets": seed + 1}, "episode_actions": [seed, 1]}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def _save(folder: RunFolder, seed: int = 0) -> dict:
    """Save ``_parts(seed)`` as the folder's checkpoint; returns what was saved."""
    parts = _parts(seed)
    loop, observation = {"step": 40 + seed, "returns": [1.0 * seed]}, torch.randn(4)
    save_training_state(None, folder.checkpoint, parts, loop, observation)
    return read_checkpoint(folder.checkpoint)


def _one_line_error(path: Path, *needles: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    # a damaged file is not a usage error: its own exit code (drama.errors.EXIT_CHECKPOINT), not ConfigError's 2
    assert not isinstance(caught.value, ConfigError) and caught.value.exit_code == EXIT_CHECKPOINT, message
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message


def test_save_load_round_trip_is_bitwise_and_writes_only_the_run_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    folder = RunFolder(tmp_path / "run")
    saved = _save(folder, seed=0)
    assert set(saved) == set(TRAINING_STATE_KEYS)
    assert [p.name for p in folder.checkpoint.parent.iterdir()] == ["last.ckpt"]
    head = folder.checkpoint.read_bytes()[:CHECKPOINT_HEADER.size]
    magic, version, length, digest = CHECKPOINT_HEADER.unpack(head)
    assert (magic, version) == (CHECKPOINT_MAGIC, CHECKPOINT_VERSION)
    assert length == folder.checkpoint.stat().st_size - CHECKPOINT_HEADER.size
    assert digest == hashlib.sha256(folder.checkpoint.read_bytes()[CHECKPOINT_HEADER.size:]).digest()

    other = _parts(seed=1)  # different weights, optimiser moments, rows, counters, window and env state
    torch.manual_seed(99)
    restored = load_training_state(None, folder.checkpoint, other)
    assert restored.loop == {"step": 40, "returns": [0.0]} and torch.equal(restored.observation, saved["observation"])
    assert restored.checkpoint == folder.checkpoint
    again = RunFolder(tmp_path / "again")
    save_training_state(None, again.checkpoint, other, restored.loop, restored.observation)
    assert assert_identical(saved, read_checkpoint(again.checkpoint)) > 50  # the RNG states included

    first = folder.checkpoint.read_bytes()
    _save(folder, seed=2)  # the second save keeps the first as previous.ckpt
    assert sorted(p.name for p in folder.checkpoint.parent.iterdir()) == ["last.ckpt", "previous.ckpt"]
    assert folder.previous_checkpoint.read_bytes() == first
    assert read_checkpoint(folder.checkpoint)["loop"]["step"] == 42
    assert list(scratch.iterdir()) == []


def _damage(path: Path, how: str) -> tuple[str, ...]:
    """Damage checkpoint ``path`` in place; returns words the error message must contain."""
    data = bytearray(path.read_bytes())
    size = CHECKPOINT_HEADER.size
    if how == "empty":
        path.write_bytes(b"")
        return ("empty",)
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return ("truncated", "payload bytes")
    if how == "truncated header":
        path.write_bytes(data[:20])
        return ("truncated", "header")
    if how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return ("not a drama checkpoint",)
    if how == "plain torch.save":
        path.write_bytes(data[size:])
        return ("not a drama checkpoint", "plain torch.save")
    if how == "magic":
        data[:8] = b"DRAMAXXX"
    elif how == "version":
        data[8:12] = struct.pack("<I", CHECKPOINT_VERSION + 1)
        path.write_bytes(data)
        return ("format version 2",)
    elif how == "flipped tensor byte":
        # inside the replay's stored observations: far from any pickle or zip structure
        observation = read_checkpoint(path)["replay"]["_storage"]["_storage"]["observation"]
        offset = bytes(data).index(observation.numpy().tobytes())
        data[offset + 5] ^= 0x01
        path.write_bytes(data)
        return ("damaged", "SHA-256")
    elif how == "appended":
        data += b"\0"
        path.write_bytes(data)
        return ("damaged", "unexpected bytes")
    path.write_bytes(data)
    return ("not a drama checkpoint",)


DAMAGES = ["empty", "truncated", "truncated header", "random", "plain torch.save", "magic", "version",
           "flipped tensor byte", "appended"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_raises_one_line_naming_the_file(tmp_path, how):
    folder = RunFolder(tmp_path / "run")
    _save(folder)
    needles = _damage(folder.checkpoint, how)
    _one_line_error(folder.checkpoint, *needles)
    with pytest.raises(CheckpointError, match="no good checkpoint"):  # no previous.ckpt to fall back on
        newest_good_checkpoint(folder)


def test_the_previous_checkpoint_is_the_fallback_when_the_last_is_damaged(tmp_path, capsys):
    folder = RunFolder(tmp_path / "run")
    first = _save(folder, seed=0)
    _save(folder, seed=1)
    assert newest_good_checkpoint(folder) == folder.checkpoint and capsys.readouterr().err == ""
    _damage(folder.checkpoint, "flipped tensor byte")

    assert newest_good_checkpoint(folder) == folder.previous_checkpoint
    warning = capsys.readouterr().err
    assert warning.startswith("drama: warning: ") and warning.count("\n") == 1
    assert str(folder.checkpoint) in warning and f"using {folder.previous_checkpoint}" in warning

    parts = _parts(seed=3)
    restored = load_training_state(None, folder.checkpoint, parts, fallback=folder.previous_checkpoint)
    assert restored.checkpoint == folder.previous_checkpoint and restored.loop == first["loop"]
    assert_identical(first["world_model"], parts.world_model.state_dict())
    assert "using" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="SHA-256"):  # an explicit path: no fallback
        load_training_state(None, folder.checkpoint, parts)

    _damage(folder.previous_checkpoint, "truncated")
    with pytest.raises(CheckpointError) as caught:
        load_training_state(None, folder.checkpoint, parts, fallback=folder.previous_checkpoint)
    message = str(caught.value)
    assert message.startswith("no good checkpoint: ") and "\n" not in message
    assert str(folder.checkpoint) in message and str(folder.previous_checkpoint) in message


def test_a_damaged_last_checkpoint_never_replaces_the_good_previous_one(tmp_path, monkeypatch):
    """After a resume fell back to previous.ckpt, the next save replaces the damaged last.ckpt and keeps
    previous.ckpt, also when the save dies just before its final rename (the moment kill -9 would leave two
    damaged files if the damaged one had been rotated)."""
    folder = RunFolder(tmp_path / "run")
    good = _save(folder, seed=0)
    _save(folder, seed=1)
    good_bytes = folder.previous_checkpoint.read_bytes()
    _damage(folder.checkpoint, "flipped tensor byte")

    import drama.checkpoint as checkpoint

    replace = os.replace

    def dying_replace(src, dst, *args, **kwargs):
        if Path(dst) == folder.checkpoint:
            raise KeyboardInterrupt  # stands for a kill between the rotation and the final rename
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _save(folder, seed=2)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    assert folder.previous_checkpoint.read_bytes() == good_bytes
    assert newest_good_checkpoint(folder, warn=False) == folder.previous_checkpoint
    assert not list(folder.checkpoint.parent.glob("*.tmp"))

    _save(folder, seed=2)  # completes: the damaged last.ckpt is replaced, previous.ckpt is still the good one
    assert folder.previous_checkpoint.read_bytes() == good_bytes
    assert read_checkpoint(folder.checkpoint)["loop"]["step"] == 42
    assert read_checkpoint(folder.previous_checkpoint)["loop"] == good["loop"]
    _save(folder, seed=3)  # and from now on an intact last.ckpt rotates as before
    assert read_checkpoint(folder.previous_checkpoint)["loop"]["step"] == 42


def test_a_checkpoint_that_does_not_fit_the_models_is_one_config_error_naming_both_files(tmp_path):
    folder = RunFolder(tmp_path / "run")
    _save(folder)
    wider = _parts(0, "actor_critic.actor_hidden=24")  # e.g. a config.yaml edited by hand after training
    with pytest.raises(ConfigError) as caught:
        load_training_state(None, folder.checkpoint, wider, config=folder.config)
    message = str(caught.value)
    assert not isinstance(caught.value, CheckpointError) and "\n" not in message, message
    expected = f"the checkpoint {folder.checkpoint} does not fit the models of {folder.config} ("
    assert message.startswith(expected), message
    assert "size mismatch" in message, message


def test_load_agent_falls_back_to_the_previous_checkpoint(finished_debug_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_debug_run, run)
    folder = RunFolder(run)
    assert load_agent(run).checkpoint == folder.checkpoint
    shutil.copy(folder.checkpoint, folder.previous_checkpoint)
    _damage(folder.checkpoint, "truncated")
    capsys.readouterr()
    agent = load_agent(run)
    assert agent.checkpoint == folder.previous_checkpoint and agent.step == 60
    assert "drama: warning: " in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="truncated"):
        load_agent(run, checkpoint=folder.checkpoint)


def test_a_copied_run_folder_evaluates_into_itself(finished_debug_run, tmp_path, monkeypatch):
    """run.json records the folder's own store relatively and the store's artifact paths follow the folder, so an
    evaluation of a copy logs into the copy and leaves the original untouched."""
    import os
    import shutil
    import subprocess
    import sys

    from drama.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "copy"
    shutil.copytree(finished_debug_run, copy)
    before = sorted(p.relative_to(finished_debug_run) for p in finished_debug_run.rglob("*"))
    assert str(finished_debug_run) not in (copy / "run.json").read_text()
    # a fresh process, as a user runs it (MLflow caches artifact locations per run id within a process)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    subprocess.run([sys.executable, "-m", "drama", "evaluate", str(copy), "--episodes", "1", "--seed", "7",
                    "--no-progress"], check=True, env=env, capture_output=True)
    assert sorted(p.relative_to(finished_debug_run) for p in finished_debug_run.rglob("*")) == before
    tracker = Tracker.open(RunFolder(copy))
    assert tracker.client.get_run(tracker.run_id).info.artifact_uri.startswith(str(copy.resolve()))
    assert list((copy / "mlartifacts").rglob("*seed7-n1.json"))
