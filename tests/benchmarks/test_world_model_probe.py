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
from diagnose_run import open_loop_rewards  # noqa: E402
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
    result = probe(None, updates=2, every=1, overrides=TINY, holdout=60, seed=0, out=out, config="debug",
                   random_rows=120)
    assert result["replay"] == "random play" and result["replay_rows"] == 120 and result["device"] == "cpu"
    assert [point["update"] for point in result["curve"]] == [1, 2]
    assert all(point["window_information"] > -1e-3 for point in result["curve"])  # mutual information, round-off
    open_loop = result["curve"][-1]["open_loop"]  # 24-row windows (8 context + 16 horizon)
    assert open_loop is not None and math.isfinite(open_loop["imagined_sum_mean"]) and open_loop["zero_mae"] >= 0
    assert out.is_file()
    stopped = probe(None, updates=50, every=25, overrides=TINY, holdout=40, seed=0, config="debug", random_rows=120,
                    time_limit=0.0)  # --time-limit: stops after the first update, with that point measured
    assert stopped["updates"] == 1 and [point["update"] for point in stopped["curve"]] == [1]


def test_open_loop_imagines_the_horizon_under_the_real_actions_and_sums_the_real_rewards():
    from drama.build import build_models
    from drama.config import load_config
    from drama.envs import probe_env

    cfg = load_config("debug", TINY)
    torch.manual_seed(0)
    world_model, _ = build_models(cfg, probe_env(cfg.env))
    world_model.eval()
    B, C, H = 3, 4, 5
    actions = probe_env(cfg.env).num_actions
    obs = torch.randint(0, 256, (B, C + H, 3, 64, 64), dtype=torch.uint8)
    action = torch.randint(actions, (B, C + H))
    reward = torch.randn(B, C + H)
    z, _ = world_model.sample_posterior(obs)
    torch.manual_seed(1)
    h_context, imagined, real = open_loop_rewards(world_model, z, action, reward, C, H)
    assert h_context.shape[:2] == (B, C) and imagined.shape == real.shape == (B,)
    assert torch.allclose(real, reward[:, C:].sum(1))  # the rows after the context, none of it
    other = action.clone()
    other[:, C:] = (action[:, C:] + 1) % actions
    torch.manual_seed(1)  # the same prior samples: only the horizon's actions differ
    assert not torch.allclose(open_loop_rewards(world_model, z, other, reward, C, H)[1], imagined)
