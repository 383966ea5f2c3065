"""The sweep's live table (:mod:`drama.sweep.progress`): states from the logs, numbers from the trials' MLflow runs,
ETAs, plain lines off a terminal (one per change), a rich table on one."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from drama.run import RunFolder
from drama.sweep.progress import SweepProgress, TrialStatus, duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_progress(tmp_path: Path, stream, metrics: dict[str, dict[str, float]]) -> SweepProgress:
    trials = [SimpleNamespace(name=n, total_steps=100) for n in ("a", "b", "c")]
    (tmp_path / "logs").mkdir()
    progress = SweepProgress(trials, tmp_path, "sqlite:///unused.db", refresh=3600, stream=stream)
    progress.metrics = lambda name: metrics.get(name)  # what the tracking server would answer (None: no run yet)
    return progress


def test_trial_eta_and_line():
    status = TrialStatus("seed1_gru", total_steps=100, state="fit", step=40, rate=2.0, last_return=-3.25)
    assert status.eta == 30.0
    assert status.line() == "seed1_gru fit 40/100 steps | 2.00 steps/s | ETA 0:00:30 | last return -3.2"
    assert TrialStatus("x", 100, state="evaluate", step=100, rate=2.0).eta is None  # not fitting any more
    assert TrialStatus("x", 100, state="fit").line() == "x fit - steps | - steps/s | ETA - | last return -"
    assert duration(3723.4) == "1:02:03" and duration(None) == "-" and duration(float("inf")) == "-"


def test_poll_reads_states_from_the_logs_and_numbers_from_mlflow(tmp_path):
    stream = io.StringIO()
    metrics = {"a": {"progress/env_steps": 40.0, "time/steps_per_second": 2.0, "episode/return": 5.0}}
    progress = make_progress(tmp_path, stream, metrics)
    with progress:
        for name in ("a", "b"):
            progress.set(name, "starting")
        (tmp_path / "logs" / "a.log").write_text("$ drama fit --config x.yaml\nsome output\n")
        progress.poll(force=True)
        assert (progress.trials["a"].state, progress.trials["a"].step) == ("fit", 40)
        assert progress.trials["b"].state == "starting" and progress.trials["c"].state == "pending"
        progress.poll(force=True)  # the same numbers: no second line
        metrics["a"] = {"progress/env_steps": 100.0, "time/steps_per_second": 4.0}
        (tmp_path / "logs" / "a.log").write_text("$ drama fit --config x.yaml\n$ drama evaluate a --episodes 1\n")
        progress.poll()  # within refresh: nothing read
        assert progress.trials["a"].step == 40
        progress.poll(force=True)
        assert (progress.trials["a"].state, progress.trials["a"].step, progress.trials["a"].rate) == \
            ("evaluate", 100, 4.0)
        assert progress.trials["a"].last_return == 5.0  # no episode since: the last one stays
        progress.set("a", "done", result=7.5)
    lines = stream.getvalue().splitlines()
    assert lines == ["sweep: a fit 40/100 steps | 2.00 steps/s | ETA 0:00:30 | last return 5.0",
                     "sweep: a evaluate 100/100 steps | 4.00 steps/s | ETA - | last return 5.0"]


def test_sweep_eta_spreads_the_steps_left_over_the_running_rates(tmp_path):
    progress = make_progress(tmp_path, io.StringIO(), {})
    progress.set("a", "fit", step=0, rate=2.0)
    progress.set("b", "fit", step=50, rate=3.0)
    assert progress.eta() == (100 + 50 + 100) / 5.0  # c is pending: its steps count, its rate is not known
    progress.set("a", "done")
    progress.set("b", "failed", error="drama: error: boom")
    assert progress.eta() is None
    assert progress.header().startswith("3 trials: 1 pending, 1 done, 1 failed | running 0 | elapsed 0:00:0")


def test_rich_table_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    stream = Terminal()
    progress = make_progress(tmp_path, stream, {})
    with progress:
        progress.set("a", "fit", step=40, rate=2.0, last_return=1.5)
        progress.set("b", "failed", error="drama: error: env.id='x' is invalid")
        progress.say("[1/3] start a")
    text = stream.getvalue()
    for expected in ("3 trials: 1 pending, 1 fit, 1 failed", "trial", "steps/s", "last return", "ETA", "40/100",
                     "0:00:30", "drama: error: env.id='x' is invalid", "sweep: [1/3] start a"):
        assert expected in text, (expected, text)
    assert "a fit 40/100 steps |" not in text  # no plain lines on a terminal
    assert [row.name for row in progress.rows()] == ["a", "b"]  # running first, then failed; pending not shown


def test_metrics_are_the_latest_values_of_the_trials_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "art"))).info.run_id
    for step in (10, 20):
        client.log_metric(run_id, "progress/env_steps", step, step=step)
    progress = SweepProgress([SimpleNamespace(name="a", total_steps=30)], tmp_path, uri)
    assert progress.metrics("a") is None  # no run.json yet
    (tmp_path / "a").mkdir()
    RunFolder(tmp_path / "a").write_info(run_id, uri)
    assert progress.metrics("a") == {"progress/env_steps": 20.0}
    RunFolder(tmp_path / "a").write_info("no-such-run", uri)
    assert progress.metrics("a") is None  # an error of the server is not the sweep's end
