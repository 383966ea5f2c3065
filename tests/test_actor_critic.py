"""Actor-critic networks, losses and optimisation; the input normalisation (docs/decisions.md, "drifting input
normalisation")."""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from drama.actor_critic import ActorCritic, RunningNorm
from drama.config import ActorCriticConfig, OptimConfig, TwoHotConfig
from drama.device import FabricRuntime

F, A, B, H = 24, 4, 32, 8


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny matmuls are faster single-threaded, especially on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cfg(lr: float = 1e-3, warmup: int = 0) -> ActorCriticConfig:
    return ActorCriticConfig(num_layers=2, actor_hidden=32, critic_hidden=32,
                             optim=OptimConfig(lr=lr, warmup_steps=warmup, max_grad_norm=100.0))


def small_module(cfg: ActorCriticConfig | None = None) -> ActorCritic:
    return ActorCritic(cfg or small_cfg(), F, A, TwoHotConfig())


def imagined_batch(module: ActorCritic | None = None, seed: int = 0) -> TensorDict:
    """Random features; action 1 earns reward 1, every other action 0; no terminations."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(B, H + 1, F, generator=gen) * 2.0 + 1.0
    if module is None:
        action = torch.randint(0, A, (B, H), generator=gen)
    else:
        action = module.act(features[:, :H])
    return TensorDict(features=features, action=action, reward=(action == 1).float(),
                      termination=torch.zeros(B, H, dtype=torch.bool), batch_size=[B])


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_parameter_counts_at_paper_config() -> None:
    module = ActorCritic(ActorCriticConfig(), 32 * 32 + 512, 6, TwoHotConfig())
    assert trainable(module.actor) == 527_366
    assert trainable(module.critic) == 1_444_607
    assert trainable(module.slow_critic) == 0
    assert sum(p.numel() for p in module.slow_critic.parameters()) == 1_444_607
    assert trainable(module) == 527_366 + 1_444_607
    optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*module.actor.parameters(), *module.critic.parameters()]}


def test_init() -> None:
    torch.manual_seed(0)
    module = ActorCritic(ActorCriticConfig(), 1536, 6, TwoHotConfig())
    for net, out_features in ((module.actor, 6), (module.critic, 255)):
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 4
        for layer in linears:
            assert torch.count_nonzero(layer.bias) == 0
        for layer in linears[:-1]:  # orthogonal, gain sqrt(2): every singular value is sqrt(2)
            torch.testing.assert_close(torch.linalg.svdvals(layer.weight),
                                       torch.full((min(layer.weight.shape),), math.sqrt(2.0)))
        head = linears[-1]
        assert head.out_features == out_features
        torch.testing.assert_close(torch.linalg.svdvals(head.weight), torch.full((out_features,), 1e-3))
        # Frobenius norm of an orthogonal (out x in) matrix with gain g is g * sqrt(out)
        assert head.weight.norm().item() == pytest.approx(1e-3 * math.sqrt(out_features), rel=1e-4)
    # slow critic starts equal to the critic
    for slow, fast in zip(module.slow_critic.parameters(), module.critic.parameters(), strict=True):
        assert torch.equal(slow, fast)
    # near-uniform policy and near-zero value at init
    x = torch.randn(16, 1536)
    assert torch.softmax(module.policy(x), -1).sub(1 / 6).abs().max() < 1e-2
    assert module.value(x).abs().max() < 1e-2


def test_running_norm_math() -> None:
    norm = RunningNorm(3, eps=1e-8, clip=10.0)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=gen) * 3 + 2, torch.randn(70, 3, generator=gen) - 1
    norm.update(a)
    norm.update(b.view(7, 10, 3))
    x = torch.cat([a, b]).double()
    # prior: count 1e-4 with mean 0 and var 1
    count = 1e-4 + 120
    mean = x.sum(0) / count
    var = (1e-4 * (1.0 + mean**2) + ((x - mean) ** 2).sum(0)) / count
    torch.testing.assert_close(norm.count.double(), torch.tensor(count, dtype=torch.float64))
    torch.testing.assert_close(norm.mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.var.double(), var, rtol=1e-5, atol=1e-6)
    y = norm(torch.tensor([[1e6, -1e6, 0.0]]))
    assert y[0, 0] == 10.0 and y[0, 1] == -10.0
    torch.testing.assert_close(y[0, 2], -norm.mean[2] / torch.sqrt(norm.var[2] + 1e-8))


def test_running_norm_only_updates_in_training_step() -> None:
    module = small_module()
    keys = set(module.state_dict())
    assert {"actor.0.mean", "actor.0.var", "actor.0.count"} <= keys
    assert {"0.mean", "0.var", "0.count"} <= set(module.actor.state_dict())

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in module.input_norm.state_dict().items()}

    before = snapshot()
    x = torch.randn(64, F) * 5 + 3
    module.act(x)
    module.act(x, greedy=True)
    module.policy(x)
    module(x)
    module.eval()
    module.act(x)
    module.compute_losses(imagined_batch(module))
    module.train()
    after = snapshot()
    for key in before:
        assert torch.equal(before[key], after[key]), key

    batch = imagined_batch(module)
    module.training_step(batch)
    after = snapshot()
    assert after["count"].item() == pytest.approx(1e-4 + B * (H + 1))
    torch.testing.assert_close(after["mean"], batch["features"].reshape(-1, F).mean(0), rtol=1e-4, atol=1e-4)

    # the statistics survive a state_dict round trip
    fresh = small_module()
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.input_norm.mean, module.input_norm.mean)
    assert torch.equal(fresh.input_norm.count, module.input_norm.count)


def test_act_shapes_and_greedy() -> None:
    module = small_module()
    x = torch.randn(5, 7, F)
    action = module.act(x)
    assert action.shape == (5, 7) and action.dtype == torch.long
    assert action.min() >= 0 and action.max() < A
    torch.testing.assert_close(module.act(x, greedy=True), module.policy(x).argmax(-1))
    assert module.value(x).shape == (5, 7)
    assert module.slow_value(x).shape == (5, 7)


def test_slow_critic_ema_after_one_step() -> None:
    module = small_module()
    module.configure_optimizers()
    with torch.no_grad():  # make slow and fast critic differ before the step
        for p in module.slow_critic.parameters():
            p.add_(0.1)
    slow_before = [p.clone() for p in module.slow_critic.parameters()]
    fast_before = [p.clone() for p in module.critic.parameters()]
    module.training_step(imagined_batch(module))
    decay = module.cfg.slow_critic_decay
    changed = False
    slow_now, fast_now = module.slow_critic.parameters(), module.critic.parameters()
    pairs = zip(slow_now, slow_before, fast_now, fast_before, strict=True)
    for slow, old, fast, fast_old in pairs:
        changed |= not torch.equal(fast, fast_old)
        torch.testing.assert_close(slow, decay * old + (1 - decay) * fast)
        assert slow.grad is None
    assert changed


def test_losses_finite_and_keys() -> None:
    module = small_module()
    batch = imagined_batch(module)
    batch["termination"][:, 3] = True
    out = module.compute_losses(batch)
    assert set(out) == {"loss/total", "loss/policy", "loss/value", "loss/slow_value", "entropy",
                        "return_scale", "return_mean", "value_mean"}
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    assert out["loss/total"].requires_grad
    expected = out["loss/policy"] + out["loss/value"] + out["loss/slow_value"]
    torch.testing.assert_close(out["loss/total"], expected - module.cfg.entropy_coef * out["entropy"])
    # at init both critics agree, so both value losses are equal; the policy is near-uniform
    torch.testing.assert_close(out["loss/value"], out["loss/slow_value"])
    assert out["entropy"].item() == pytest.approx(math.log(A), abs=1e-3)
    metrics = module.training_step(batch)
    for key, value in metrics.items():
        assert not value.requires_grad and torch.isfinite(value), key


def test_warmup_lr_factor() -> None:
    module = small_module(small_cfg(lr=1e-3, warmup=5))
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 1 / 5)
    for k in range(1, 8):
        module.training_step(imagined_batch(module, seed=k))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * min(1.0, (k + 1) / 5))
    assert module.lr_warmup is not None and module.lr_warmup.last_epoch == 7


def test_learns_rewarded_action() -> None:
    torch.manual_seed(0)
    module = small_module(small_cfg(lr=1e-3, warmup=0))
    module.configure_optimizers()
    probe = torch.randn(256, F) * 2 + 1

    def p_rewarded() -> float:
        return torch.softmax(module.policy(probe), -1)[:, 1].mean().item()

    assert p_rewarded() == pytest.approx(1 / A, abs=0.02)
    for step in range(100):
        metrics = module.training_step(imagined_batch(module, seed=step))
    assert p_rewarded() > 0.6
    assert metrics["value_mean"] > 0.5  # the critic learnt that returns are positive


def test_fabric_manual_backward_path() -> None:
    fabric = L.Fabric(accelerator="cpu", devices=1)
    module = small_module(small_cfg(warmup=3))
    module.runtime = FabricRuntime(fabric)  # as drama.build hands it over
    optimizer = module.configure_optimizers()
    module, optimizer = fabric.setup(module, optimizer)
    original = module.module
    assert original.fabric is fabric
    critic_before = [p.clone() for p in original.critic.parameters()]
    metrics = module.training_step(imagined_batch(original))
    assert all(torch.isfinite(v) for v in metrics.values())
    critic_after = list(original.critic.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(critic_after, critic_before, strict=True))
    assert original.lr_warmup.last_epoch == 1
    assert original.input_norm.count.item() == pytest.approx(1e-4 + B * (H + 1))
    assert all(p.grad is None for p in original.slow_critic.parameters())
