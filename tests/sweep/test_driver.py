"""``drama sweep`` end to end on a local Ray (:mod:`drama.sweep.driver`): the 2x2 tiny sweep with two trials at once,
every trial's metrics read back through the sweep's MLflow server, the report; a refused trial is not retried; a
trial whose Ray worker is killed (``kill -9``) and a driver killed after it: the same command finishes the sweep,
the killed trial resumes from its checkpoint, finished trials are not rerun, one MLflow run per trial."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from drama.checkpoint import read_checkpoint
from drama.cli import main
from drama.run import RunFolder
from drama.sweep.trial import CHILD

# one worker runs these one after the other: two sweeps at once would fight over the cores with 4 trials, and the
# kill test must only ever see its own trials' processes
pytestmark = pytest.mark.xdist_group("sweep")

TINY = ROOT / "conf/sweeps/tiny.yaml"
NAMES = ["seed1_mamba2", "seed1_gru", "seed2_mamba2", "seed2_gru"]


def latest_metrics(db: Path, experiment: str) -> dict[str, dict[str, float]]:
    """{run name: {metric key: latest value}} as the sqlite store holds them."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT r.name, m.key, m.value FROM latest_metrics m JOIN runs r ON m.run_uuid = r.run_uuid"
                           " JOIN experiments e ON r.experiment_id = e.experiment_id WHERE e.name = ?",
                           (experiment,)).fetchall()
    found: dict[str, dict[str, float]] = {}
    for name, key, value in rows:
        found.setdefault(name, {})[key] = value
    return found


def run_names(db: Path, experiment: str) -> list[str]:
    with sqlite3.connect(db) as con:
        return sorted(r[0] for r in con.execute(
            "SELECT r.name FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id WHERE e.name = ? "
            "AND r.lifecycle_stage = 'active'",
            (experiment,)))


def same_numbers(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.slow
def test_tiny_sweep_end_to_end_then_skips_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIGINT: ignored in a background job
    assert main(["sweep", str(TINY), f"runtime.output_dir={out}", "--max-concurrent", "2", "--refresh", "1"]) == 0
    # the driver's process gets its own signal handlers back (ray.init replaces SIGTERM's and leaves it)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["skipped"]) == (4, 0, 0), captured.err
    folder = out / "tiny"
    assert summary["sweep_dir"] == str(folder)
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["name"] for t in record["trials"]] == NAMES and {t["status"] for t in record["trials"]} == {"done"}
    # two at once: the third trial starts only when one of the first two is done
    events = [line for line in captured.err.splitlines() if " start " in line or " done " in line]
    assert [e.split()[-1] for e in events[:2]] == NAMES[:2] and " done " in events[2], events
    assert any(line.startswith("sweep: seed1_gru fit ") and "steps/s" in line for line in captured.err.splitlines())

    # every trial's metrics, read back through the sweep's MLflow server (its REST API) when the trial was done,
    # are the ones its store holds; the one experiment is named after the sweep and holds exactly these four runs
    assert record["tracking_uri"].startswith("http://127.0.0.1:")
    stored = latest_metrics(folder / "mlflow.db", "tiny")
    assert run_names(folder / "mlflow.db", "tiny") == sorted(NAMES)
    for trial in record["trials"]:
        assert trial["metrics"]["progress/env_steps"] == 30 and "world_model/loss/total" in trial["metrics"]
        assert same_numbers(trial["metrics"], stored[trial["name"]]), trial["name"]
        assert list((folder / trial["name"] / "evaluations").glob("*.json"))

    with sqlite3.connect(folder / "mlflow.db") as con:
        tags = dict(con.execute("SELECT r.name, t.value FROM tags t JOIN runs r ON t.run_uuid = r.run_uuid "
                                "WHERE t.key = 'sweep.world_model.backbone.name'").fetchall())
    assert tags == {name: name.split("_")[1] for name in NAMES}  # the grid values as tags

    assert summary["report"] == str(folder / "report" / "report.md")
    report = (folder / "report" / "report.md").read_text()
    assert all(f"| {backbone}" in report or backbone in report for backbone in ("mamba2", "gru"))
    assert (folder / "report" / "scores.csv").read_text().count("\n") >= 4
    assert (folder / "report" / "learning_curves.png").is_file()
    # the MLflow server is gone; every trial's run.json now names the sqlite store, so drama's readers still work
    run_info = json.loads((folder / NAMES[0] / "run.json").read_text())
    assert run_info["tracking_uri"].startswith("sqlite:///")
    assert summary["ray_start_s"] > 0 and summary["mlflow_server_start_s"] > 0  # speed: benchmarks/sweep_overhead.py

    assert main(["sweep", str(TINY), f"runtime.output_dir={out}", "--max-concurrent", "2"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["done"], again["failed"], again["skipped"]) == (0, 0, 4)


def test_a_trial_that_starts_over_gets_its_new_record_tagged_too():
    from types import SimpleNamespace

    from drama.sweep.driver import _Driver
    from drama.sweep.file import Trial

    run_ids, tagged_records = iter(["first", "first", "second", "second"]), []
    progress = SimpleNamespace(run_id=lambda name: next(run_ids),
                               record=lambda run_id: SimpleNamespace(set_tags=lambda tags: tagged_records.append(
                                   (run_id, tags["sweep.trial"], tags["sweep.seed"]))))
    driver = SimpleNamespace(progress=progress, tagged=set(), sweep=SimpleNamespace(name="s"))
    trial = Trial(name="t1", grid={"seed": 1}, overrides=["seed=1"])
    for _ in range(4):  # polled twice with its first record, then twice with the record of its new start
        _Driver.tag(driver, trial)
    assert tagged_records == [("first", "t1", "1"), ("second", "t1", "1")]


def test_a_finished_trial_left_on_a_dead_server_is_pointed_back_at_the_sweeps_store(tmp_path):
    # a driver killed between a trial's evaluation and collecting it leaves the trial's run.json on its server
    from drama.sweep.driver import _unpoint_from_servers

    own = f"sqlite:///{tmp_path / 'mlflow.db'}"
    on_server, on_store, on_elsewhere = (tmp_path / n for n in ("a", "b", "c"))
    for folder, uri in ((on_server, "http://127.0.0.1:52863"), (on_store, own), (on_elsewhere, "sqlite:///x.db")):
        folder.mkdir()
        RunFolder(folder).write_info("run-id", uri)
        _unpoint_from_servers(folder, own)
    assert RunFolder(on_server).read_info() == {"mlflow_run_id": "run-id", "tracking_uri": own}
    assert RunFolder(on_store).read_info()["tracking_uri"] == own
    assert RunFolder(on_elsewhere).read_info()["tracking_uri"] == "sqlite:///x.db"  # only servers are unpointed


def test_the_mlflow_server_launched_beside_ray_is_stopped_when_ray_fails_to_start(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from drama.sweep import driver
    from drama.sweep.folder import SweepFolder

    calls = []
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(driver.MlflowServer, "launch", lambda self: calls.append("launch"))
    monkeypatch.setattr(driver.MlflowServer, "start", lambda self: calls.append("start"))
    monkeypatch.setattr(driver.MlflowServer, "stop", lambda self: calls.append("stop"))

    def ray_fails(*args):
        calls.append("ray")
        raise RuntimeError("no Ray")

    monkeypatch.setattr(driver, "_start_ray", ray_fails)
    folder = SweepFolder(tmp_path / "sweep")
    folder.root.mkdir()
    with pytest.raises(RuntimeError, match="no Ray"):
        driver._start_tracking_and_ray(folder, SimpleNamespace(), SimpleNamespace(), None, None, {})
    assert calls == ["launch", "ray", "stop"]  # launched before Ray, never waited for, stopped


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {ROOT / 'conf/debug.yaml'}\n{text}")
    return path


@pytest.mark.slow
def test_a_refused_trial_is_recorded_with_its_one_line_error_and_not_retried(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_sweep(tmp_path, "overrides: [train.total_steps=30]\ngrid: {env.id: [ALE/NoSuchGame-v5]}\n"
                                 "retries: 2\n")  # passes the sweep's checks; drama fit refuses the env id (exit 2)
    assert main(["sweep", str(path), f"runtime.output_dir={tmp_path / 'out'}"]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["failed_trials"]) == (0, 1, ["NoSuchGame-v5"])
    folder = tmp_path / "out" / "sweep"
    (trial,) = json.loads((folder / "sweep.json").read_text())["trials"]
    assert trial["status"] == "failed"
    assert trial["error"].startswith("drama: error: env.id='ALE/NoSuchGame-v5'") and "\n" not in trial["error"]
    assert (folder / "logs" / "NoSuchGame-v5.log").read_text().count("$ drama fit") == 1  # exit 2: not retried


# ------------------------------------------------------------------ kill -9 of a trial's worker, then of the driver
def processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of this machine's processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (parent, cmdline)
    return found


def drama_processes(marker: str) -> dict[int, tuple[int, str]]:
    """The trials' processes (``python -c CHILD fit ... --then evaluate ...``) whose command line holds ``marker``."""
    return {pid: v for pid, v in processes().items() if marker in v[1] and CHILD in v[1]}


def wait_for(condition, timeout: float, what: str, driver: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def checkpoint_step(trial_dir: Path) -> int | None:
    path = RunFolder(trial_dir).checkpoint
    try:
        return int(read_checkpoint(path)["loop"]["step"]) if path.is_file() else None
    except Exception:  # noqa: BLE001 - being replaced right now
        return None


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="finds processes in /proc; PR_SET_PDEATHSIG is Linux's")
def test_killed_worker_and_restarted_driver_finish_the_sweep_resuming_the_killed_trial(tmp_path):
    spec = yaml.safe_load(TINY.read_text())
    spec.update(name="killed", base=str(ROOT / "conf/debug.yaml"), retries=0)
    spec["overrides"] = [o for o in spec["overrides"] if not o.startswith(("train.total_steps", "train.checkpoint"))]
    spec["overrides"] += ["train.total_steps=60", "train.checkpoint_every=10"]
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    folder = out / "killed"
    # the default refresh (10 s): this test reads no table lines, and each refresh asks the server for every trial
    command = [sys.executable, "-m", "drama", "sweep", str(path), f"runtime.output_dir={out}", "--max-concurrent", "2"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(tmp_path / "driver1.err", "wb") as err:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # one trial evaluated, another one fitting past its first checkpoint
        def victim():
            if not any((folder / n / "evaluations").is_dir() for n in NAMES):
                return None
            for name in NAMES:
                fits = {pid: v for pid, v in drama_processes(f"runtime.run_name={name} ").items()
                        if " fit " in v[1] and str(out) in v[1]}  # this test's trials only
                step = checkpoint_step(folder / name)
                if fits and step is not None and step < 60 and not (folder / name / "evaluations").is_dir():
                    return name, step, next(iter(fits.items()))
            return None

        name, step, (fit_pid, (worker_pid, _)) = wait_for(victim, 420, "a trial past its first checkpoint", driver)
        os.kill(worker_pid, signal.SIGKILL)  # the trial's Ray worker; its drama fit gets SIGTERM, checkpoints, exits
        wait_for(lambda: fit_pid not in processes(), 60, "the killed trial's drama fit to exit")
        time.sleep(2)  # the driver records the lost worker (retries: 0) and goes on
        os.kill(driver.pid, signal.SIGKILL)  # a crash of the driver
        driver.wait(timeout=30)
        wait_for(lambda: not drama_processes(str(out)) and not [
            v for v in processes().values() if "mlflow" in v[1] and str(folder) in v[1]], 90,
            "the crashed driver's trials and MLflow server to go away")
    finally:
        if driver.poll() is None:
            driver.kill()
    first = {n: (folder / "logs" / f"{n}.log").read_text() for n in NAMES if (folder / "logs" / f"{n}.log").exists()}
    finished_before = [n for n in NAMES if list((folder / n / "evaluations").glob("*.json"))]
    assert finished_before and name not in finished_before

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["done"] + summary["skipped"], summary["failed"]) == (4, 0), again.stderr[-3000:]
    assert summary["skipped"] == len(finished_before)
    logs = {n: (folder / "logs" / f"{n}.log").read_text() for n in NAMES}
    for done in finished_before:  # not rerun
        assert f"skip {done} (already evaluated)" in again.stderr
        assert logs[done] == first[done] and logs[done].count("$ drama fit") == 1
    assert logs[name].count("$ drama fit --resume") == 1, logs[name]
    # the killed trial resumed from its checkpoint: the step its MLflow run records for the resume is not 0
    db = folder / "mlflow.db"
    with sqlite3.connect(db) as con:
        resumed = con.execute("SELECT m.value FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid WHERE r.name = ? "
                              "AND m.key = 'run/resumed_from_step'", (name,)).fetchall()
    assert resumed and resumed[0][0] >= step >= 10, (resumed, step)
    assert run_names(db, "killed") == sorted(NAMES)  # exactly one MLflow run per trial
    record = json.loads((folder / "sweep.json").read_text())
    assert {t["status"] for t in record["trials"]} == {"done"}
    assert all(t["metrics"]["progress/env_steps"] == 60 for t in record["trials"] if t["name"] not in finished_before)
