"""benchmarks/scaling.py end to end on a tiny model: rows, summary keys, Markdown and PNG (no timing asserted)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
ALL_BACKBONES = ("mamba2", "mamba", "gru", "transformer")
BUILT = [name for name in ALL_BACKBONES if importlib.util.find_spec(f"drama.nn.backbones.{name}") is not None]
TINY = ["--config", str(ROOT / "conf/debug.yaml"), "--batch", "1", "--repeats", "1", "--imagine-batch", "4",
        "--context", "4", "--horizon", "3", "--threads", "1", *TINY_OVERRIDES]


@pytest.fixture
def scaling():
    """The benchmark module; ``--threads`` changes this process's torch threads, so they are restored."""
    threads = torch.get_num_threads()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("scaling")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        torch.set_num_threads(threads)


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_every_backbone_every_length_inline(scaling, tmp_path, capsys):
    assert scaling.main(["--backbones", *ALL_BACKBONES, "--lengths", "8", "16", "--isolate", "inline",
                         "--device", "cpu", "--out-dir", str(tmp_path), *TINY]) == 0
    lines = _lines(capsys)
    summary = json.loads((tmp_path / "scaling_cpu.json").read_text())
    assert lines == summary["results"]
    assert len(lines) == len(ALL_BACKBONES) * (1 + 2 * 2)
    meta = summary["meta"]
    assert meta["batch"] == 1 and meta["repeats"] == 1 and meta["lengths"] == [8, 16] and meta["device"] == "cpu"
    for key in ("torch", "device_name", "cpu_count", "threads", "date", "wall_s", "isolate"):
        assert meta[key] is not None
    for row in lines:
        if row["backbone"] not in BUILT:  # not implemented yet: an error entry, not a crash
            assert "error" in row
            continue
        assert "error" not in row, row
        assert row["median_s"] > 0 and row["min_s"] > 0 and len(row["times_s"]) == 1 and row["parameters"] > 0
        assert row["peak_mb"] is None  # inline on CPU: not a per-measurement peak
    table = {(e["backbone"], e["length"]): e for e in summary["table"]}
    assert set(table) == {(b, n) for b in ALL_BACKBONES for n in (8, 16)}
    for (backbone, _), entry in table.items():
        for phase in ("world_model_update", "sequence_model"):
            for key in ("s", "min_s", "peak_mb", "peak_delta_mb"):
                assert f"{phase}_{key}" in entry
            assert (entry[f"{phase}_s"] is not None) == (backbone in BUILT)
    if {"mamba2", "transformer"} <= set(BUILT):
        assert [e["length"] for e in summary["ratios"]] == [8, 16]
        assert all(e["world_model_update_s"] > 0 and e["sequence_model_s"] > 0 for e in summary["ratios"])
    imagination = {row["backbone"]: row for row in summary["imagination"]}
    assert set(imagination) == set(ALL_BACKBONES)
    for name in BUILT:
        row = imagination[name]
        assert row["imagine_steps_per_s"] > 0 and row["context_median_s"] > 0
        assert row["imagine_steps_per_s"] == pytest.approx(3 / row["median_s"], rel=0.05)
        assert row["imagine_tokens_per_s"] == pytest.approx(4 * row["imagine_steps_per_s"], rel=0.05)
    assert "| L |" in (tmp_path / "scaling_cpu.md").read_text()
    assert (tmp_path / "scaling_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fresh_process_per_measurement_reports_peak_memory(scaling, tmp_path, capsys):
    assert scaling.main(["--backbones", "mamba2", "--lengths", "8", "--phases", "sequence_model",
                         "world_model_update", "--isolate", "process", "--device", "cpu", "--out-dir",
                         str(tmp_path), *TINY]) == 0
    lines = _lines(capsys)
    assert [row["phase"] for row in lines] == ["sequence_model", "world_model_update"]
    for row in lines:
        assert "error" not in row, row
        assert row["median_s"] > 0
        assert row["memory_metric"] in ("VmHWM", "ru_maxrss")
        assert row["peak_mb"] > 0 and row["baseline_mb"] > 0 and row["peak_delta_mb"] >= 0
    entry = json.loads((tmp_path / "scaling_cpu.json").read_text())["table"][0]
    assert entry["world_model_update_peak_mb"] == lines[1]["peak_mb"]
    assert (tmp_path / "scaling_cpu.png").is_file()
