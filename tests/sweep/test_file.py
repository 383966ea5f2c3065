"""The sweep file (:mod:`drama.sweep.file`): validation (one line, exit 2, nothing written), ``--dry-run``, trial
names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from drama.cli import main
from drama.sweep import trial_names


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


def test_key_value_items_may_follow_the_options(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "grid: {runtime.seed: [1, 2]}\n")
    assert main(["sweep", str(path), "--dry-run", "train.total_steps=30", f"runtime.output_dir={tmp_path / 'o'}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == {"sweep": "sweep", "sweep_dir": str(tmp_path / "o" / "sweep"), "trials": 2}
    assert main(["sweep", str(path), "--dry-run", "--no-such-option"]) == 2
    assert capsys.readouterr().err == "drama: error: unrecognized arguments: --no-such-option\n"
