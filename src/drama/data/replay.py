"""The replay buffer: TorchRL storage and writer with the window-start sampler of :mod:`drama.data.dfs`.

One row per env step ``t``, written in chronological order: ``observation`` (uint8 pixels or float vector; no
next-observation), ``action``, ``reward``, ``termination`` (training target: terminated or life lost) and
``episode_end`` (terminated or truncated: the episode's last row). Row ``t`` holds ``o_t`` before ``a_t``, and the
``r_t``, ``d_t`` caused by ``a_t``. Extra keys are stored and sampled like the others.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer, RoundRobinWriter

from drama.config import SAMPLERS, ReplayConfig
from drama.data.dfs import EPISODE_END_KEY, DynamicFrequencySampler, UniformSampler, WindowSampler, _check_mode


def make_sampler(cfg: ReplayConfig, world_model_batch: int, imagination_batch: int) -> WindowSampler:
    """The start sampler named by ``cfg.sampler``; the DFS rate scale is ``imagination / world-model batch``."""
    if cfg.sampler == "dfs":
        if world_model_batch < 1 or imagination_batch < 1:
            raise ValueError(f"batch sizes must be positive, got {world_model_batch} and {imagination_batch}")
        return DynamicFrequencySampler(
            cfg.capacity,
            tau=cfg.tau,
            imagination_tau=cfg.imagination_tau,
            alpha=cfg.alpha,
            beta=cfg.beta,
            rate_scale=imagination_batch / world_model_batch,
        )
    if cfg.sampler == "uniform":
        return UniformSampler(cfg.capacity)
    raise ValueError(f"replay.sampler must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}")


def resolve_replay_device(name: str, training_device: torch.device, row_bytes: int, capacity: int) -> torch.device:
    """Where the stored rows live (``replay.device``): ``cpu``; ``cuda`` (the training device, which must be CUDA);
    ``auto``: the training device when it is CUDA and ``capacity`` rows of ``row_bytes`` take at most a quarter of
    its free memory (the paper's 100k Atari rows are ~1.2 GB), else ``cpu``."""
    if name == "cpu":
        return torch.device("cpu")
    if training_device.type != "cuda":
        if name == "cuda":
            raise ValueError(f"replay.device=cuda needs a CUDA training device, got {training_device}")
        return torch.device("cpu")
    if name == "cuda":
        return training_device
    free, _ = torch.cuda.mem_get_info(training_device)
    return training_device if row_bytes * capacity <= free // 4 else torch.device("cpu")


class Replay:
    """Ring buffer of env steps with chronological, episode-bound window sampling.

    The rows live on ``device`` (host memory by default, or the training GPU: ``replay.device``); batches are
    gathered there and handed out on ``batch_device``, through pinned memory and a non-blocking copy when the
    rows are on the host and the batches go to a GPU. The sampler's counters and its generator stay on the host.

    Args:
        cfg: capacity and sampler settings.
        world_model_batch: world-model batch size B (windows); with ``imagination_batch`` it sets the DFS rate
            scale ``s = imagination_batch / world_model_batch``.
        imagination_batch: imagination batch size (context windows).
        generator: the RNG of every draw. It becomes part of the buffer's state (``state_dict``, ``dumps``); with
            ``None`` a private generator is seeded from the global torch RNG, so runs stay reproducible under
            ``torch.manual_seed`` and resumable.
        device: where the rows are stored (:func:`resolve_replay_device`).
        batch_device: where :meth:`draw` returns batches (default: ``device``).
    """

    def __init__(
        self,
        cfg: ReplayConfig,
        world_model_batch: int,
        imagination_batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        batch_device: torch.device | str | None = None,
    ) -> None:
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        self.capacity = int(cfg.capacity)
        self.device = torch.device(device)
        self.batch_device = self.device if batch_device is None else torch.device(batch_device)
        self.pin = self.device.type == "cpu" and self.batch_device.type == "cuda"
        self.sampler = make_sampler(cfg, world_model_batch, imagination_batch)
        self.buffer = ReplayBuffer(
            storage=LazyTensorStorage(self.capacity, device=self.device),
            sampler=self.sampler,
            writer=RoundRobinWriter(),
            generator=generator,
        )

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def storage(self) -> LazyTensorStorage:
        return self.buffer.storage

    @property
    def generator(self) -> torch.Generator:
        """The generator the buffer currently draws with (replaced by ``load_state_dict`` / ``loads``)."""
        return self.buffer._rng

    def extend(self, rows: TensorDictBase) -> None:
        """Append rows (batch ``[n]``, or ``[]`` for one row) in chronological order."""
        if rows.batch_dims == 0:
            rows = rows.unsqueeze(0)
        if rows.batch_dims != 1:
            raise ValueError(f"rows must have one batch dimension, got batch size {tuple(rows.batch_size)}")
        rows = rows.to(self.device)
        if EPISODE_END_KEY not in rows.keys():
            raise KeyError(f"rows must carry {EPISODE_END_KEY!r} (terminated or truncated)")
        n = rows.batch_size[0]
        for first in range(0, n, self.capacity):  # a write never wraps over itself
            self.buffer.extend(rows[first : first + self.capacity])

    def num_valid_starts(self, length: int) -> int:
        """Number of valid window starts of ``length`` rows (chronological, inside one episode)."""
        if len(self) == 0:
            return 0
        return self.sampler.num_valid_starts(self.storage, length)

    def ready(self, mode: str, batch: int, length: int) -> bool:
        """Whether ``sample(mode, batch, length)`` can draw (the sampler's one rule: at least ``batch`` valid
        starts)."""
        _check_mode(mode)
        return self.sampler.can_draw(self.num_valid_starts(length), batch)

    def draw(self, mode: str, batch: int, length: int) -> TensorDict | None:
        """``batch`` windows of ``length`` consecutive rows of one episode each, TensorDict ``(batch, length)``, or
        None when the replay cannot draw them yet (:meth:`ready`); one pass over the stored rows.

        ``mode`` is ``world_model`` or ``imagination``: it selects the DFS probabilities and the counter that is
        incremented. Besides the stored keys the sample holds ``start``: the storage slot of each window's first
        row, broadcast along the window, shape ``(batch, length)`` (``sample["start"][:, 0]`` is ``(batch,)``).
        """
        _check_mode(mode)
        if len(self) == 0:
            return None
        out = self.sampler.draw(self.storage, batch, mode, length)
        if out is None:
            return None
        index, info = out
        # The sampler's (batch, length) index also works with ``self.buffer.sample``; reading the rows with
        # ``index_select`` is ~5x faster than the storage's advanced indexing for 3x64x64 uint8 rows.
        flat = index.reshape(-1).to(self.device, non_blocking=True)
        stored = self.storage.get(slice(None))  # a view of the stored rows
        data = stored.apply(lambda x: x.index_select(0, flat).unflatten(0, (batch, length)),
                            batch_size=[batch, length])
        data.set("start", info["start"].to(self.device)[:, None].expand(batch, length).contiguous())
        if self.pin:
            data = data.pin_memory()
        return data.to(self.batch_device, non_blocking=True) if self.batch_device != self.device else data

    def sample(self, mode: str, batch: int, length: int) -> TensorDict:
        """:meth:`draw`, raising ``RuntimeError`` (with the counts) when the replay is not ready."""
        data = self.draw(mode, batch, length)
        if data is None:
            raise RuntimeError(
                f"replay not ready for {mode}: {self.num_valid_starts(length)} valid starts of length {length} in "
                f"{len(self)} rows, need {batch}"
            )
        return data

    def latest_window(self, length: int) -> TensorDict | None:
        """The most recent valid window of ``length`` rows (batch ``(length,)``), or None if there is none.

        A read-only peek for visualisation: no DFS counter changes and no random draw, so training is unaffected.
        """
        starts = self.sampler.valid_starts(self.storage, length) if len(self) else torch.empty(0)
        if starts.numel() == 0:
            return None
        index = ((int(starts[-1]) + torch.arange(length)) % self.capacity).to(self.device)
        return self.storage.get(slice(None)).apply(lambda x: x.index_select(0, index), batch_size=[length])

    def stats(self) -> dict[str, float]:
        """Sampler statistics for logging (counters over stored rows; valid starts and never-drawn fraction)."""
        stats = {"rows": float(len(self))}
        if len(self):
            stats.update(self.sampler.stats(self.storage))
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Storage contents, writer cursor, sampler state and RNG state.

        Before the buffer is full only the written rows are kept (copied), so an early checkpoint of a 100k-row
        buffer is not 1.2 GB; a full buffer's rows are returned by reference (not copied).
        """
        state = self.buffer.state_dict()
        storage = state["_storage"]
        if storage.get("initialized") and storage["_len"] < self.capacity:
            storage["_storage"] = _map_tensors(storage["_storage"], lambda t: t[: storage["_len"]].clone())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        storage = state_dict["_storage"]
        if storage.get("initialized"):
            def pad(t: torch.Tensor) -> torch.Tensor:  # back to full capacity (rows past _len are unused)
                return torch.cat([t, t.new_zeros(self.capacity - t.shape[0], *t.shape[1:])]) if len(t) < self.capacity \
                    else t

            rows = _map_tensors(storage["_storage"], lambda t: pad(t.to(self.device)))
            # allocate like a first write would; a fresh storage would otherwise load rows with batch size []
            self.storage._storage = TensorDict(rows, batch_size=[self.capacity])
            state_dict = {**state_dict, "_storage": {**storage, "_storage": rows}}
        self.buffer.load_state_dict(state_dict)
        writer = self.buffer._writer._cursor
        if self.sampler.cursor != writer:  # the sampler follows the writer slot by slot (drama.data.dfs)
            raise ValueError(f"replay state is inconsistent: the sampler's write position {self.sampler.cursor} is "
                             f"not the writer's {writer}")


def _map_tensors(tree: Any, fn) -> Any:
    """Apply ``fn`` to every tensor of a nested dict / TensorDict state."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, TensorDictBase):
        return tree.apply(fn, batch_size=[])
    return {key: _map_tensors(value, fn) for key, value in tree.items()}
