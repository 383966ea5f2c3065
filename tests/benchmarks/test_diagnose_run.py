"""`benchmarks/diagnose_run.py`: the on-policy comparison of the actor's imagined rewards with the real ones (how
model exploitation is measured)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from diagnose_run import on_policy_rewards  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

TINY = ["env.max_episode_frames=400", "train.batch_size=2", "train.batch_length=8", "runtime.seed=3"]


def test_on_policy_compares_the_actors_imagined_sums_with_the_real_horizon_rows():
    from tensordict import TensorDict

    from drama.build import build_models
    from drama.config import load_config
    from drama.envs import probe_env

    cfg = load_config("debug", TINY)
    torch.manual_seed(0)
    world_model, actor_critic = build_models(cfg, probe_env(cfg.env))
    world_model.eval()
    actor_critic.eval()
    last = [m for m in actor_critic.actor.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # a policy that always takes action 2
        last.weight.zero_()
        last.bias.fill_(-100.0)
        last.bias[2] = 100.0
    B, C, H = 4, 3, 5
    actions = actor_critic.num_actions
    batch = TensorDict({"observation": torch.randint(0, 256, (B, C + H, 3, 64, 64), dtype=torch.uint8),
                        "action": torch.randint(actions, (B, C + H)), "reward": torch.randn(B, C + H)},
                       batch_size=[B, C + H])
    result = on_policy_rewards(world_model, actor_critic, batch, C, H)
    real_sum = batch["reward"][:, C:].sum(1)  # the rows after the context, none of it
    assert result["windows"] == B
    assert result["real_sum_mean"] == pytest.approx(float(real_sum.mean()), rel=1e-5)
    assert result["imagined_actions"] == [B * H if a == 2 else 0 for a in range(actions)]
    assert result["real_actions"] == torch.bincount(batch["action"][:, C:].flatten(), minlength=actions).tolist()
    assert result["actor_bias"] == pytest.approx(result["actor_imagined_sum_mean"] - result["real_sum_mean"],
                                                 abs=1e-5)
    assert result["open_loop_bias"] == pytest.approx(result["open_loop_imagined_sum_mean"]
                                                     - result["real_sum_mean"], abs=1e-5)
