"""Imagination: reward / termination alignment (docs/decisions.md, "Imagined rewards belong to the action just
taken"), float latents ("integer latents"), state carry, no context recomputation."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import Tensor, nn

from conftest import tiny_config
from drama.config import BACKBONES
from drama.imagination import imagine
from drama.nn.backbones.base import Backbone
from drama.world_model import WorldModel

NUM_ACTIONS = 5


class ActionEchoBackbone(Backbone):
    """h_t = one_hot(a_t) padded with zeros: the output 'reads' only the action; records how it is called."""

    def __init__(self, input_dim: int, output_dim: int, num_actions: int) -> None:
        super().__init__()
        self.input_dim, self.output_dim, self.num_actions = input_dim, output_dim, num_actions
        self.parallel_lengths: list[int] = []
        self.step_inputs: list[Tensor] = []

    def initial_state(self, batch_size, device=None, dtype=None):
        return TensorDict({"t": torch.zeros(batch_size)}, batch_size=[batch_size])

    def echo(self, x: Tensor) -> Tensor:
        action_one_hot = x[..., -self.num_actions:]
        pad = x.new_zeros(*x.shape[:-1], self.output_dim - self.num_actions)
        return torch.cat([action_one_hot, pad], -1)

    def forward(self, x, state=None):
        self.parallel_lengths.append(x.shape[1])
        state = self.initial_state(x.shape[0]) if state is None else state
        return self.echo(x), TensorDict({"t": state["t"] + x.shape[1]}, batch_size=state.batch_size)

    def step(self, x, state):
        self.step_inputs.append(x.clone())
        return self.echo(x), TensorDict({"t": state["t"] + 1}, batch_size=state.batch_size)


class RewardOfAction(nn.Module):
    """Two-hot logits whose decoded value is 10 * (a + 1) for the action that h has read."""

    def __init__(self, two_hot, num_actions: int) -> None:
        super().__init__()
        self.two_hot, self.num_actions = two_hot, num_actions

    def forward(self, h: Tensor) -> Tensor:
        action = h[..., : self.num_actions].argmax(-1)
        return torch.log(self.two_hot.encode(10.0 * (action + 1).float()) + 1e-12)


class TerminationOfAction(nn.Module):
    """Termination logit > 0 exactly when the action read is the last one."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions

    def forward(self, h: Tensor) -> Tensor:
        action = h[..., : self.num_actions].argmax(-1)
        return torch.where(action == self.num_actions - 1, 1.0, -1.0).unsqueeze(-1)


def context(wm: WorldModel, batch: int, length: int, action: int = 0) -> TensorDict:
    return TensorDict({
        "observation": torch.randn(batch, length, *wm.obs_shape),
        "action": torch.full((batch, length), action),
    }, batch_size=[batch, length])


def cycling_policy():
    """Deterministic stub policy: 1, 2, ..., A-1, 1, 2, ... (never the context action 0)."""
    calls = []

    def policy(features: Tensor) -> Tensor:
        action = len(calls) % (NUM_ACTIONS - 1) + 1
        calls.append(action)
        return torch.full((features.shape[0],), action, dtype=torch.long)

    return policy, calls


def test_reward_and_termination_at_j_belong_to_the_action_taken_at_j():
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, (4,), NUM_ACTIONS)
    wm.dynamics = ActionEchoBackbone(wm.latent_dim + NUM_ACTIONS, wm.hidden_dim, NUM_ACTIONS)
    wm.reward_head = RewardOfAction(wm.two_hot, NUM_ACTIONS)
    wm.termination_head = TerminationOfAction(NUM_ACTIONS)
    policy, calls = cycling_policy()
    horizon = 7
    out = imagine(wm, context(wm, 3, 8, action=0), policy, horizon)

    expected_action = torch.tensor(calls).expand(3, horizon)
    torch.testing.assert_close(out["action"], expected_action)
    # the reward of index j is the one caused by a'_j (not by a'_{j-1}, nor the last context action a_7 = 0)
    torch.testing.assert_close(out["reward"], 10.0 * (expected_action + 1).float(), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out["termination"], expected_action == NUM_ACTIONS - 1)
    assert out["termination"].any() and not out["termination"].all()


def test_context_is_one_parallel_pass_then_float_latent_steps():
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, (4,), NUM_ACTIONS)
    backbone = ActionEchoBackbone(wm.latent_dim + NUM_ACTIONS, wm.hidden_dim, NUM_ACTIONS)
    wm.dynamics = backbone
    policy, _ = cycling_policy()
    out = imagine(wm, context(wm, 4, 8), policy, horizon=5)
    assert backbone.parallel_lengths == [8]  # never recomputed per step
    assert len(backbone.step_inputs) == 5
    for x in backbone.step_inputs:  # float straight-through latents reach the step, never truncated ("integer latents")
        assert x.dtype.is_floating_point
        latent = x[:, : wm.latent_dim].reshape(4, cfg.world_model.stoch_dim, cfg.world_model.class_dim)
        torch.testing.assert_close(latent.sum(-1), torch.ones(4, cfg.world_model.stoch_dim))
        assert (latent.amax(-1) > 0.99).all()
    assert out["features"].shape == (4, 6, wm.feature_dim)
    assert out["action"].shape == out["reward"].shape == out["termination"].shape == (4, 5)
    assert out["context_latent"].shape == (4, 8, wm.latent_dim)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_carried_state_equals_one_parallel_pass_over_context_and_imagined_tokens(backbone):
    """With every real backbone, the imagined h are those of one pass over all tokens (dropout off)."""
    cfg = tiny_config(f"world_model.backbone.name={backbone}")
    wm = WorldModel(cfg.world_model, (3, 64, 64), NUM_ACTIONS).double()
    wm.train()
    ctx = context(wm, 2, 6)
    ctx["observation"] = torch.rand(2, 6, 3, 64, 64, dtype=torch.float64)
    policy, _ = cycling_policy()
    out = imagine(wm, ctx, policy, horizon=9)
    assert wm.training  # mode restored
    latent = wm.latent_dim
    tokens = torch.cat([
        wm.embed(out["context_latent"].double(), ctx["action"]),
        wm.embed(out["features"][:, :-1, :latent], out["action"]),
    ], 1)
    wm.eval()
    with torch.no_grad():
        h, _ = wm.dynamics(tokens)
    torch.testing.assert_close(out["features"][:, 1:, latent:], h[:, 6:].to(out["features"].dtype),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["features"][:, 0, latent:], h[:, 5].to(out["features"].dtype),
                               rtol=1e-5, atol=1e-5)
