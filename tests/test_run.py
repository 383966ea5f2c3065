"""The run folder: one layout, run.json, and the agent loader's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from drama.config import ConfigError, load_config
from drama.run import RunFolder, load_agent


def test_layout_is_relative_to_the_root(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.name == "run"
    paths = {name: getattr(folder, name) for name in
             ("config", "info", "checkpoint", "mlflow_db", "artifacts", "visuals", "evaluations", "evaluation_videos")}
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
