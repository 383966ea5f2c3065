"""Window-start samplers of the replay buffer: dynamic frequency-based sampling (DFS) and the uniform STORM ablation.

Both are :class:`torchrl.data.replay_buffers.samplers.Sampler` subclasses that draw window **starts** (storage
slots) and return the index of every row of each window, shape ``(batch, length)``; TorchRL's tensor storage reads
that into a ``(batch, length)`` TensorDict.

Valid starts (docs/decisions.md, "Windows stay inside one episode" and "ring-buffer wrap"). Storage slots are
ordered chronologically from the ring buffer's write position: before the buffer is full the oldest row is slot
0; afterwards it is the slot the writer will overwrite next. A start ``i`` with window length ``L`` is valid iff

* its ``L`` rows are chronologically consecutive, i.e. the window never straddles the write position, and
* none of its rows ``i .. i+L-2`` is the last row of an episode (``episode_end``: terminated or truncated).

The last row of a window may end an episode (such a start is kept; the imagination context then ends on a real
terminal row, whose termination the caller can read from the context). Life-loss rows
(``termination`` without ``episode_end``) may appear anywhere. Probabilities are normalised over valid starts only.

The sampler follows the writer through :meth:`mark_update`, which :class:`~torchrl.data.RoundRobinWriter` calls with
the written slots (in write order) on every write: it records the next write position and, for DFS, zeroes the
counters of the (over)written slots. Its state (counters, write position) is part of ``state_dict`` and
``dumps``, so a restored buffer samples exactly as the original.

Windows are drawn with :meth:`WindowSampler.draw` (mode and length as arguments, one pass over the stored rows),
which ``Replay.draw`` calls and then reads the rows with ``index_select``. TorchRL's ``ReplayBuffer.sample`` path
is not used: at the paper's imagination batch (1024 windows of 8 Atari rows, one thread) it took 2.0x as long
as ``Replay.draw`` (0.19 s against 0.095 s), so :meth:`WindowSampler.sample` refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

MODES = ("world_model", "imagination")
"""Sampling modes: world-model training windows and imagination context windows."""

EPISODE_END_KEY = "episode_end"
"""Storage key of the bool flag that marks the last row of an episode (terminated or truncated)."""


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


class WindowSampler(Sampler):
    """Base class: valid-start logic, window expansion and write-position tracking.

    Subclasses implement :meth:`_draw` (pick ``batch_size`` starts among the valid ones) and may extend the state.

    Args:
        capacity: number of storage slots (the storage's ``max_size``).
        episode_end_key: storage key of the episode-end flag.
    """

    without_replacement = False
    """Whether a batch holds distinct starts (and so needs at least ``batch_size`` valid starts)."""

    def __init__(self, capacity: int, *, episode_end_key: str = EPISODE_END_KEY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.episode_end_key = episode_end_key
        self._cursor = 0
        self._last: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ chronology and valid starts
    @property
    def cursor(self) -> int:
        """Next write position (slot), as followed through :meth:`mark_update`."""
        return self._cursor

    def _oldest(self, n: int) -> int:
        """Slot of the oldest stored row, given ``n`` stored rows."""
        return self._cursor if n >= self.capacity else 0

    def _episode_end(self, storage: Storage) -> Tensor:
        data = getattr(storage, "_storage", None)
        if data is None or not hasattr(data, "get"):
            raise TypeError(f"{type(self).__name__} needs a TensorDict-backed tensor storage, got {type(storage)}")
        flag = data.get(self.episode_end_key, None)
        if flag is None:
            raise KeyError(f"the replay storage has no {self.episode_end_key!r} key; rows must carry it")
        return flag.reshape(flag.shape[0], -1).any(-1)

    def valid_starts(self, storage: Storage, length: int) -> Tensor:
        """Storage slots of all valid starts of windows of ``length`` rows, oldest first (int64, 1-D)."""
        if length < 1:
            raise ValueError(f"window length must be positive, got {length}")
        n = len(storage)
        if storage.max_size != self.capacity:
            raise ValueError(f"storage max_size {storage.max_size} != sampler capacity {self.capacity}")
        if n < length:
            return torch.empty(0, dtype=torch.long)
        ends = self._episode_end(storage)
        oldest = self._oldest(n)
        chrono = ends[:n] if oldest == 0 else torch.roll(ends, -oldest)
        # cum[k] = number of episode ends among chronological rows 0 .. k-1
        cum = torch.zeros(n + 1, dtype=torch.long, device=chrono.device)
        torch.cumsum(chrono, 0, out=cum[1:])
        # ends among rows p .. p+L-2, for the starts p = 0 .. n-L
        inside = cum[length - 1 : n] - cum[: n - length + 1]
        positions = (inside == 0).nonzero().squeeze(1)
        if oldest:
            positions = (positions + oldest) % self.capacity
        return positions.cpu()

    def num_valid_starts(self, storage: Storage, length: int) -> int:
        """Number of valid starts of windows of ``length`` rows."""
        return int(self.valid_starts(storage, length).numel())

    # ------------------------------------------------------------------ drawing
    def can_draw(self, valid_starts: int, batch_size: int) -> bool:
        """The one readiness rule: a batch needs at least ``batch_size`` valid starts, in every mode
        and for every sampler (DFS draws distinct starts; the uniform sampler follows the same rule)."""
        return valid_starts >= batch_size >= 1

    def draw(self, storage: Storage, batch_size: int, mode: str, length: int) -> tuple[Tensor, dict] | None:
        """``batch_size`` windows of ``length`` rows in ``mode``, in one pass over the stored rows: the
        ``(batch_size, length)`` slots and ``{"start": (batch_size,)}``, or None if :meth:`can_draw` says no."""
        _check_mode(mode)
        starts = self.valid_starts(storage, length)
        if not self.can_draw(starts.numel(), batch_size):
            return None
        drawn = self._draw(starts, batch_size, mode)
        index = (drawn[:, None] + torch.arange(length)) % self.capacity
        return index, {"start": drawn}

    def sample(self, storage: Storage, batch_size: int) -> tuple[Tensor, dict]:
        """TorchRL's sampler entry point, which has no mode or window length: use :meth:`draw`
        (``Replay.draw``) instead."""
        raise NotImplementedError(f"{type(self).__name__} draws windows with draw(storage, batch, mode, length) "
                                  "(Replay.draw), not ReplayBuffer.sample")

    def _draw(self, starts: Tensor, batch_size: int, mode: str) -> Tensor:
        """Pick ``batch_size`` of the valid ``starts`` (slots) in ``mode`` and update the state."""
        raise NotImplementedError

    def mark_update(self, index: int | Tensor, *, storage: Storage | None = None) -> None:
        """Called by the writer with the written slots, in write order: follow the write position."""
        index = torch.as_tensor(index).reshape(-1)
        if index.numel():
            self._cursor = (int(index[-1]) + 1) % self.capacity

    def _empty(self) -> None:
        self._cursor = 0
        self._last = {}

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self._cursor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._cursor = int(state_dict["cursor"])
        self._last = {}

    def dumps(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: torch.as_tensor(v).clone() for k, v in self.state_dict().items()}
        TensorDict(state, batch_size=[]).memmap(path, existsok=True)

    def loads(self, path: str | Path) -> None:
        state = TensorDict.load_memmap(Path(path))
        self.load_state_dict({k: v.clone() for k, v in state.items()})

    # ------------------------------------------------------------------ logging
    def stats(self, storage: Storage) -> dict[str, float]:
        """Statistics for logging: valid starts and never-drawn fraction among them at the last draw per mode."""
        out: dict[str, float] = {}
        for mode, values in self._last.items():
            for key, value in values.items():
                out[f"{mode}/{key}"] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, cursor={self._cursor})"


class UniformSampler(WindowSampler):
    """STORM's sampler (the ``uniform`` ablation): uniform over valid starts, **with** replacement, no counters."""

    without_replacement = False

    def _draw(self, starts: Tensor, batch_size: int, mode: str) -> Tensor:
        pick = torch.randint(starts.numel(), (batch_size,), generator=self._rng)
        self._last[mode] = {"valid_starts": float(starts.numel())}
        return starts[pick]


class DynamicFrequencySampler(WindowSampler):
    """Dynamic frequency-based sampling of window starts.

    Two counters per slot: ``c`` (drawn as a world-model start) and ``m`` (drawn as an imagination start).

    * ``world_model``: ``p_i ∝ exp(-c_i / tau)`` over valid starts; the drawn starts' ``c`` is incremented.
    * ``imagination``: with ``m~ = m / rate_scale``, ``score = c - alpha m~ - beta max(0, c - m~)`` and
      ``p = softmax(score / imagination_tau)``; the drawn starts' ``m`` is incremented.

    A batch holds distinct starts (``torch.multinomial(..., replacement=False)``). Counters of (over)written slots
    are reset to zero.

    Args:
        capacity: number of storage slots.
        tau: world-model temperature (sample counts).
        imagination_tau: imagination temperature (sample counts).
        alpha: imagination-count penalty.
        beta: penalty on ``max(0, c - m~)``.
        rate_scale: ``s = imagination batch / world-model batch``.
        episode_end_key: storage key of the episode-end flag.
    """

    without_replacement = True

    def __init__(
        self,
        capacity: int,
        *,
        tau: float = 10.0,
        imagination_tau: float = 10.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        rate_scale: float = 64.0,
        episode_end_key: str = EPISODE_END_KEY,
    ) -> None:
        super().__init__(capacity, episode_end_key=episode_end_key)
        if tau <= 0 or imagination_tau <= 0 or rate_scale <= 0:
            raise ValueError(f"tau, imagination_tau and rate_scale must be positive, got {tau}, "
                             f"{imagination_tau}, {rate_scale}")
        self.tau = float(tau)
        self.imagination_tau = float(imagination_tau)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.rate_scale = float(rate_scale)
        self.c = torch.zeros(self.capacity, dtype=torch.long)
        """World-model start counts per slot."""
        self.m = torch.zeros(self.capacity, dtype=torch.long)
        """Imagination start counts per slot."""

    def logits(self, starts: Tensor, mode: str) -> Tensor:
        """Unnormalised log-probabilities (float64) of the given starts in ``mode``."""
        _check_mode(mode)
        c = self.c[starts].double()
        if mode == "world_model":
            return -c / self.tau
        m = self.m[starts].double() / self.rate_scale
        score = c - self.alpha * m - self.beta * (c - m).clamp_min(0.0)
        return score / self.imagination_tau

    def _draw(self, starts: Tensor, batch_size: int, mode: str) -> Tensor:
        logits = self.logits(starts, mode)
        weights = (logits - logits.max()).exp_().clamp_min_(torch.finfo(torch.float64).tiny)
        pick = torch.multinomial(weights, batch_size, replacement=False, generator=self._rng)
        drawn = starts[pick]
        counter = self.c if mode == "world_model" else self.m
        self._last[mode] = {
            "valid_starts": float(starts.numel()),
            "never_drawn": float((counter[starts] == 0).double().mean()),
        }
        counter.index_add_(0, drawn, torch.ones_like(drawn))
        return drawn

    def mark_update(self, index: int | Tensor, *, storage: Storage | None = None) -> None:
        """Zero both counters of the written slots and follow the write position."""
        flat = torch.as_tensor(index).reshape(-1)
        self.c[flat] = 0
        self.m[flat] = 0
        super().mark_update(flat, storage=storage)

    def _empty(self) -> None:
        super()._empty()
        self.c.zero_()
        self.m.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "c": self.c.clone(), "m": self.m.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in ("c", "m"):
            value = torch.as_tensor(state_dict[key])
            if value.shape != (self.capacity,):
                raise ValueError(f"counter {key!r} has shape {tuple(value.shape)}, expected ({self.capacity},)")
        super().load_state_dict(state_dict)
        self.c.copy_(torch.as_tensor(state_dict["c"]))
        self.m.copy_(torch.as_tensor(state_dict["m"]))

    def stats(self, storage: Storage) -> dict[str, float]:
        """Counter statistics over the stored rows, plus the per-mode figures of the last draws."""
        out = super().stats(storage)
        n = len(storage)
        if n:
            c, m = self.c[:n].double(), self.m[:n].double()  # the first n slots are the stored rows
            out.update(c_mean=float(c.mean()), c_max=float(c.max()), m_mean=float(m.mean()), m_max=float(m.max()))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(capacity={self.capacity}, cursor={self._cursor}, tau={self.tau}, "
                f"imagination_tau={self.imagination_tau}, alpha={self.alpha}, beta={self.beta}, "
                f"rate_scale={self.rate_scale})")
