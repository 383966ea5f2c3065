"""`benchmarks/world_model_probe.py`'s window information: what a posterior tells apart inside a window."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from world_model_probe import window_information  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def test_a_window_whose_rows_share_one_code_carries_no_information():
    logits = torch.randn(3, 1, 4, 5).expand(3, 6, 4, 5)  # (B, L, K, C): every row of a window alike
    assert window_information(logits) == pytest.approx(0.0, abs=1e-5)


def test_distinct_certain_codes_carry_the_log_of_their_count_per_variable():
    codes = torch.tensor([0, 1, 2, 3])  # 4 rows, each its own class, in each of 2 variables
    logits = torch.full((1, 4, 2, 4), -50.0)
    logits[0, torch.arange(4), :, codes] = 50.0
    assert window_information(logits) == pytest.approx(2 * math.log(4), rel=1e-4)
