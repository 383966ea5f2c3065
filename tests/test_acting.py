"""Acting window (docs/decisions.md, "re-encoded acting window"): frames encoded once and cached; same result as
re-encoding."""

from __future__ import annotations

import torch

from conftest import tiny_config
from drama.acting import ActingContext
from drama.actor_critic import ActorCritic
from drama.nn.heads import straight_through_sample
from drama.world_model import WorldModel


def models():
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=4)
    ac = ActorCritic(cfg.actor_critic, wm.feature_dim, 4, cfg.world_model.two_hot)
    return wm, ac


def test_cached_window_equals_re_encoding_the_frames_with_the_same_samples():
    wm, ac = models()
    context = ActingContext(wm, ac, length=3)
    frames = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    actions = [1, 3, 0, 2, 1]
    torch.manual_seed(7)
    for frame, action in zip(frames, actions, strict=True):
        context.observe(frame, action)
    assert len(context) == 3 and list(context.actions) == actions[-3:]  # a sliding window of the last 3
    torch.manual_seed(11)
    features = context.features()

    # reference computation: re-encode every frame, drawing the same posterior samples, then the last 3
    wm.eval()
    torch.manual_seed(7)
    with torch.no_grad():
        z = [straight_through_sample(wm.encode(f.unsqueeze(0))).flatten(-2)[0] for f in frames]
        torch.manual_seed(11)
        h, _ = wm.dynamics(wm.embed(torch.stack(z[-3:]).unsqueeze(0), torch.tensor([actions[-3:]])))
        z_hat = wm.sample_prior(h[:, -1])
    torch.testing.assert_close(features, torch.cat([z_hat, h[:, -1]], -1), rtol=0, atol=0)
    assert features.shape == (1, wm.feature_dim)


def test_each_frame_is_encoded_once():
    wm, ac = models()
    calls = []
    wm.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    context = ActingContext(wm, ac, length=16)
    for t in range(20):
        context.observe(torch.zeros(3, 64, 64, dtype=torch.uint8), t % 4)
        assert context.act() is not None
    assert calls == [1] * 20  # one frame per env step, never the whole window again


def test_empty_window_means_random_action_and_reset_clears():
    wm, ac = models()
    context = ActingContext(wm, ac)
    assert context.act() is None
    context.observe(torch.zeros(3, 64, 64, dtype=torch.uint8), 2)
    assert isinstance(context.act(), int) and 0 <= context.act() < 4
    state = context.state_dict()
    context.reset()
    assert len(context) == 0 and context.act() is None
    context.load_state_dict(state)
    assert len(context) == 1 and list(context.actions) == [2]


def test_act_and_observe_is_random_without_a_window_then_the_policy():
    wm, ac = models()
    context = ActingContext(wm, ac)
    frame = torch.zeros(3, 64, 64, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(3)
    expected = int(torch.randint(4, (), generator=torch.Generator().manual_seed(3)).item())
    assert context.act_and_observe(frame, 4, generator=generator) == expected  # empty window: random
    assert len(context) == 1 and list(context.actions) == [expected]
    torch.manual_seed(5)
    action = context.act_and_observe(frame, 4)  # the policy on the window, then o_t is recorded
    torch.manual_seed(5)
    context_copy = ActingContext(wm, ac)
    context_copy.load_state_dict({"latents": [context.latents[0]], "actions": [expected]})
    assert action == context_copy.act()
    assert len(context) == 2 and list(context.actions) == [expected, action]


def test_act_and_observe_in_the_warm_up_encodes_nothing():
    wm, ac = models()
    calls = []
    wm.encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    context = ActingContext(wm, ac)
    torch.manual_seed(0)
    actions = [context.act_and_observe(torch.zeros(3, 64, 64, dtype=torch.uint8), 4, random=True) for _ in range(5)]
    torch.manual_seed(0)
    assert actions == [int(torch.randint(4, ()).item()) for _ in range(5)]  # the global RNG when no generator
    assert calls == [] and len(context) == 0


def test_training_loop_and_evaluation_share_the_one_acting_step(monkeypatch, tmp_path):
    """Both act through ``Acting.step`` for every env step: training through its one-env view
    ``ActingContext.act_and_observe`` (the notebook too), ``drama evaluate`` with its K envs."""
    import inspect

    from drama import evaluate, loop
    from drama.acting import Acting

    calls = []
    original = Acting.step

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("random", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Acting, "step", counting)
    from test_loop import make_loop

    drama_loop, _, _ = make_loop(tmp_path, "train.total_steps=12", "train.prefill_steps=6")
    drama_loop.run()
    assert len(calls) == 12 and calls[:6] == [True] * 6 and calls[6:] == [False] * 6
    assert "acting.step(" in inspect.getsource(evaluate.play_episodes)
    assert "act_and_observe" in inspect.getsource(loop.DramaLoop.choose_action)
    assert "torch.randint" not in inspect.getsource(evaluate) + inspect.getsource(loop)
