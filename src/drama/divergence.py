"""The divergence guard: notices a non-finite loss, gradient norm or parameter and stops the run before a bad
state can be saved over the last good checkpoint.

Watching costs no host sync per update: for every watched quantity the guard keeps, on the quantity's device,
the first env step at which it was not finite (-1 while it is). :meth:`DivergenceGuard.check` reads them all at
once; the loop calls it when it logs and before every checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import Tensor

from drama.config import one_line
from drama.errors import Diverged

_NON_FINITE = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)
"""An error message about non-finite values (e.g. torch.multinomial's "contains either `inf`, `nan` or ...")."""


def as_divergence(error: RuntimeError, phase: str, step: int, last_good: str) -> Exception:
    """The error to raise for ``error`` (raised during ``phase`` of env ``step``): :class:`Diverged` when its message
    is about non-finite values, as sampling from non-finite probabilities is; ``error`` itself otherwise."""
    first_line = one_line(error)
    if not _NON_FINITE.search(first_line):
        return error
    return Diverged(f"{phase} failed at env step {step} ({first_line}); the run stopped and kept the last good "
                    f"checkpoint: {last_good}")


class DivergenceGuard:
    """First non-finite step of each watched quantity (device tensors), checked in one read."""

    def __init__(self, modules: Iterable[tuple[str, torch.nn.Module]] = ()) -> None:
        self.modules = list(modules)
        """(name, module) pairs whose parameters :meth:`check` checks."""
        self.first_bad: dict[str, Tensor] = {}

    def watch(self, name: str, value: Tensor, step: int) -> None:
        """Record ``step`` for ``name`` if ``value`` has a non-finite element and none was recorded before."""
        bad = ~torch.isfinite(value.detach()).all()
        first = self.first_bad.get(name)
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=value.device)
        self.first_bad[name] = torch.where(bad & (first < 0), step, first)

    def watch_update(self, prefix: str, metrics: dict[str, Tensor], step: int) -> None:
        """Watch an update's ``loss/total`` and ``grad_norm`` (as ``prefix`` + key)."""
        for key in ("loss/total", "grad_norm"):
            self.watch(prefix + key, metrics[key], step)

    def check(self, step: int, last_good: str) -> None:
        """Raise :class:`Diverged` naming the first quantity that went non-finite (watched values, then the
        parameters of the guarded modules) and ``last_good``, the checkpoint that is kept."""
        names = list(self.first_bad)
        steps = torch.stack(list(self.first_bad.values())).tolist() if names else []  # one read
        bad = sorted((s, n) for s, n in zip(steps, names, strict=True) if s >= 0)
        if bad:
            first_step, name = bad[0]
            raise Diverged(f"{name} is not finite at env step {first_step} (checked at step {step}); "
                           f"the run stopped and kept the last good checkpoint: {last_good}")
        for module_name, module in self.modules:
            finite = [torch.isfinite(p).all() for p in module.parameters()]
            if finite and not bool(torch.stack(finite).all()):
                raise Diverged(f"{module_name} parameters are not finite at env step {step}; "
                               f"the run stopped and kept the last good checkpoint: {last_good}")
