"""World model: shapes, the world-model losses, optimisation step, and an overfit check on real Pong frames."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from conftest import tiny_config
from drama.world_model import WorldModel


def random_batch(wm: WorldModel, batch: int = 2, length: int = 6) -> TensorDict:
    if wm.pixels:
        obs = torch.randint(0, 256, (batch, length, *wm.obs_shape), dtype=torch.uint8)
    else:
        obs = torch.randn(batch, length, *wm.obs_shape)
    return TensorDict({
        "observation": obs,
        "action": torch.randint(0, wm.num_actions, (batch, length)),
        "reward": torch.randn(batch, length),
        "termination": (torch.rand(batch, length) < 0.2).float(),
    }, batch_size=[batch, length])


@pytest.mark.parametrize("obs_shape", [(3, 64, 64), (4,)])
def test_losses_are_finite_and_every_parameter_learns(obs_shape):
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, obs_shape, num_actions=3)
    losses = wm.compute_losses(random_batch(wm))
    expected = {"loss/total", "loss/reconstruction", "loss/reward", "loss/termination", "loss/dynamics",
                "loss/representation", "kl/dynamics", "kl/representation"}
    assert expected <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    w = cfg.world_model.loss
    total = (losses["loss/reconstruction"] + losses["loss/reward"] + losses["loss/termination"]
             + w.dynamics * losses["loss/dynamics"] + w.representation * losses["loss/representation"])
    torch.testing.assert_close(losses["loss/total"], total)
    assert losses["loss/dynamics"] >= 1.0 and losses["loss/representation"] >= 1.0
    losses["loss/total"].backward()
    no_grad = [n for n, p in wm.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_free_bits_on_the_batch_mean_switch_the_kl_terms_off():
    cfg = tiny_config("world_model.loss.free_bits=1000")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    losses = wm.compute_losses(random_batch(wm))
    assert losses["loss/dynamics"] == 1000 and losses["loss/representation"] == 1000
    losses["loss/total"].backward()
    # only the KL terms reach the prior head, and they are clipped: no gradient (free bits on the batch-mean KL)
    assert wm.prior_head.linear.weight.grad is None or wm.prior_head.linear.weight.grad.abs().sum() == 0


def test_free_bits_step_mode_and_kl_above_floor_trains_prior():
    cfg = tiny_config("world_model.loss.free_bits=0.0")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    losses = wm.compute_losses(random_batch(wm))
    torch.testing.assert_close(losses["loss/dynamics"], losses["kl/dynamics"])
    losses["loss/total"].backward()
    assert wm.prior_head.linear.weight.grad.abs().sum() > 0
    cfg = tiny_config("world_model.loss.free_bits_mode=step", "world_model.loss.free_bits=0.05")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    losses = wm.compute_losses(random_batch(wm))
    assert losses["loss/dynamics"] >= 0.05


def test_representation_free_bits_floor_the_representation_term_alone():
    cfg = tiny_config("world_model.loss.free_bits=0.0", "world_model.loss.representation_free_bits=1000")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    losses = wm.compute_losses(random_batch(wm))
    assert losses["loss/representation"] == 1000
    torch.testing.assert_close(losses["loss/dynamics"], losses["kl/dynamics"])  # its own floor: 0
    assert losses["kl/dynamics"] < 1000
    losses["loss/total"].backward()
    assert wm.prior_head.linear.weight.grad.abs().sum() > 0  # the dynamics term still trains the prior
    default = tiny_config("world_model.loss.free_bits=1000")  # null: the representation term takes free_bits
    assert WorldModel(default.world_model, (4,), num_actions=3).compute_losses(random_batch(wm))[
        "loss/representation"] == 1000


def test_detached_dynamics_input_keeps_the_reward_loss_out_of_the_encoder():
    batch = None
    for detach in (False, True):
        torch.manual_seed(0)
        cfg = tiny_config(f"world_model.loss.detach_dynamics_input={detach}")
        wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=3)
        batch = batch if batch is not None else random_batch(wm)
        wm.compute_losses(batch)["loss/reward"].backward()
        encoder_grad = sum(float(p.grad.abs().sum()) for p in wm.encoder.parameters() if p.grad is not None)
        assert (encoder_grad == 0) == detach  # the reward head reads h, which reads sg(z_t) when detached
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.dynamics.parameters())  # still trained


def test_reconstruction_is_summed_over_pixels_and_averaged_over_steps():
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=3)
    batch = random_batch(wm, 2, 3)
    torch.manual_seed(1)
    losses = wm.compute_losses(batch)
    torch.manual_seed(1)
    posterior = wm.encode(batch["observation"])
    from drama.nn.heads import straight_through_sample

    recon = wm.decode(straight_through_sample(posterior).flatten(-2))
    obs = batch["observation"].float() / 255
    expected = ((recon - obs) ** 2).sum(dim=(2, 3, 4)).mean()
    torch.testing.assert_close(losses["loss/reconstruction"], expected)


def test_training_step_updates_parameters_with_warmup():
    cfg = tiny_config("world_model.optim.warmup_steps=10")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    wm.configure_optimizers()
    before = [p.detach().clone() for p in wm.parameters()]
    metrics = wm.training_step(random_batch(wm))
    assert torch.isfinite(metrics["grad_norm"])
    changed = sum(not torch.equal(a, b) for a, b in zip(before, wm.parameters(), strict=True))
    assert changed > 0.5 * len(before)
    assert wm.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.world_model.optim.lr * 2 / 10)


def pong_frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n consecutive 64x64 RGB frames of Pong (frameskip 4, no sticky actions), random actions."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.wrappers.ResizeObservation(
        gym.make("ALE/Pong-v5", frameskip=4, repeat_action_probability=0.0, full_action_space=False), (64, 64))
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames, actions, rewards = [], [], []
    for _ in range(n):
        action = int(rng.integers(env.action_space.n))
        frames.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        assert not (terminated or truncated)
    env.close()
    return np.stack(frames), np.array(actions), np.array(rewards, dtype=np.float32)


@pytest.mark.slow
def test_overfits_a_small_batch_of_pong_frames():
    batch_size, length = 1, 16
    frames, actions, rewards = pong_frames(batch_size * length + 40)
    frames, actions, rewards = frames[40:], actions[40:], rewards[40:]  # skip the blank start
    shape = (batch_size, length)
    obs = torch.from_numpy(frames).permute(0, 3, 1, 2).reshape(*shape, 3, 64, 64).contiguous()
    assert obs.float().std() > 5  # real frames, not a blank screen
    batch = TensorDict({
        "observation": obs,
        "action": torch.from_numpy(actions).reshape(shape),
        "reward": torch.from_numpy(rewards).reshape(shape),
        "termination": torch.zeros(shape),
    }, batch_size=list(shape))
    cfg = tiny_config("world_model.optim.lr=3e-3", "world_model.optim.warmup_steps=0")
    wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=6)
    wm.configure_optimizers()

    def recon_plus_reward() -> float:
        with torch.no_grad():
            wm.eval()
            losses = wm.compute_losses(batch)
            wm.train()
        return float(losses["loss/reconstruction"] + losses["loss/reward"])

    start = recon_plus_reward()
    for _ in range(150):
        wm.training_step(batch)
    end = recon_plus_reward()
    assert end * 10 <= start, f"reconstruction + reward loss fell only from {start:.1f} to {end:.1f}"


def test_training_step_through_fabric_manual_optimisation():
    import lightning as L

    from drama.device import FabricRuntime

    cfg = tiny_config("world_model.optim.warmup_steps=0")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
    wm.runtime = FabricRuntime(fabric)  # as drama.build hands it over
    optimizer = wm.configure_optimizers()
    wm, _ = fabric.setup(wm, optimizer)
    before = [p.detach().clone() for p in wm.parameters()]
    metrics = wm.training_step(random_batch(wm.module))
    assert torch.isfinite(metrics["loss/total"]) and metrics["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, wm.parameters(), strict=True))
    assert wm.module.lr_warmup.last_epoch == 1  # the warm-up scheduler stepped once


def test_gradient_norm_is_clipped_to_the_configured_maximum():
    cfg = tiny_config("world_model.optim.max_grad_norm=0.001")
    wm = WorldModel(cfg.world_model, (4,), num_actions=3)
    wm.configure_optimizers()
    metrics = wm.training_step(random_batch(wm))
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in wm.parameters() if p.grad is not None]))
    assert metrics["grad_norm"] > 0.001 and clipped <= 0.001 * 1.0001


def test_chunked_encoding_equals_one_pass_in_eval_mode():
    cfg = tiny_config()
    wm = WorldModel(cfg.world_model, (3, 64, 64), num_actions=3).eval()
    obs = torch.randint(0, 256, (3, 5, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(wm.encode(obs, max_frames=4), wm.encode(obs), rtol=1e-5, atol=1e-5)
