"""Acting window (SPEC 3.1, B15): frames encoded once and cached; same result as re-encoding."""

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
