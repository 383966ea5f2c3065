"""Actor-critic trained on imagined rollouts (the reference's networks and losses; differences: docs/decisions.md).

The actor reads VecNormalize-style standardised features; the critic is a symlog two-hot value head with a
slow EMA copy. One :meth:`ActorCritic.training_step` is one optimiser step of the REINFORCE + two-hot value
loss of the reference, with the lambda-return of :mod:`drama.returns`.

Normalisation layers are :class:`drama.nn.norm.RMSNorm` with the reference's eps 1e-6 (:data:`NORM_EPS`),
normalising in float32 under any autocast dtype as the reference's torchtune RMSNorm does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torch.distributions import Categorical
from torch.optim.lr_scheduler import LRScheduler

from drama import returns
from drama.config import ActorCriticConfig, TwoHotConfig
from drama.device import Runtime
from drama.nn.distributions import SymlogTwoHot
from drama.nn.heads import sample_index
from drama.nn.init import orthogonal_
from drama.nn.mlp import mlp
from drama.nn.norm import REFERENCE_EPS
from drama.nn.optim import build_optimizer, build_warmup, optimizer_step

NORM_EPS = REFERENCE_EPS
"""eps of the RMSNorm layers of actor and critic (the reference's 1e-6)."""

HIDDEN_GAIN = 2.0**0.5
"""orthogonal-init gain of the hidden Linear layers."""

OUTPUT_GAIN = 0.001
"""orthogonal-init gain of the output Linear layers of actor and critic."""


class RunningNorm(nn.Module):
    """Running mean/variance input standardisation (the reference's VecNormalize / ``RunningMeanStd``).

    ``mean``, ``var`` and ``count`` are buffers (in ``state_dict``), initialised to 0, 1 and 1e-4. Calling the
    module only reads them: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``. :meth:`update` merges a batch
    with the parallel-variance formula of Chan et al.; the actor-critic calls it only in its training update
    (docs/decisions.md, "drifting input normalisation").
    """

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, dim: int, eps: float = 1e-8, clip: float = 10.0, initial_count: float = 1e-4) -> None:
        super().__init__()
        self.dim = dim
        self.eps = float(eps)
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.tensor(float(initial_count)))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge the statistics of ``x`` (..., dim): every leading index is one sample."""
        x = x.detach().reshape(-1, self.dim).to(self.mean.dtype)
        batch_count = x.shape[0]
        if batch_count == 0:
            return
        batch_mean = x.mean(dim=0)
        # E[x^2] - m^2: one pass less than x.var (1.9x on this op at the paper shape); the inputs are a one-hot
        # latent and an RMS-normalised hidden state, so the cancellation is at float32 rounding level.
        batch_var = (x.square().mean(dim=0) - batch_mean.square()).clamp_min_(0.0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = (self.var * self.count + batch_var * batch_count
              + delta.square() * self.count * batch_count / total)
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.to(x.dtype)
        std = torch.sqrt(self.var + self.eps).to(x.dtype)
        return torch.clamp((x - mean) / std, -self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, clip={self.clip}"


def _mlp(in_dim: int, hidden: int, num_layers: int, out_dim: int) -> list[nn.Module]:
    """``num_layers`` x [Linear -> RMSNorm -> SiLU] -> Linear; orthogonal init, gains sqrt(2) and 0.001 (output)."""
    layers = list(mlp(in_dim, hidden, num_layers, out_dim=out_dim, eps=NORM_EPS))
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for linear in linears[:-1]:
        orthogonal_(linear, HIDDEN_GAIN)
    orthogonal_(linears[-1], OUTPUT_GAIN)
    return layers


class ActorCritic(L.LightningModule):
    """Actor, critic and slow critic with manual optimisation.

    ``actor`` is ``RunningNorm -> MLP -> logits``; its ``state_dict`` holds the normalisation buffers. The
    slow critic is a frozen deep copy of ``critic`` updated by EMA after every optimiser step and is not in
    the optimiser. :meth:`configure_optimizers` builds LaProp and keeps the linear warm-up scheduler in
    ``self.lr_warmup`` (stepped after every optimiser step; not managed by Fabric).
    """

    def __init__(
        self, cfg: ActorCriticConfig, feature_dim: int, num_actions: int, two_hot: TwoHotConfig
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.feature_dim = feature_dim
        self.num_actions = num_actions
        self.two_hot = SymlogTwoHot(two_hot.bins, two_hot.low, two_hot.high)
        self.actor = nn.Sequential(
            RunningNorm(feature_dim, eps=cfg.vecnorm_eps, clip=cfg.vecnorm_clip),
            *_mlp(feature_dim, cfg.actor_hidden, cfg.num_layers, num_actions),
        )
        self.critic = nn.Sequential(*_mlp(feature_dim, cfg.critic_hidden, cfg.num_layers, two_hot.bins))
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.return_scale = returns.PercentileReturnScale(cfg.return_ema_decay, cfg.return_percentiles)
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_warmup: LRScheduler | None = None
        self.runtime = Runtime()
        """how it runs (autocast, optimiser step; :mod:`drama.device`): handed over by :mod:`drama.build`."""
        self.loss_fn: Callable[..., dict[str, Tensor]] | None = None
        """what :meth:`training_step` calls for the losses: None = :meth:`compute_losses` (eager), else its
        compiled form (:func:`drama.nn.compile.compile_hot_paths`)."""

    def autocast(self):
        """The precision context of its runtime (bf16 autocast under ``bf16-mixed``; none in float32)."""
        return self.runtime.autocast()

    # ------------------------------------------------------------------ networks

    @property
    def input_norm(self) -> RunningNorm:
        """The actor's running input normalisation (``actor[0]``)."""
        return self.actor[0]  # type: ignore[return-value]

    def policy(self, features: Tensor) -> Tensor:
        """Action logits (..., A). Reads, never updates, the input normalisation."""
        return self.actor(features)

    def forward(self, features: Tensor) -> Tensor:
        return self.policy(features)

    @torch.no_grad()
    def act(self, features: Tensor, greedy: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> Tensor:
        """Actions (...) as int64: sampled from the policy (row i from ``generators[i]`` when given, else the
        global RNG), or its argmax when ``greedy``."""
        logits = self.policy(features).float()
        if greedy:
            return logits.argmax(dim=-1)
        if generators is not None:
            return sample_index(logits.softmax(-1), generators)
        return Categorical(logits=logits).sample()

    def value(self, features: Tensor) -> Tensor:
        """Decoded value (...) of the critic."""
        return self.two_hot.decode(self.critic(features))

    @torch.no_grad()
    def slow_value(self, features: Tensor) -> Tensor:
        """Decoded value (...) of the slow critic."""
        return self.two_hot.decode(self.slow_critic(features))

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """``slow <- decay * slow + (1 - decay) * critic`` for every parameter."""
        decay = self.cfg.slow_critic_decay
        for slow, param in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            slow.mul_(decay).add_(param.detach().to(slow.dtype), alpha=1.0 - decay)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """LaProp over the actor and critic parameters (not the slow critic); the linear warm-up scheduler is
        kept as ``self.lr_warmup`` (Fabric does not manage schedulers)."""
        params = [*self.actor.parameters(), *self.critic.parameters()]
        self.optimizer = build_optimizer(params, self.cfg.optim)
        self.lr_warmup = build_warmup(self.optimizer, self.cfg.optim.warmup_steps)
        return self.optimizer

    def compute_losses(self, imagined: TensorDict, update_return_scale: bool = True) -> dict[str, Tensor]:
        """REINFORCE, two-hot value and slow-value losses and entropy on an imagined batch (no optimiser step).

        ``imagined`` (batch [B]): ``features`` (B, H+1, F) for s_0..s_H, ``action`` (B, H), ``reward``
        (B, H) and ``termination`` (B, H) of the action taken at each index (not of the one before it).
        ``update_return_scale`` EMA-updates the percentile return scale from this batch's lambda-returns before
        computing the advantage, as the training update does. ``loss/*`` keep their graph; the other entries
        are detached.
        """
        cfg = self.cfg
        features = imagined["features"]
        action = imagined["action"].long()
        reward = imagined["reward"].float()
        termination = imagined["termination"].float()
        horizon = action.shape[1]
        if features.shape[1] != horizon + 1:
            raise ValueError(f"features must hold H+1 = {horizon + 1} states, got {features.shape[1]}")

        logits = self.policy(features[:, :horizon]).float()
        raw_value = self.critic(features).float()
        value = self.two_hot.decode(raw_value).detach()
        slow_value = self.slow_value(features)

        gamma, lambda_, bootstrap = cfg.gamma, cfg.lambda_, cfg.bootstrap
        lambda_return = returns.lambda_return(reward, termination, value, gamma, lambda_, bootstrap)
        slow_lambda_return = returns.lambda_return(reward, termination, slow_value, gamma, lambda_, bootstrap)
        value_loss = self.two_hot.loss(raw_value[:, :horizon], lambda_return.detach()).mean()
        slow_value_loss = self.two_hot.loss(raw_value[:, :horizon], slow_lambda_return.detach()).mean()

        if update_return_scale:
            self.return_scale.update(lambda_return)
        scale = self.return_scale.scale
        advantage = ((lambda_return - value[:, :horizon]) / scale).detach()

        dist = Categorical(logits=logits)
        policy_loss = -(dist.log_prob(action) * advantage).mean()
        entropy = dist.entropy().mean()
        total = policy_loss + value_loss + slow_value_loss - cfg.entropy_coef * entropy
        return {
            "loss/total": total,
            "loss/policy": policy_loss,
            "loss/value": value_loss,
            "loss/slow_value": slow_value_loss,
            "entropy": entropy.detach(),
            "return_scale": scale.detach().clone(),
            "return_mean": lambda_return.detach().mean(),
            "value_mean": value[:, :horizon].mean(),
        }

    def training_step(self, imagined: TensorDict, *args: Any) -> dict[str, Tensor]:
        """One optimiser step on an imagined batch; returns detached scalar metrics (plus ``grad_norm``).

        Order: update the actor's input normalisation from all H+1 states (the only place it is updated), compute
        the losses, then :func:`drama.nn.optim.optimizer_step` (backward through its runtime, global
        grad-norm clip, LaProp step, warm-up step), then the slow-critic EMA.
        """
        if self.optimizer is None:
            self.configure_optimizers()
        self.input_norm.update(imagined["features"])
        with self.autocast():
            out = (self.loss_fn or self.compute_losses)(imagined, update_return_scale=True)
        grad_norm = optimizer_step(self, out["loss/total"], self.cfg.optim.max_grad_norm)
        self.update_slow_critic()
        metrics = {key: value.detach() for key, value in out.items()}
        metrics["grad_norm"] = grad_norm
        return metrics
