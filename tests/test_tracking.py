"""Tracker's new stores: a copy of an empty store MLflow migrated once per MLflow version (drama.tracking.new_store)."""

from __future__ import annotations

import mlflow

from drama.run import RunFolder
from drama.tracking import Tracker, store_template


def _start(folder: RunFolder) -> Tracker:
    folder.root.mkdir(parents=True)
    tracker = Tracker.start(folder, "exp")
    tracker.log_metrics({"a": 1.0}, 1)
    return tracker


def test_a_new_run_store_is_a_copy_of_the_migrated_template_and_mlflow_never_migrates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = _start(RunFolder(tmp_path / "first"))  # makes the template
    template = tmp_path / "cache" / "drama" / f"mlflow-{mlflow.__version__}-empty.db"
    assert store_template() == template and template.is_file()
    assert first.latest_metrics() == {"a": 1.0}

    import mlflow.store.db.utils as db_utils

    def refuse(engine):
        raise AssertionError("MLflow migrated a store that was copied from the template")

    monkeypatch.setattr(db_utils, "_initialize_tables", refuse)
    second = _start(RunFolder(tmp_path / "second"))
    assert second.latest_metrics() == {"a": 1.0}
    assert Tracker.open(RunFolder(tmp_path / "second")).latest_metrics() == {"a": 1.0}
    assert not list((tmp_path / "second").glob(".*partial"))


def test_an_unwritable_cache_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert store_template() is None
    assert _start(RunFolder(tmp_path / "run")).latest_metrics() == {"a": 1.0}


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = RunFolder(tmp_path / "run")
    tracker = _start(folder)
    second = Tracker.start(folder, "exp")  # a second record in the same store: the first one is kept
    assert second.run_id != tracker.run_id
    assert Tracker.at(folder.own_store_uri(), tracker.run_id).latest_metrics() == {"a": 1.0}
