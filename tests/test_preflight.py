"""What this machine refuses before anything is written (:mod:`drama.preflight`): here, MLflow servers that answer
but refuse the client (the rest is exercised through the command line in tests/test_hostile.py)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SMALL_DEBUG
from drama.cli import main

ROOT = Path(__file__).resolve().parents[1]


class _Stub(BaseHTTPRequestHandler):
    """/health answers 200 (as an MLflow server behind a login often does); the API answers ``status``."""

    status = 401
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Stub.seen.append((self.path, self.headers.get("Authorization")))
        code = 200 if self.path == "/health" else self.status
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"OK" if code == 200 else b'{"error_code": "UNAUTHENTICATED"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_server_that_refuses_the_api_call_is_one_line_before_anything_is_written(stub_server, tmp_path, capsys,
                                                                                  monkeypatch, status):
    monkeypatch.setattr(_Stub, "status", status)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stub_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    out = tmp_path / "runs"
    assert main(["fit", "--config", str(ROOT / "conf/debug.yaml"), *SMALL_DEBUG, f"runtime.output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"drama: error: MLFLOW_TRACKING_URI='{stub_server}' is invalid: "), err
    assert f"answered HTTP {status}" in err[0] and "/api/2.0/mlflow/experiments/search" in err[0], err[0]
    if status in (401, 403):
        assert "MLFLOW_TRACKING_USERNAME" in err[0], err[0]
    assert not out.exists()
    assert ("/api/2.0/mlflow/experiments/search?max_results=1", "Basic YWxpY2U6d3Jvbmc=") in _Stub.seen


@pytest.mark.parametrize(("content", "needle"), [
    (b"this is not a database" * 100, "is not a readable SQLite database (file is not a database)"),
    ("sqlite-foreign", "is an SQLite database but not an MLflow store (no experiments, metrics, runs table)"),
])
def test_a_damaged_or_foreign_store_in_a_run_folder_is_one_line_before_resume_writes(finished_debug_run, tmp_path,
                                                                                    capsys, monkeypatch, content,
                                                                                    needle):
    import shutil
    import sqlite3

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    shutil.copytree(finished_debug_run, run)
    store = run / "mlflow.db"
    store.unlink()
    if content == "sqlite-foreign":
        with sqlite3.connect(store) as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
    else:
        store.write_bytes(content)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["fit", "--resume", str(run), "train.total_steps=80"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("drama: error: ") and f"{store} {needle}" in err[0], err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config.yaml included
