"""``drama sweep``: validation (one line, exit 2, nothing written), ``--dry-run``, trial names, and one end-to-end
sweep of ``conf/sweeps/tiny.yaml`` on a local Ray with its MLflow server."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import ROOT
from drama.cli import main
from drama.sweep import trial_names

TINY = ROOT / "conf/sweeps/tiny.yaml"


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {ROOT / 'conf/debug.yaml'}\n{text}")
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("text, message", [
    ("grid: {runtime.seed: [1]}\nepochs: 3\n", "unknown key 'epochs'"),
    ("grid: {runtime.seed: [1]}\nresources: {cpus: 1, tpus: 1}\n", "unknown resource 'tpus'"),
    ("grid: {}\n", "grid is empty"),
    ("grid: {runtime.seed: []}\n", "grid key 'runtime.seed' needs a non-empty list"),
    ("grid: {train.no_such_key: [1, 2]}\n", "grid key 'train.no_such_key' is not a config key"),
    ("grid: {runtime.seed: [1, -5]}\n", "trial seed-5: runtime.seed=-5 is invalid"),
    ("grid: {world_model.backbone.name: [gru, lstm]}\n", "trial lstm: world_model.backbone.name='lstm' is invalid"),
    ("grid: {runtime.seed: [1]}\nresources: {gpus: -1}\n", "resources.gpus=-1 is invalid"),
])
def test_bad_sweeps_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, text)
    before = listing(tmp_path)
    assert main(["sweep", str(path), f"runtime.output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("drama: error: ") and message in err, err
    assert listing(tmp_path) == before


def test_dry_run_lists_the_130_atari100k_trials_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(ROOT / "conf/sweeps/atari100k.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1])["trials"] == 130
    trials = lines[:-1]
    assert len(trials) == 130 and len({line.split()[0] for line in trials}) == 130
    assert trials[0].split() == ["Alien-v5_seed1", "env.id=ALE/Alien-v5", "runtime.seed=1"]
    assert listing(tmp_path) == []


def test_trial_names_are_deterministic_and_unique():
    combos = [{"env.id": "ALE/Pong-v5", "runtime.seed": 1}, {"env.id": "ALE/Pong-v5", "runtime.seed": 2},
              {"env.id": "ALE/Breakout-v5", "runtime.seed": 1}]
    assert trial_names(combos) == ["Pong-v5_seed1", "Pong-v5_seed2", "Breakout-v5_seed1"]
    assert trial_names(combos) == trial_names([dict(c) for c in combos])
    clashing = [{"env.id": "a/x", "b.id": "y"}, {"env.id": "b/x", "b.id": "y"}, {"env.id": "x y", "b.id": "?"}]
    names = trial_names(clashing)  # the first two would both be "x_y"; "x y" and "?" are sanitised
    assert names == ["x_y-0", "x_y-1", "x-y_"] and names == trial_names(clashing)


def metric_counts(db: Path) -> dict[str, dict[str, int]]:
    """{run name: {metric key: points}} read from the sweep's sqlite store."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT r.name, m.key, COUNT(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
                           "GROUP BY r.name, m.key").fetchall()
    counts: dict[str, dict[str, int]] = {}
    for name, key, n in rows:
        counts.setdefault(name, {})[key] = n
    return counts


@pytest.mark.slow
def test_tiny_sweep_end_to_end_then_skips_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(["sweep", str(TINY), f"runtime.output_dir={out}", "--max-concurrent", "2"]) == 0
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["skipped"]) == (4, 0, 0), captured.err
    folder = out / "tiny"
    assert summary["sweep_dir"] == str(folder)
    names = ["seed1_mamba2", "seed1_gru", "seed2_mamba2", "seed2_gru"]
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["name"] for t in record["trials"]] == names and {t["status"] for t in record["trials"]} == {"done"}
    for name in names:
        assert "done " + name in captured.err
        assert list((folder / name / "evaluations").glob("*.json"))
    counts = metric_counts(folder / "mlflow.db")  # the server's store, one experiment named after the sweep
    for name in names:
        assert counts[name].get("episode/return", 0) + counts[name].get("world_model/loss/total", 0) > 0, counts
    with sqlite3.connect(folder / "mlflow.db") as con:
        assert con.execute("SELECT COUNT(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                           "WHERE e.name = 'tiny'").fetchone()[0] == 4
    assert summary["report"] == str(folder / "report" / "report.md")
    assert (folder / "report" / "report.md").is_file() and (folder / "report" / "scores.csv").is_file()
    assert (folder / "report" / "learning_curves.png").is_file()
    # the MLflow server is gone; every trial's run.json now names the sqlite store, so drama's readers still work
    run_info = json.loads((folder / names[0] / "run.json").read_text())
    assert run_info["tracking_uri"].startswith("sqlite:///")
    assert seconds < 600 and summary["ray_start_s"] > 0 and summary["mlflow_server_start_s"] > 0

    assert main(["sweep", str(TINY), f"runtime.output_dir={out}", "--max-concurrent", "2"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["done"], again["failed"], again["skipped"]) == (0, 0, 4)


@pytest.mark.slow
def test_a_failing_trial_is_retried_then_recorded_with_its_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_sweep(tmp_path, "overrides: [train.total_steps=30]\ngrid: {env.id: [ALE/NoSuchGame-v5]}\n"
                                 "retries: 1\n")  # passes the sweep's checks; drama fit refuses the env id
    assert main(["sweep", str(path), f"runtime.output_dir={tmp_path / 'out'}"]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["failed_trials"]) == (0, 1, ["NoSuchGame-v5"])
    folder = tmp_path / "out" / "sweep"
    (trial,) = json.loads((folder / "sweep.json").read_text())["trials"]
    assert trial["status"] == "failed"
    assert trial["error"].startswith("drama: error: env.id='ALE/NoSuchGame-v5'") and "\n" not in trial["error"]
    assert (folder / "logs" / "NoSuchGame-v5.log").read_text().count("$ drama fit") == 2  # retries: 1
