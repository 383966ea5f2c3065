"""EnvRunner: steps, and a mid-episode state that a fresh runner rebuilds exactly (resume)."""

from __future__ import annotations

import pytest
import torch

from drama.config import EnvConfig
from drama.envs.runner import EnvRunner


@pytest.mark.parametrize("cfg", [
    EnvConfig("ALE/Breakout-v5", noop_max=30, reseed="sequence"),
    EnvConfig("CartPole-v1", reseed="sequence"),
])
def test_a_fresh_runner_resumes_mid_episode_exactly(cfg):
    runner = EnvRunner(cfg, seed=5)
    gen = torch.Generator().manual_seed(0)

    def action() -> int:
        return int(torch.randint(runner.num_actions, (), generator=gen))

    runner.reset()
    for _ in range(3):  # a few episodes so the reset counter and the no-op RNG have moved on
        while True:
            result = runner.step(action())
            if result.terminated or result.truncated:
                runner.reset()
                break
    for _ in range(7):
        last = runner.step(action())
    saved = runner.state_dict()

    restored = EnvRunner(cfg, seed=5)
    restored.load_state_dict(saved)
    for _ in range(30):
        a = action()
        x, y = runner.step(a), restored.step(a)
        assert torch.equal(x.observation, y.observation) and x.reward == y.reward
        assert (x.terminated, x.truncated, x.life_loss) == (y.terminated, y.truncated, y.life_loss)
        if x.terminated or x.truncated:
            assert torch.equal(runner.reset(), restored.reset())  # next episode's seed and no-ops agree too
    assert last.observation.shape == runner.spec.obs_shape


def test_step_result_fields():
    runner = EnvRunner(EnvConfig("ALE/Pong-v5"), seed=1)
    obs = runner.reset()
    assert obs.dtype == torch.uint8 and obs.shape == (3, 64, 64) and runner.num_actions == 6
    result = runner.step(0)
    assert isinstance(result.reward, float) and not result.life_loss and not result.terminated
