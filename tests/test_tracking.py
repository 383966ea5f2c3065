"""Tracker's new stores (a copy of an empty store MLflow migrated once per MLflow version: drama.tracking.new_store)
and new records (one MLflow run per run folder)."""

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
    second = Tracker.start(folder, "exp")  # a new record in the same store; the first one (soft-deleted) still reads
    assert second.run_id != tracker.run_id
    assert Tracker.at(folder.own_store_uri(), tracker.run_id).latest_metrics() == {"a": 1.0}


def _active_runs(tracker: Tracker) -> list[str]:
    experiment = tracker.client.get_run(tracker.run_id).info.experiment_id
    return [run.info.run_id for run in tracker.client.search_runs([experiment])]


def test_a_new_start_over_a_start_stopped_before_its_first_checkpoint_replaces_its_record(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = RunFolder(tmp_path / "run")
    stopped = _start(folder)
    stopped.finish("KILLED")
    again = Tracker.start(folder, "exp")  # drama fit in the same folder: it holds no checkpoint
    assert _active_runs(again) == [again.run_id]
    assert again.client.get_run(stopped.run_id).info.lifecycle_stage == "deleted"
    assert folder.read_info()["mlflow_run_id"] == again.run_id


def test_a_record_in_another_store_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = RunFolder(tmp_path / "run")
    first = _start(folder)  # in the folder's own store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    second = Tracker.start(folder, "exp")
    assert first.client.get_run(first.run_id).info.lifecycle_stage == "active"
    assert folder.read_info() == {"mlflow_run_id": second.run_id, "tracking_uri": f"sqlite:///{tmp_path / 'shared.db'}"}


def test_a_run_json_naming_a_record_the_store_lacks_does_not_stop_a_new_start(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = RunFolder(tmp_path / "run")
    first = _start(folder)
    folder.write_info("0" * 32, folder.own_store_uri())  # a record deleted for good (mlflow gc) or never made
    again = Tracker.start(folder, "exp")
    assert set(_active_runs(again)) == {first.run_id, again.run_id}  # the first one was not named: left alone
