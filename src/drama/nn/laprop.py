"""LaProp (Ziyin, Wang and Ueda, 2020) exactly as the DRAMA/STORM reference runs it.

LaProp divides the gradient by the root of its running second moment *first* and then takes momentum of that
normalised gradient, so momentum and adaptivity are decoupled. For every parameter, at step t with the
current (warmed-up) learning rate ``lr_t``::

    v_t  = beta2 v_{t-1} + (1 - beta2) g_t^2                    second moment
    b2_t = beta2 b2_{t-1} + (1 - beta2)                         = 1 - beta2^t (its bias correction)
    c_t  = beta1 c_{t-1} + (1 - beta1) lr_t                     lr-weighted bias correction of the momentum
    m_t  = beta1 m_{t-1} + (1 - beta1) lr_t g_t / (sqrt(v_t / b2_t) + eps)
    p_t  = p_{t-1} - (lr_t / c_t) m_t                           (lr_t / c_t := 1 when lr_t = 0)

At a constant lr this is ``p -= lr * m_hat`` with the Adam-style ``1 - beta1^t`` correction; under a
learning-rate warm-up ``c_t`` tracks the changing lr, as in the authors' code that the reference vendors.

Why not ``pytorch_optimizer.LaProp``: version 4.1.0 adds a hard-coded 1e-15 inside the square root
(``sqrt(v + 1e-15) + eps``), which at the paper's ``eps = 1e-20`` dominates wherever second moments are
small (measured: 8-15 % of the elements of a real world-model step moved by a different amount, up to about
one learning rate), puts ``eps`` before the bias correction, and rounds the per-tensor step sizes to float32.
This ~40-line optimiser has no hidden term; it is tested against the formula above in float64.

No weight decay, centring or AMSGrad: the reference uses none of them (``weight_decay=0``, not centred, no
amsgrad).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


class LaProp(Optimizer):
    """The reference's LaProp (module docstring): ``lr``, ``betas = (beta1, beta2)``, ``eps`` added to the
    bias-corrected root second moment. Per-parameter state: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v),
    ``exp_avg_lr_1`` (c) and ``exp_avg_lr_2`` (b2); all of it is in ``state_dict`` (resume is exact)."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 4e-4,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-15) -> None:
        if not lr >= 0.0:
            raise ValueError(f"LaProp lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"LaProp eps must be >= 0, got {eps}")
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"LaProp betas must lie in [0, 1), got {tuple(betas)}")
        super().__init__(params, {"lr": lr, "betas": (float(beta1), float(beta2)), "eps": float(eps)})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            beta1, beta2 = group["betas"]
            params, grads, exp_avgs, exp_avg_sqs, debias2, step_sizes = [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LaProp does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_lr_1"] = 0.0
                    state["exp_avg_lr_2"] = 0.0
                state["step"] = state.get("step", 0) + 1  # checkpoints of pytorch_optimizer's LaProp lack it
                state["exp_avg_lr_1"] = state["exp_avg_lr_1"] * beta1 + (1.0 - beta1) * lr
                state["exp_avg_lr_2"] = state["exp_avg_lr_2"] * beta2 + (1.0 - beta2)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                debias2.append(state["exp_avg_lr_2"])
                bias_correction1 = state["exp_avg_lr_1"] / lr if lr != 0.0 else 1.0
                step_sizes.append(-1.0 / bias_correction1)
            if not params:
                continue
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
            denom = torch._foreach_div(exp_avg_sqs, debias2)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            normalised = torch._foreach_div(grads, denom)
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, normalised, alpha=(1.0 - beta1) * lr)
            torch._foreach_add_(params, torch._foreach_mul(exp_avgs, step_sizes))
        return loss
