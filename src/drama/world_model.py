"""The DRAMA world model as a LightningModule.

Batches are TensorDicts of shape (B, L) with keys

* ``observation``: uint8 pixels (B, L, 3, 64, 64) or float vectors (B, L, D); row t is ``o_t`` *before* ``a_t``;
* ``action``: int64 (B, L);
* ``reward``: float (B, L), caused by ``a_t``;
* ``termination``: float or bool (B, L), the termination target of ``a_t`` (terminated or life lost).

``h_t`` (the sequence-model output after reading ``(z_t, a_t)``) predicts the prior of ``z_{t+1}``, ``r_t``
and ``d_t``. The loss is the reference's:

    total = recon + reward + termination + 1.0 * dynamics + 0.1 * representation
    dynamics       = max(1, mean KL(sg(q_{t+1}) || p_t))
    representation = max(1, mean KL(q_{t+1} || sg(p_t)))

(the weights and floors are ``world_model.loss``'s; ``representation_free_bits`` gives the representation term a
floor of its own, and ``detach_dynamics_input`` feeds the sequence model ``sg(z_t)``, so that only the
reconstruction and representation terms reach the encoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from drama.config import WorldModelConfig
from drama.device import Runtime
from drama.nn.backbones import build_backbone
from drama.nn.distributions import SymlogTwoHot, categorical_kl, free_bits_kl, upcast
from drama.nn.encoders import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from drama.nn.heads import CategoricalHead, ScalarHead, straight_through_sample
from drama.nn.optim import build_optimizer, build_warmup, optimizer_step


class WorldModel(L.LightningModule):
    """Encoder, categorical latent, dynamics backbone, decoder, reward and termination heads."""

    def __init__(self, cfg: WorldModelConfig, obs_shape: tuple[int, ...], num_actions: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.obs_shape, self.num_actions = tuple(obs_shape), num_actions
        self.pixels = len(self.obs_shape) == 3
        enc = cfg.encoder
        self.latent_dim = cfg.stoch_dim * cfg.class_dim
        self.hidden_dim = cfg.hidden_dim
        if self.pixels:
            channels, size, _ = self.obs_shape
            self.encoder = ConvEncoder(channels, size, enc.depth, enc.mults, enc.kernel)
            self.decoder = ConvDecoder(self.latent_dim, channels, enc.depth, enc.mults, enc.kernel,
                                       start_size=self.encoder.out_size)
        else:
            self.encoder = MLPEncoder(self.obs_shape[0], enc.mlp_hidden, enc.mlp_layers)
            self.decoder = MLPDecoder(self.latent_dim, self.obs_shape[0], enc.mlp_hidden, enc.mlp_layers)
        self.posterior_head = CategoricalHead(self.encoder.output_dim, cfg.stoch_dim, cfg.class_dim, cfg.unimix)
        self.prior_head = CategoricalHead(cfg.hidden_dim, cfg.stoch_dim, cfg.class_dim, cfg.unimix)
        self.dynamics = build_backbone(cfg.backbone, self.latent_dim + num_actions, cfg.hidden_dim)
        self.two_hot = SymlogTwoHot(cfg.two_hot.bins, cfg.two_hot.low, cfg.two_hot.high)
        self.reward_head = ScalarHead(cfg.hidden_dim, cfg.two_hot.bins, cfg.reward_head.hidden,
                                      cfg.reward_head.layers)
        self.termination_head = ScalarHead(cfg.hidden_dim, 1, cfg.termination_head.hidden,
                                           cfg.termination_head.layers)
        self.runtime = Runtime()
        """how it runs (autocast, optimiser step; :mod:`drama.device`): handed over by :mod:`drama.build`."""
        self.loss_fn: Callable[[TensorDict], dict[str, Tensor]] | None = None
        """what :meth:`training_step` calls for the losses: None = :meth:`compute_losses` (eager), else its
        compiled form (:func:`drama.nn.compile.compile_hot_paths`)."""
        self.step_fn: Callable[..., tuple[Tensor, Tensor, Tensor, TensorDict]] | None = None
        """what imagination calls per step: None = :meth:`imagination_step` (eager), else its compiled form."""

    @property
    def feature_dim(self) -> int:
        """Size of the actor-critic input ``[z, h]``."""
        return self.latent_dim + self.hidden_dim

    # ------------------------------------------------------------------ building blocks
    def preprocess(self, observation: Tensor) -> Tensor:
        """uint8 pixels -> [0, 1]; vectors as they are; in the parameters' floating dtype."""
        dtype = self.posterior_head.linear.weight.dtype
        if self.pixels and observation.dtype == torch.uint8:
            return observation.to(dtype).div_(255.0)
        return observation.to(dtype)

    def encode(self, observation: Tensor, max_frames: int | None = None) -> Tensor:
        """Posterior logits (..., stoch, classes) of observations with any leading shape.

        ``max_frames`` encodes at most that many frames at a time, which bounds activation memory when
        encoding thousands of frames without gradients (imagination contexts). Only exact in eval mode, where
        BatchNorm uses its running statistics; it is ignored in training mode.
        """
        lead = observation.shape[: observation.dim() - len(self.obs_shape)]
        flat = observation.reshape(-1, *self.obs_shape)
        if max_frames is None or self.training or flat.shape[0] <= max_frames:
            feat = self.encoder(self.preprocess(flat))
        else:
            feat = torch.cat([self.encoder(self.preprocess(part)) for part in flat.split(max_frames)])
        return self.posterior_head(feat).reshape(*lead, self.cfg.stoch_dim, self.cfg.class_dim)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction from flat latents (..., latent_dim)."""
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, self.latent_dim)).reshape(*lead, *self.obs_shape)

    def embed(self, z: Tensor, action: Tensor) -> Tensor:
        """Backbone input ``[z, one_hot(a)]`` from flat latents (..., latent_dim) and actions (...)."""
        return torch.cat([z, F.one_hot(action.long(), self.num_actions).to(z.dtype)], dim=-1)

    def sample_posterior(self, observation: Tensor, max_frames: int | None = None,
                         generators: Sequence[torch.Generator] | None = None) -> tuple[Tensor, Tensor]:
        """Flat straight-through sample ``z_t ~ q(. | o_t)`` (..., latent_dim), float so gradients pass, and the
        posterior logits (..., stoch, classes) it was drawn from (:meth:`encode`); ``generators``: one per row
        (:func:`~drama.nn.heads.straight_through_sample`), else the global RNG."""
        logits = self.encode(observation, max_frames=max_frames)
        return straight_through_sample(logits, generators).flatten(-2), logits

    def sample_prior(self, h: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
        """Flat straight-through sample of ``p(z_{t+1} | h_t)`` (``generators``: one per row, else the global RNG)."""
        return straight_through_sample(self.prior_head(h), generators).flatten(-2)

    def hidden_states(self, z: Tensor, action: Tensor) -> tuple[Tensor, TensorDict]:
        """``h_t`` for every (z_t, a_t) of (B, L) sequences: one parallel backbone pass over ``[z, one_hot(a)]``
        from a zero state -> (h (B, L, hidden), the backbone state after the last step)."""
        return self.dynamics(self.embed(z, action))

    def predict_reward(self, h: Tensor) -> Tensor:
        """Decoded reward ``symexp(E[two-hot])`` of the action that ``h`` has read."""
        return self.two_hot.decode(self.reward_head(h))

    def predict_termination(self, h: Tensor) -> Tensor:
        """Termination of the action that ``h`` has read: ``logit > 0``."""
        return self.termination_head(h).squeeze(-1) > 0

    def autocast(self):
        """The precision context of its runtime (bf16 autocast under ``bf16-mixed``; none in float32)."""
        return self.runtime.autocast()

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (BatchNorm running statistics, no dropout) inside the block, the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: TensorDict) -> dict[str, Tensor]:
        """All loss terms (module docstring) for a (B, L) batch; ``loss/total`` carries the gradient."""
        weights = self.cfg.loss
        obs = self.preprocess(batch["observation"])
        action = batch["action"].long()
        batch_size, length = action.shape

        z, posterior_logits = self.sample_posterior(obs)  # z_t ~ q_t: (B, L, K*C), logits (B, L, K, C)
        reconstruction = upcast(self.decode(z))
        reconstruction_loss = (reconstruction - obs).pow(2).reshape(batch_size, length, -1).sum(-1).mean()

        h, _ = self.hidden_states(z.detach() if weights.detach_dynamics_input else z, action)  # h_t read (z_t, a_t)
        prior_logits = self.prior_head(h)  # p_t predicts z_{t+1}
        reward_loss = self.two_hot.loss(self.reward_head(h), batch["reward"]).mean()
        termination_logit = upcast(self.termination_head(h).squeeze(-1))
        termination_loss = F.binary_cross_entropy_with_logits(
            termination_logit, batch["termination"].to(termination_logit.dtype))

        dynamics_kl = categorical_kl(posterior_logits[:, 1:].detach(), prior_logits[:, :-1])
        representation_kl = categorical_kl(posterior_logits[:, 1:], prior_logits[:, :-1].detach())
        dynamics_loss = free_bits_kl(dynamics_kl, weights.free_bits, weights.free_bits_mode)
        representation_floor = (weights.free_bits if weights.representation_free_bits is None
                                else weights.representation_free_bits)
        representation_loss = free_bits_kl(representation_kl, representation_floor, weights.free_bits_mode)

        total = (weights.reconstruction * reconstruction_loss + weights.reward * reward_loss
                 + weights.termination * termination_loss + weights.dynamics * dynamics_loss
                 + weights.representation * representation_loss)
        return {
            "loss/total": total,
            "loss/reconstruction": reconstruction_loss,
            "loss/reward": reward_loss,
            "loss/termination": termination_loss,
            "loss/dynamics": dynamics_loss,
            "loss/representation": representation_loss,
            "kl/dynamics": dynamics_kl.mean(),
            "kl/representation": representation_kl.mean(),
            "posterior_entropy": _categorical_entropy(posterior_logits).mean(),
            "prior_entropy": _categorical_entropy(prior_logits).mean(),
        }

    def training_step(self, batch: TensorDict) -> dict[str, Tensor]:
        """One LaProp step on the world-model loss (manual optimisation); returns detached metrics."""
        self.train()
        with self.autocast():
            losses = (self.loss_fn or self.compute_losses)(batch)
        grad_norm = optimizer_step(self, losses["loss/total"], self.cfg.optim.max_grad_norm)
        metrics = {k: v.detach() for k, v in losses.items()}
        metrics["grad_norm"] = grad_norm
        return metrics

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """LaProp over all parameters; the linear warm-up scheduler is kept as ``self.lr_warmup``."""
        self.optimizer = build_optimizer(self.parameters(), self.cfg.optim)
        self.lr_warmup = build_warmup(self.optimizer, self.cfg.optim.warmup_steps)
        return self.optimizer

    # ------------------------------------------------------------------ imagination
    def imagination_step(self, policy: Callable[[Tensor], Tensor], feature: Tensor, z_hat: Tensor,
                         state: TensorDict) -> tuple[Tensor, Tensor, Tensor, TensorDict]:
        """One imagined step: ``a'_j = policy(s_j)``, ``h_{C+j} = step([ẑ_{C+j}, a'_j])``,
        ``ẑ_{C+j+1} ~ p(. | h_{C+j})``. Returns (action, h (float32 or wider), next ẑ, new backbone state)."""
        action = policy(feature)
        h, state = self.dynamics.step(self.embed(z_hat, action), state)
        h = upcast(h)
        return action, h, self.sample_prior(h), state


def _categorical_entropy(logits: Tensor) -> Tensor:
    """Entropy summed over the categorical variables: (..., K, C) -> (...)."""
    log_p = F.log_softmax(upcast(logits), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=(-2, -1))
