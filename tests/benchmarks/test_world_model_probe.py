"""`benchmarks/world_model_probe.py`: window information (what a posterior tells apart inside a window) and a
probe on random play, which needs no run folder."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from world_model_probe import probe, random_replay, window_information  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def test_a_window_whose_rows_share_one_code_carries_no_information():
    logits = torch.randn(3, 1, 4, 5).expand(3, 6, 4, 5)  # (B, L, K, C): every row of a window alike
    assert window_information(logits) == pytest.approx(0.0, abs=1e-5)


def test_distinct_certain_codes_carry_the_log_of_their_count_per_variable():
    codes = torch.tensor([0, 1, 2, 3])  # 4 rows, each its own class, in each of 2 variables
    logits = torch.full((1, 4, 2, 4), -50.0)
    logits[0, torch.arange(4), :, codes] = 50.0
    assert window_information(logits) == pytest.approx(2 * math.log(4), rel=1e-4)


TINY = ["env.max_episode_frames=400", "train.batch_size=2", "train.batch_length=8", "runtime.seed=3"]


def test_random_replay_rows_follow_the_replay_contract_and_are_reproducible():
    from drama.config import load_config

    cfg = load_config("debug", TINY)
    data = random_replay(cfg, 150)
    assert data.batch_size == torch.Size([150])
    assert data["observation"].dtype == torch.uint8 and data["observation"].shape[1:] == (3, 64, 64)
    assert data["episode_end"].any()  # 400-frame episodes (100 agent steps): at least one reset inside
    assert torch.equal(random_replay(cfg, 150)["action"], data["action"])


def test_probe_on_random_play_measures_the_held_out_windows(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the probe imports diagnose_run beside it
    out = tmp_path / "probe.json"
    result = probe(None, updates=2, every=1, overrides=TINY, holdout=40, seed=0, out=out, config="debug",
                   random_rows=120)
    assert result["replay"] == "random play" and result["replay_rows"] == 120 and result["device"] == "cpu"
    assert [point["update"] for point in result["curve"]] == [1, 2]
    assert all(point["window_information"] > -1e-3 for point in result["curve"])  # mutual information, round-off
    assert out.is_file()
    stopped = probe(None, updates=50, every=25, overrides=TINY, holdout=40, seed=0, config="debug", random_rows=120,
                    time_limit=0.0)  # --time-limit: stops after the first update, with that point measured
    assert stopped["updates"] == 1 and [point["update"] for point in stopped["curve"]] == [1]
