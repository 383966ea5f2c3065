"""LaProp with linear learning-rate warm-up, and one manual-optimisation step of a LightningModule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from drama.config import OptimConfig
from drama.nn.laprop import LaProp


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The reference's :class:`~drama.nn.laprop.LaProp` with the config's lr, betas and eps."""
    beta1, beta2 = cfg.betas
    return LaProp(params, lr=cfg.lr, betas=(beta1, beta2), eps=cfg.eps)


def build_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int) -> LambdaLR:
    """Linear warm-up: the lr factor is ``min(1, (k+1)/warmup_steps)`` at optimiser step k (0 = no warm-up)."""
    if warmup_steps <= 0:
        return LambdaLR(optimizer, lambda k: 1.0)
    return LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup_steps))


def optimizer_step(module: torch.nn.Module, loss: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """One manual-optimisation step of a model: zero grads, backward, clip (through ``module.runtime``, a
    :class:`drama.device.Runtime`: Fabric's when the module was set up with Fabric, plain PyTorch otherwise), LaProp
    step, warm-up step. The module must have ``runtime``, ``optimizer`` and ``lr_warmup`` attributes (the last two
    set by its ``configure_optimizers``). Returns the gradient norm before clipping."""
    optimizer, grad_norm = module.runtime.backward(module, loss, max_grad_norm)  # type: ignore[operator]
    optimizer.step()
    module.lr_warmup.step()  # type: ignore[operator]
    return grad_norm.detach()
