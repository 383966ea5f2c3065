"""`drama fit` end to end on CPU: MLflow records, the paper config starting, bitwise resume, user errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import SMALL_DEBUG as SMALL
from conftest import assert_identical
from drama.checkpoint import read_checkpoint
from drama.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "conf/debug.yaml")


def fit(tmp_path: Path, capsys, *args: str) -> dict:
    assert main(["fit", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _local_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_debug_run_records_params_losses_and_episode_returns(tmp_path, capsys):
    import mlflow

    summary = fit(tmp_path, capsys, "--config", DEBUG, *SMALL, "train.total_steps=120",
                  f"runtime.output_dir={tmp_path}", "runtime.run_name=debug")
    run_dir = tmp_path / "debug"
    assert summary["env_steps"] == 120 and summary["episodes"] == 2
    assert summary["world_model_updates"] == summary["actor_critic_updates"] == 100
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()

    run_id = json.loads((run_dir / "run.json").read_text())["mlflow_run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    run = client.get_run(run_id)
    assert run.data.params["world_model.backbone.name"] == "mamba2"
    assert run.data.params["env.id"] == "ALE/Pong-v5"
    assert int(run.data.params["parameters/world_model_total"]) > 0
    for key in ("world_model/loss/total", "world_model/loss/reconstruction", "world_model/kl/dynamics",
                "actor_critic/loss/total", "actor_critic/entropy", "actor_critic/return_scale",
                "replay/rows", "time/world_model", "time/actor_critic", "time/steps_per_second"):
        assert key in run.data.metrics, key
    returns = client.get_metric_history(run_id, "episode/return")
    assert [m.step for m in returns] == [50, 100]
    assert len(client.get_metric_history(run_id, "world_model/loss/total")) >= 9  # batched every 10 steps


@pytest.mark.parametrize("backbone", ["mamba", "gru", "transformer"])  # mamba2: the test above
def test_debug_fit_smoke_per_backbone(tmp_path, capsys, backbone):
    summary = fit(tmp_path, capsys, "--config", DEBUG, *SMALL, "train.total_steps=30", "train.log_every=10",
                  f"world_model.backbone.name={backbone}", f"runtime.output_dir={tmp_path}", "runtime.run_name=b")
    assert summary["env_steps"] == 30
    assert summary["world_model_updates"] == summary["actor_critic_updates"] == 10
    assert f"name: {backbone}" in (tmp_path / "b" / "config.yaml").read_text()


def test_debug_fit_smoke_in_bf16_on_cpu(tmp_path, capsys):
    """The bf16 autocast path end to end (updates, imagination, acting, final visuals), whatever ``auto`` picks
    on this CPU; emulated bf16 is slow without AMX, hence only 4 updates."""
    summary = fit(tmp_path, capsys, "--config", DEBUG, *SMALL, "train.total_steps=24", "runtime.precision=bf16-mixed",
                  f"runtime.output_dir={tmp_path}", "runtime.run_name=bf16")
    assert summary["env_steps"] == 24 and summary["world_model_updates"] == summary["actor_critic_updates"] == 4
    assert list((tmp_path / "bf16" / "visuals").glob("*_imagination.gif"))


def test_paper_config_starts_on_cpu(tmp_path, capsys):
    assert main(["fit", "--config", str(ROOT / "conf/atari.yaml"), "train.total_steps=4", "train.prefill_steps=2",
                 f"runtime.output_dir={tmp_path}", "runtime.run_name=paper", "train.log_every=2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    counts = json.loads(lines[-2])
    assert counts["world_model_total"] == 7_155_459
    assert "name: mamba2" in captured.out and "batch_length: 128" in captured.out
    assert json.loads(lines[-1])["env_steps"] == 4
    assert "ETA" in captured.err and "steps/s" in captured.err


def test_laptop_config_runs_30_env_steps_with_tiny_overrides(tmp_path, capsys):
    """The packaged ``laptop`` preset end to end (its widths, schedule and auto precision/layout), made tiny: short
    episodes, a small buffer and batches; after a 14-step prefill the world model is updated every 4 env steps, the
    actor-critic every 8."""
    tiny = ["env.max_episode_frames=200", "replay.capacity=60", "train.prefill_steps=14", "train.batch_size=2",
            "train.batch_length=8", "imagination.batch_size=4", "imagination.context_length=4",
            "imagination.horizon=4", "train.log_every=10", "train.checkpoint_every=0", "train.visuals_every=0",
            "runtime.progress=false"]
    summary = fit(tmp_path, capsys, "--config", "laptop", *tiny, "train.total_steps=30",
                  f"runtime.output_dir={tmp_path}", "runtime.run_name=laptop")
    assert summary["env_steps"] == 30
    assert summary["world_model_updates"] == 4  # after steps 16, 20, 24, 28
    assert summary["actor_critic_updates"] == 2  # after steps 16, 24
    saved = (tmp_path / "laptop" / "config.yaml").read_text()
    assert "world_model_every: 4" in saved and "actor_critic_every: 8" in saved
    assert "hidden_dim: 256" in saved and "id: ALE/Boxing-v5" in saved


def _checkpoint(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints/last.ckpt")


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, capsys):
    common = ["--config", DEBUG, *SMALL, "runtime.deterministic=true", f"runtime.output_dir={tmp_path}"]
    fit(tmp_path, capsys, *common, "train.total_steps=90", "runtime.run_name=straight")
    first = fit(tmp_path, capsys, *common, "train.total_steps=45", "runtime.run_name=resumed")
    assert first["env_steps"] == 45
    second = fit(tmp_path, capsys, "--resume", str(tmp_path / "resumed"), "train.total_steps=90")
    assert second["env_steps"] == 90

    straight, resumed = _checkpoint(tmp_path / "straight"), _checkpoint(tmp_path / "resumed")
    keys = ["world_model", "actor_critic", "world_model_optimizer", "actor_critic_optimizer", "world_model_warmup",
            "actor_critic_warmup", "replay", "acting", "env", "observation", "rng"]
    compared = sum(assert_identical(straight[k], resumed[k], k) for k in keys)
    assert compared > 50
    assert torch.count_nonzero(straight["replay"]["_sampler"]["c"]) > 0  # DFS counters were exercised
    assert straight["loop"]["world_model_updates"] == resumed["loop"]["world_model_updates"] == 70
    assert straight["loop"]["returns"] == resumed["loop"]["returns"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--config", DEBUG, "world_model.nope=1"], "unknown key 'world_model.nope'"),
        (["--config", DEBUG, "train.total_steps=many"], "train.total_steps"),
        (["--config", DEBUG, "world_model.backbone.name=lstm"], "allowed: mamba2"),
        (["--config", DEBUG, "env.id=ALE/NoSuchGame-v5"], "env.id='ALE/NoSuchGame-v5'"),
        (["--config", DEBUG, "train.total_steps=-5"], "train.total_steps=-5"),
        (["--config", DEBUG, "train.prefill_steps=-1"], "train.prefill_steps=-1"),
        (["--config", "no/such/file.yaml"], "config file not found"),
        (["--config", DEBUG, "--resume", "runs/x"], "not allowed with argument"),
        ([], "one of the arguments --config --resume is required"),
        (["--resume", "no-such-run"], "--resume no-such-run"),
        (["--config", DEBUG, "replay.sampler=prioritized"], "allowed: dfs, uniform"),
        (["--config", DEBUG, "env.noop_max=31"], "env.noop_max=31"),
    ],
)
def test_malformed_invocations_print_one_line_exit_2_and_create_nothing(tmp_path, monkeypatch, capsys, args,
                                                                         needle):
    monkeypatch.chdir(tmp_path)  # the default output folder would be tmp_path/runs
    assert main(["fit", *args, f"runtime.output_dir={tmp_path / 'out'}"] if args[:1] == ["--config"] and
                len(args) > 1 and "--resume" not in args else ["fit", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drama: error: ") and needle in lines[0], captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_at_the_first_config_write_is_one_line_exit_4_and_leaves_nothing(tmp_path, capsys,
                                                                                      monkeypatch):
    """ENOSPC injected into the first file of a new run (its config.yaml): one ``drama: error:`` line naming the
    file and what it was, exit 4, and no run folder left behind (the lock removes the folder it made); the same
    command then starts the run."""
    import errno

    from drama import run as run_module
    from drama.errors import EXIT_WRITE_REFUSED

    real_open = open

    def full_disk(path, *a, **k):
        if str(path).endswith("config.yaml.tmp"):
            file = real_open(path, *a, **k)  # the temporary file exists, then the disk is full
            file.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(run_module, "open", full_disk, raising=False)
    args = ["fit", "--config", DEBUG, *SMALL, "train.total_steps=25", f"runtime.output_dir={tmp_path}",
            "runtime.run_name=full"]
    assert main(args) == EXIT_WRITE_REFUSED
    captured = capsys.readouterr()
    config = tmp_path / "full" / "config.yaml"
    assert captured.err.strip().splitlines() == [
        f"drama: error: no space left on device writing {config}.tmp (the config of the new run, its first file "
        f"({_config_bytes(args)} bytes); nothing was left behind)"]
    assert list(tmp_path.iterdir()) == [] and captured.out == ""

    monkeypatch.undo()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["env_steps"] == 25


def _config_bytes(args: list[str]) -> str:
    from drama.config import load_config, to_yaml

    cfg = load_config(args[2], [a for a in args[3:] if "=" in a])
    return f"{len(to_yaml(cfg).encode()):,}"


def test_a_full_disk_during_a_checkpoint_save_is_one_line_exit_4_and_loses_nothing(tmp_path, capsys, monkeypatch):
    """ENOSPC injected into the checkpoint write at env step 20: one ``drama: error:`` line naming the file, what
    was being written and that the step-10 checkpoint is intact; exit 4; no temporary file; --resume finishes."""
    import errno

    from drama import checkpoint
    from drama.errors import EXIT_WRITE_REFUSED
    from drama.run import RunFolder

    write = checkpoint._HashingWriter.write

    def full_disk_at_the_second_save(self, data):
        if Path(self.file.name).with_suffix("").exists():  # last.ckpt.tmp while last.ckpt exists: not the first save
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.file.name)
        return write(self, data)

    monkeypatch.setattr(checkpoint._HashingWriter, "write", full_disk_at_the_second_save)
    run = tmp_path / "full"
    args = ["fit", "--config", DEBUG, *SMALL, "train.checkpoint_every=10", "train.total_steps=30",
            f"runtime.output_dir={tmp_path}", "runtime.run_name=full"]
    assert main(args) == EXIT_WRITE_REFUSED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    folder = RunFolder(run)
    assert err[0].startswith(f"drama: error: no space left on device writing {folder.checkpoint}.tmp (the "
                             "checkpoint of env step 20, about "), err[0]
    assert f"the last good checkpoint {folder.checkpoint} is intact)" in err[0], err[0]
    assert read_checkpoint(folder.checkpoint)["loop"]["step"] == 10 and not list(run.rglob("*.tmp"))

    monkeypatch.setattr(checkpoint._HashingWriter, "write", write)
    assert main(["fit", "--resume", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["env_steps"] == 30
