"""`drama bench`: a smoke run at a tiny config (JSON keys, positive rates), variants, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SMALL_DEBUG
from drama.bench import PHASES, parse_compare
from drama.cli import main
from drama.device import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "conf/debug.yaml")
TINY = [o for o in SMALL_DEBUG if not o.startswith(("replay.capacity", "runtime.progress", "train.log_every"))]


def test_bench_smoke_run_writes_one_json_with_every_phase(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", DEBUG, *TINY, "--iterations", "2", "--warmup", "1", "--threads", "1",
                 "--compare", "train.batch_length=6", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert json.loads(out.read_text()) == result
    assert result["bench"] == "drama" and result["device"] == "cpu" and result["threads"] == 1
    assert result["iterations"] == 2 and result["warmup_iterations"] == 1 and result["torch"]
    names = [v["name"] for v in result["variants"]]
    assert names == ["config", "train.batch_length=6"] and result["best"] in names
    for variant in result["variants"]:
        assert set(variant["median_s"]) == set(PHASES)
        assert all(seconds > 0 for seconds in variant["median_s"].values())
        assert all(len(samples) == 2 for samples in variant["samples_s"].values())
        assert variant["env_steps_per_s"] > 0 and variant["peak_memory_mb"] > 0
        assert variant["memory"] == "process_peak_rss"
        assert variant["precision"] == resolve_precision("auto", torch.device("cpu"))  # this CPU's rule
        assert variant["compile"] == "none" and variant["replay_device"] == "cpu"
        # at the 1:1 schedule of this config the rate is one over the summed phase medians
        assert variant["seconds_per_env_step"] == pytest.approx(
            sum(variant["median_s"][p] for p in PHASES if p != "replay") + sum(variant["median_draw_s"].values()))
        assert variant["first_iteration_s"] > 0
    assert result["variants"][0]["speedup_vs_first"] == 1.0
    assert result["variants"][1]["speedup_vs_first"] == pytest.approx(
        result["variants"][1]["env_steps_per_s"] / result["variants"][0]["env_steps_per_s"])
    assert not list(tmp_path.glob("runs*")) and not (Path.cwd() / "mlflow.db").exists()


def test_parse_compare_splits_like_a_shell():
    assert parse_compare("runtime.precision=bf16-mixed  train.batch_size=4") == [
        "runtime.precision=bf16-mixed", "train.batch_size=4"]
    assert parse_compare("env.id='ALE/Breakout-v5'") == ["env.id=ALE/Breakout-v5"]


@pytest.mark.parametrize("args, needle", [
    (["--config", DEBUG, "--iterations", "0"], "--iterations=0"),
    (["--config", DEBUG, "--compare", "runtime.precision"], "not of the form key=value"),
    (["--config", DEBUG, "--compare", "runtime.precision=fp8"], "runtime.precision"),
    (["--config", DEBUG, "train.nope=1"], "nope"),
    (["--config", DEBUG, "--threads", "0"], "--threads=0"),
    (["--config", str(ROOT / "conf/missing.yaml")], "not found"),
])
def test_bench_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drama: error: ") and needle in lines[0], captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []
