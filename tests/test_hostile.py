"""Malformed and hostile invocations of ``drama fit``, ``fit --resume``, ``evaluate``, ``report`` and ``info``: each
exits 2 (5 for a damaged or foreign checkpoint file) with exactly one line ``drama: error: ...`` on stderr, no
traceback, and not one file created or changed.
Then the run-folder lock: a second ``drama fit`` on a locked folder is refused naming the holder's PID; a stale lock
left by a killed process is taken over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SMALL_DEBUG
from drama.cli import main
from drama.errors import EXIT_CHECKPOINT
from drama.run import RunFolder
from drama.run_lock import RunLock

pytestmark = pytest.mark.xdist_group("hostile")  # its module fixture is built once, on one worker

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "conf/debug.yaml")
ATARI = str(ROOT / "conf/atari.yaml")

CUDA = torch.cuda.is_available()
CUDA_DEVICES = torch.cuda.device_count() if CUDA else 0
MPS = torch.backends.mps.is_available()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: kind, size and modification time (ns)."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                path = Path(folder) / name
                stat = path.lstat()
                out[str(path)] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
        out[str(root)] = (True, 0, root.stat().st_mtime_ns)
    return out


def assert_refused(capsys, argv: list[str], needle: str, watch: list[Path], exit_code: int = 2) -> str:
    """``main(argv)`` exits ``exit_code`` (2: a usage error) with one ``drama: error:`` line containing ``needle``,
    prints nothing on stdout and leaves every file under ``watch`` as it was; returns the line."""
    before = snapshot(*watch)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == exit_code, captured.err
    assert len(lines) == 1 and lines[0].startswith("drama: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert needle in lines[0], lines[0]
    assert captured.out == ""
    assert snapshot(*watch) == before
    return lines[0]


@pytest.fixture(scope="module")
def hostile(finished_debug_run, tmp_path_factory) -> Path:
    """Hostile inputs: files that are not configs, evaluations or checkpoints, and copies of the finished run with
    one thing broken each (``run`` is an intact copy to resume)."""
    x = tmp_path_factory.mktemp("hostile")
    (x / "afile").write_text("not a folder\n")
    (x / "list.yaml").write_text("- a\n- b\n")
    (x / "scalar.yaml").write_text("train: 5\n")
    (x / "bin.yaml").write_bytes(bytes(range(128, 256)))
    (x / "bin.json").write_bytes(bytes(range(128, 256)))
    (x / "list.json").write_text("[1, 2]\n")
    (x / "empty_returns.json").write_text(json.dumps({"returns": [], "env_id": "ALE/Pong-v5", "mean": 0.0}))
    (x / "text_returns.json").write_text(json.dumps({"returns": ["a"], "env_id": "ALE/Pong-v5", "mean": 0.0}))
    (x / "emptydir").mkdir()
    (x / "notrun").mkdir()
    shutil.copy(finished_debug_run / "config.yaml", x / "notrun")
    (x / "badckpt" / "checkpoints").mkdir(parents=True)
    shutil.copy(finished_debug_run / "config.yaml", x / "badckpt")
    (x / "badckpt/checkpoints/last.ckpt").write_text("garbage\n")
    for name in ("run", "cudarun", "badinfo", "evalfile", "httprun", "archrun"):
        shutil.copytree(finished_debug_run, x / name)
    config = (x / "cudarun/config.yaml").read_text()
    (x / "cudarun/config.yaml").write_text(config.replace("runtime:\n  device: auto", "runtime:\n  device: cuda"))
    assert "device: cuda" in (x / "cudarun/config.yaml").read_text()
    (x / "badinfo/run.json").write_text("{not json\n")
    shutil.rmtree(x / "evalfile/evaluations")
    (x / "evalfile/evaluations").write_text("a file\n")
    (x / "httprun/run.json").write_text(json.dumps({"mlflow_run_id": "0" * 32,
                                                    "tracking_uri": f"http://127.0.0.1:{closed_port()}"}))
    arch = (x / "archrun/config.yaml").read_text()
    (x / "archrun/config.yaml").write_text(arch.replace("\n  hidden_dim: 64\n", "\n  hidden_dim: 32\n", 1))
    assert "hidden_dim: 32" in (x / "archrun/config.yaml").read_text()
    return x


LONG_NAME = "x" * 300
NO_CUDA = pytest.mark.skipif(CUDA, reason="this machine has CUDA")
FEW_CUDA = pytest.mark.skipif(CUDA_DEVICES > 7, reason="this machine has cuda:7")
NO_MPS = pytest.mark.skipif(MPS, reason="this machine has MPS")

# (argv with {D} debug config, {A} atari config, {X} hostile files, {F} the finished run, {T} an empty output
# folder; environment; the text the error line must hold)
CASES = [
    # ------------------------------------------------------------------ drama info
    ("info --config {X}/list.yaml", {}, "expected a mapping at the top level"),
    ("info --config {X}/scalar.yaml", {}, "scalar.yaml: Merge error"),
    ("info --config {X}/bin.yaml", {}, "cannot parse"),
    ("info --config {X}", {}, "config file not found"),
    ("info --config {D} --bogus", {}, "unrecognized arguments: --bogus"),
    ("info --config {D} world_model.hidden_dim=${{oc.env:DRAMA_NO_SUCH_VARIABLE}}", {}, "DRAMA_NO_SUCH_VARIABLE"),
    ("info --config {D} train.total_steps=${{train.nope}}", {}, "train.nope"),
    ("info --config {D} train.batch_size=1e3", {}, "train.batch_size"),
    ("info --config {D} train=null", {}, "train"),
    ("info --config {D} train.prefill_steps=2000", {}, "train.learning_steps=1500 is invalid: must be > "
                                                       "train.prefill_steps (2000)"),
    ("info --config {D} replay.capacity=40 train.batch_size=64", {}, "train.batch_size=64 is invalid: must be <= "
                                                                     "replay.capacity - train.batch_length + 1 = 9"),
    ("info --config {D} imagination.batch_size=5000", {}, "imagination.batch_size=5000 is invalid"),
    ("info --config {D} replay.capacity=6 train.batch_length=4", {}, "imagination.context_length=8 is invalid: "
                                                                     "must be <= replay.capacity (6)"),
    ("info --config {D} train.world_model_every=1000", {}, "train.world_model_every=1000 is invalid"),
    ("info --config {D} runtime.seed=4294967296", {}, "runtime.seed=4294967296 is invalid"),
    ("info --config {D} env.id=ALE/Pong-v4", {}, "DeprecatedEnv"),
    ("info --config {D} world_model.encoder.mults=[1,2,3,4,4,4,4,4]", {}, "at most 7 layers"),
    # ------------------------------------------------------------------ drama fit, a new run
    ("fit --config {D} runtime.output_dir={X}/afile", {}, "runtime.output_dir='{X}/afile' is invalid: {X}/afile is "
                                                          "a file, not a folder"),
    ("fit --config {D} runtime.output_dir={X}/afile/sub", {}, "{X}/afile is a file"),
    ("fit --config {D} runtime.output_dir={X} runtime.run_name=afile", {}, "runtime.run_name='afile' is invalid"),
    ("fit --config {D} runtime.output_dir={T} runtime.run_name=" + LONG_NAME, {}, "longer than the file system"),
    pytest.param("fit --config {D} runtime.output_dir={T} runtime.device=cuda", {}, "runtime.device='cuda' is "
                 "invalid: no CUDA device", marks=NO_CUDA),
    pytest.param("fit --config {D} runtime.output_dir={T} runtime.device=cuda:7", {}, "runtime.device='cuda:7'",
                 marks=FEW_CUDA),
    pytest.param("fit --config {D} runtime.output_dir={T} runtime.device=mps", {}, "runtime.device='mps'",
                 marks=NO_MPS),
    pytest.param("fit --config {D} runtime.output_dir={T} replay.device=cuda", {}, "replay.device='cuda' is invalid",
                 marks=NO_CUDA),
    ("fit --config {D} runtime.output_dir={T} train.total_steps=100", {}, "train.total_steps=100 is invalid: must "
                                                                          "be > train.prefill_steps (1050)"),
    ("fit --config {A} runtime.output_dir={T} train.total_steps=4", {}, "train.total_steps=4 is invalid"),
    ("fit --config {D} runtime.output_dir={T} runtime.experiment=''", {}, "runtime.experiment='' is invalid"),
    ("fit --config {D} runtime.output_dir={T} world_model.encoder.mults=[1,1,1,1,1,1,1,1]", {}, "at most 7 layers"),
    ("fit --config {D} runtime.output_dir={T}", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{PORT}"},
     "no MLflow server answers GET http://127.0.0.1:{PORT}/health"),
    ("fit --config {D} runtime.output_dir={T}", {"MLFLOW_TRACKING_URI": "sqlite:///{X}/afile/mlflow.db"},
     "{X}/afile is a file"),
    ("fit --config {D} runtime.output_dir={T}", {"MLFLOW_TRACKING_URI": "bogus://host"}, "unknown MLflow store"),
    ("fit --config {D} runtime.output_dir={T}", {"MLFLOW_TRACKING_URI": "{T}/mlruns"}, "no longer opens a file"),
    ("fit --config {D} runtime.output_dir={X} runtime.run_name=run", {}, "already holds a run: use --resume"),
    ("fit --config {D} --resume {X}/run", {}, "not allowed with argument"),
    # ------------------------------------------------------------------ drama fit --resume
    ("fit --resume {X}/afile", {}, "not a drama run directory"),
    ("fit --resume {X}/emptydir", {}, "not a drama run directory"),
    ("fit --resume {X}/notrun", {}, "no checkpoint at"),
    ("fit --resume {X}/badckpt", {}, "no good checkpoint"),
    ("fit --resume {X}/run world_model.hidden_dim=8", {}, "world_model.hidden_dim cannot change on resume"),
    ("fit --resume {X}/run train.total_steps=abc", {}, "train.total_steps"),
    ("fit --resume {X}/run train.nope=1", {}, "unknown key 'train.nope'"),
    ("fit --resume {X}/run --bogus", {}, "unrecognized arguments: --bogus"),
    pytest.param("fit --resume {X}/cudarun", {}, "runtime.device='cuda' is invalid", marks=NO_CUDA),
    ("fit --resume {X}/httprun", {}, "tracking_uri='http://127.0.0.1:"),
    ("fit --resume {X}/badinfo", {}, "run.json is not a readable run-info file"),
    # ------------------------------------------------------------------ drama evaluate
    ("evaluate {F} --episodes 0", {}, "--episodes=0 is invalid"),
    ("evaluate {F} --episodes -3", {}, "--episodes=-3 is invalid"),
    ("evaluate {F} --episodes x", {}, "invalid int value: 'x'"),
    ("evaluate {F} --seed -1", {}, "--seed=-1 is invalid"),
    ("evaluate {F} --seed 4294967296", {}, "--seed=4294967296 is invalid"),
    ("evaluate {F} --device tpu", {}, "--device='tpu' is invalid: allowed: auto, cpu, cuda, cuda:N, mps"),
    pytest.param("evaluate {F} --device cuda", {}, "--device='cuda' is invalid", marks=NO_CUDA),
    pytest.param("evaluate {F} --device cuda:7", {}, "--device='cuda:7' is invalid", marks=FEW_CUDA),
    pytest.param("evaluate {F} --device mps", {}, "--device='mps' is invalid", marks=NO_MPS),
    ("evaluate {F} --greedy --sample", {}, "not allowed with argument --greedy"),
    ("evaluate {F} --bogus", {}, "unrecognized arguments: --bogus"),
    ("evaluate {X}", {}, "not a drama run directory"),
    ("evaluate {X}/notrun", {}, "no checkpoint at"),
    ("evaluate {F} --checkpoint {X}/afile", {}, "afile is not a drama checkpoint"),
    ("evaluate {F} --checkpoint {F}/config.yaml", {}, "is not a drama checkpoint"),
    ("evaluate {F} --checkpoint {X}/nope.ckpt", {}, "no checkpoint at"),
    pytest.param("evaluate {X}/cudarun", {}, "pass --device cpu", marks=NO_CUDA),
    ("evaluate {X}/badinfo", {}, "run.json is not a readable run-info file"),
    ("evaluate {X}/evalfile", {}, "evaluations is a file, not a folder"),
    ("evaluate {X}/httprun", {}, "no MLflow server answers"),
    ("evaluate {X}/archrun --no-progress", {}, "does not fit the models of"),
    # ------------------------------------------------------------------ drama report
    ("report", {}, "the following arguments are required"),
    ("report {X}/nope", {}, "no such run directory or evaluation JSON"),
    ("report {X}/emptydir", {}, "no evaluation results"),
    ("report {X}/empty_returns.json", {}, "returns must be a non-empty list of numbers"),
    ("report {X}/text_returns.json", {}, "returns must be a non-empty list of numbers"),
    ("report {X}/bin.json", {}, "not a readable evaluation JSON (UnicodeDecodeError)"),
    ("report {X}/list.json", {}, "not an evaluation result"),
    ("report {F} --out {X}/afile", {}, "--out='{X}/afile' is invalid: {X}/afile is a file"),
    ("report {F} --out {X}/afile/sub", {}, "{X}/afile is a file"),
    ("report {F} --seed -1", {}, "--seed=-1 is invalid"),
    ("report {F} --reps 0", {}, "--reps=0 is invalid"),
    ("report {F} --reps x", {}, "invalid int value: 'x'"),
    ("report {X}/httprun", {}, "no MLflow server answers"),
    ("report {X}/badinfo", {}, "run.json is not a readable run-info file"),
]


DAMAGED_CHECKPOINT = ("no good checkpoint", "is not a drama checkpoint")
"""Needles of the cases about a damaged or foreign checkpoint file: exit 5 (drama.errors.EXIT_CHECKPOINT), not 2."""


def _case_id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return values[0].replace(" ", "_")[:60] + ("_" + next(iter(values[1])) if values[1] else "")


@pytest.mark.parametrize(("template", "env", "needle"), CASES, ids=[_case_id(c) for c in CASES])
def test_hostile_invocation_is_one_line_exit_2_and_writes_nothing(hostile, finished_debug_run, tmp_path,
                                                                    monkeypatch, capsys, template, env, needle):
    port = closed_port()
    out = tmp_path / "out"
    out.mkdir()
    paths = {"D": DEBUG, "A": ATARI, "X": str(hostile), "F": str(finished_debug_run), "T": str(out), "PORT": port}
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, reports/) would land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**paths))
    argv = [arg.format(**paths) for arg in template.split(" ")]
    exit_code = EXIT_CHECKPOINT if any(part in needle for part in DAMAGED_CHECKPOINT) else 2
    assert_refused(capsys, argv, needle.format(**paths), [tmp_path, hostile, finished_debug_run], exit_code)


def test_the_hostile_list_is_long_enough():
    commands = [(c.values if hasattr(c, "values") else c)[0].split(" ")[0] for c in CASES]
    resumes = sum("--resume" in (c.values if hasattr(c, "values") else c)[0] for c in CASES)
    print(f"{len(CASES)} hostile invocations here (+ 4 in the tests below): {commands.count('info')} info, "
          f"{commands.count('fit') - resumes} fit, {resumes} fit --resume, {commands.count('evaluate')} evaluate, "
          f"{commands.count('report')} report")
    assert len(CASES) >= 40 and {"info", "fit", "evaluate", "report"} <= set(commands) and resumes >= 5


def test_unwritable_output_folder_is_refused(tmp_path, monkeypatch, capsys):
    """Checked with ``os.access`` on the nearest existing folder (root passes a chmod, so the answer is faked)."""
    import drama.preflight

    monkeypatch.chdir(tmp_path)
    real = os.access
    monkeypatch.setattr(drama.preflight.os, "access",
                        lambda path, mode: False if Path(path) == tmp_path else real(path, mode))
    assert_refused(capsys, ["fit", "--config", DEBUG, f"runtime.output_dir={tmp_path / 'new' / 'runs'}"],
                   f"{tmp_path} is not writable by this user", [tmp_path])
    assert_refused(capsys, ["report", str(tmp_path), "--out", str(tmp_path / "r")], "is not writable", [tmp_path])


def test_compile_without_a_cxx_compiler_is_refused(tmp_path, monkeypatch, capsys):
    import drama.preflight

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(drama.preflight.shutil, "which", lambda name: None)
    assert_refused(capsys, ["fit", "--config", DEBUG, f"runtime.output_dir={tmp_path}", "runtime.device=cpu",
                            "runtime.compile=default"], "runtime.compile='default' is invalid: torch.compile on the "
                                                        "CPU needs a C++ compiler", [tmp_path])


def test_an_unreachable_server_is_refused_within_the_timeout(tmp_path, monkeypatch, capsys):
    """A server that accepts the connection but never answers: one line after HEALTH_TIMEOUT_S, not minutes."""
    import time

    import drama.preflight

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(drama.preflight, "HEALTH_TIMEOUT_S", 0.5)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.perf_counter()
        assert_refused(capsys, ["fit", "--config", DEBUG, f"runtime.output_dir={tmp_path}"], "within 0.5 s",
                       [tmp_path])
    assert time.perf_counter() - start < 30


def test_a_cuda_index_beyond_the_machine_names_its_devices(monkeypatch):
    from drama.config import ConfigError
    from drama.preflight import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda")
    check_device("cuda:0")
    with pytest.raises(ConfigError) as info:
        check_device("cuda:7")
    assert str(info.value) == "runtime.device='cuda:7' is invalid: this machine has 1 CUDA device (cuda:0)"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"has 2 CUDA devices \(cuda:0 \.\. cuda:1\)"):
        check_device("cuda:2", "--device")


# ---------------------------------------------------------------------- one writer per run folder
@pytest.fixture
def resumable(finished_debug_run, tmp_path) -> Path:
    run = tmp_path / "runs" / "resumable"
    shutil.copytree(finished_debug_run, run)
    return run


def test_lock_is_released_empty_and_can_be_taken_again(tmp_path):
    folder = tmp_path / "new" / "run"
    with RunLock(folder, create=True) as lock:
        assert RunFolder(folder).lock.read_text() == f"{os.getpid()}\n" and lock.took_over is None
        assert RunLock.holder(folder) == os.getpid()
    assert RunFolder(folder).lock.read_text() == "" and RunLock.holder(folder) is None
    with RunLock(folder):
        pass


def test_second_fit_on_a_locked_folder_is_refused_naming_the_pid(resumable, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    watch = [resumable.parent]
    with RunLock(resumable):
        line = assert_refused(capsys, ["fit", "--resume", str(resumable), "train.total_steps=70"],
                              f"PID {os.getpid()}", watch)
        assert line.startswith(f"drama: error: run directory {resumable} is in use by another drama fit")
        assert_refused(capsys, ["fit", "--config", DEBUG, *SMALL_DEBUG, f"runtime.output_dir={resumable.parent}",
                                f"runtime.run_name={resumable.name}"], f"PID {os.getpid()}", watch)
    starting = resumable.parent / "starting"  # a new run still in its prefill: no checkpoint yet
    with RunLock(starting, create=True):
        assert_refused(capsys, ["fit", "--config", DEBUG, *SMALL_DEBUG, f"runtime.output_dir={resumable.parent}",
                                "runtime.run_name=starting"], f"PID {os.getpid()}", watch)


def test_lock_of_another_process_refuses_then_its_stale_lock_is_taken_over(resumable, capsys, monkeypatch):
    """A real second process holds the lock: refused naming its PID. Killed with SIGKILL, it leaves its PID in the
    lock file and no lock: ``fit --resume`` takes it over with a one-line warning and finishes."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom drama.run_lock import RunLock\n"
         f"with RunLock({str(resumable)!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_refused(capsys, ["fit", "--resume", str(resumable), "train.total_steps=62"], f"PID {holder.pid}",
                       [resumable.parent])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert RunFolder(resumable).lock.read_text() == f"{holder.pid}\n"  # the killed holder's PID stays behind

    assert main(["fit", "--resume", str(resumable), "train.total_steps=62"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "stale lock" in line]
    assert warnings == [f"drama: warning: took over the stale lock {RunFolder(resumable).lock} left by PID "
                        f"{holder.pid}, which is no longer running (killed or crashed)"]
    assert json.loads(captured.out.strip().splitlines()[-1])["env_steps"] == 62
    assert RunFolder(resumable).lock.read_text() == ""  # released: the next fit takes it silently


def test_stale_pid_in_a_free_lock_is_reported_once(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(dead.stdout)
    folder = tmp_path / "run"
    folder.mkdir()
    RunFolder(folder).lock.write_text(f"{pid}\n")
    assert RunLock.holder(folder) is None  # a PID in the file is no lock
    with RunLock(folder) as lock:
        assert lock.took_over == pid
    assert capsys.readouterr().err.count(f"PID {pid}") == 1
    with RunLock(folder) as lock:
        assert lock.took_over is None
    assert capsys.readouterr().err == ""


def test_a_copied_folder_whose_lock_names_a_live_process_says_so(tmp_path, capsys):
    """A run folder copied while its run was writing: the lock file names a PID that is alive but holds no lock
    here. The warning says the folder was copied or moved, not that the process was killed."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        folder = tmp_path / "copy"
        folder.mkdir()
        RunFolder(folder).lock.write_text(f"{live.pid}\n")
        with RunLock(folder) as lock:
            assert lock.took_over == live.pid
        assert capsys.readouterr().err.strip() == (
            f"drama: warning: took over the stale lock {RunFolder(folder).lock} left by PID {live.pid}, which is "
            "running but does not hold it: the folder was copied or moved while that run wrote to it")
    finally:
        live.kill()
        live.wait(timeout=60)
