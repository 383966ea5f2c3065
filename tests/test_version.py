"""The version (:mod:`drama.version`): one source (the installed metadata, i.e. pyproject.toml), ``drama
--version``, and the version and git commit recorded with every run (run.json and its MLflow params)."""

from __future__ import annotations

import json
import subprocess
import tomllib

from conftest import ROOT, SMALL_DEBUG
from drama import __version__
from drama.cli import main
from drama.run import RunFolder
from drama.tracking import Tracker
from drama.version import git_commit


def test_version_comes_from_pyproject(capsys):
    assert __version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"drama {__version__}\n"


def test_git_commit_of_this_checkout():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git_commit()
    assert commit is None or commit.removesuffix("+dirty") == head  # None: not run from a git checkout


def test_a_run_records_its_version_and_commit(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["fit", "--config", "debug", *SMALL_DEBUG, "train.total_steps=22", f"runtime.output_dir={out}",
                 "runtime.run_name=v"]) == 0
    capsys.readouterr()
    info = json.loads((out / "v" / "run.json").read_text())
    assert info["drama_version"] == __version__ and info["git_commit"] == git_commit()
    tracker = Tracker.open(RunFolder(out / "v"))
    params = tracker.client.get_run(tracker.run_id).data.params
    assert params["drama/version"] == __version__ and params["drama/git_commit"] == (git_commit() or "none")
    RunFolder(out / "v").write_info(info["mlflow_run_id"], "sqlite:///elsewhere.db")  # a rewrite keeps them
    assert json.loads((out / "v" / "run.json").read_text())["git_commit"] == info["git_commit"]
