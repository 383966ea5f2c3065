"""The Replay wrapper: data contract, readiness, persistence (bitwise resumption) and a 100k-slot buffer."""

from __future__ import annotations

import io

import pytest
import torch
from tensordict import TensorDict

from drama.config import ReplayConfig
from drama.data import DynamicFrequencySampler, Replay, UniformSampler

KEYS = {"observation", "action", "reward", "termination", "episode_end"}


def rows(t0: int, n: int, ends=(), pixels: bool = False) -> TensorDict:
    t = torch.arange(t0, t0 + n)
    if pixels:
        observation = (t.view(n, 1, 1, 1) % 251).to(torch.uint8).expand(n, 3, 8, 8).clone()
    else:
        observation = t.float().view(n, 1).expand(n, 3).clone()
    episode_end = torch.tensor([int(x) in ends for x in t], dtype=torch.bool)
    return TensorDict(
        observation=observation,
        action=t % 4,
        reward=t.float() / 10,
        termination=episode_end.clone(),
        episode_end=episode_end,
        t=t,
        batch_size=[n],
    )


def make_replay(capacity: int = 64, sampler: str = "dfs", seed: int | None = 0) -> Replay:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return Replay(ReplayConfig(capacity=capacity, sampler=sampler), 4, 16, generator)


def test_sample_has_the_contract_keys_shapes_and_dtypes():
    replay = make_replay(64)
    replay.extend(rows(0, 1, pixels=True)[0])  # a single row without batch dimension
    replay.extend(rows(1, 39, ends={25}, pixels=True))
    assert len(replay) == 40
    assert isinstance(replay.sampler, DynamicFrequencySampler) and replay.sampler.rate_scale == 4.0
    batch = replay.sample("world_model", 4, 6)
    assert batch.batch_size == (4, 6)
    assert KEYS | {"t", "start"} == set(batch.keys())
    assert batch["observation"].dtype == torch.uint8 and batch["observation"].shape == (4, 6, 3, 8, 8)
    assert batch["action"].dtype == torch.long and batch["reward"].dtype == torch.float32
    assert batch["termination"].dtype == torch.bool and batch["episode_end"].dtype == torch.bool
    # rows are the stored ones, in chronological order, and "start" is each window's first slot
    t = batch["t"]
    assert (t.diff(dim=1) == 1).all()
    assert torch.equal(batch["observation"][:, :, 0, 0, 0], (t % 251).to(torch.uint8))
    assert torch.equal(batch["start"], t[:, :1].expand(4, 6))  # not yet full: slot == step
    assert torch.equal(replay.sampler.c[batch["start"][:, 0]], torch.ones(4, dtype=torch.long))


def test_uniform_replay():
    replay = make_replay(64, "uniform")
    replay.extend(rows(0, 30))
    assert isinstance(replay.sampler, UniformSampler)
    batch = replay.sample("imagination", 16, 8)
    assert batch.batch_size == (16, 8) and (batch["t"].diff(dim=1) == 1).all()
    assert "imagination/valid_starts" in replay.stats()


def test_ready_counts_valid_starts_not_rows():
    replay = make_replay(64)
    assert not replay.ready("world_model", 1, 1) and len(replay) == 0
    replay.extend(rows(0, 10, ends={4, 9}))  # two episodes of 5 rows
    assert replay.ready("world_model", 2, 5) and not replay.ready("world_model", 3, 5)
    assert not replay.ready("imagination", 1, 6)
    with pytest.raises(RuntimeError, match="not ready"):
        replay.sample("imagination", 1, 6)
    with pytest.raises(ValueError, match="mode"):
        replay.ready("behaviour", 1, 1)


@pytest.mark.parametrize("sampler", ["dfs", "uniform"])
def test_draw_is_one_pass_and_none_when_not_ready(sampler, monkeypatch):
    replay = make_replay(64, sampler)
    assert replay.draw("world_model", 1, 1) is None  # empty
    replay.extend(rows(0, 10, ends={4, 9}))  # two episodes of 5 rows: 2 valid starts of length 5
    calls = []
    original = type(replay.sampler).valid_starts
    monkeypatch.setattr(type(replay.sampler), "valid_starts",
                        lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    batch = replay.draw("world_model", 2, 5)
    assert batch is not None and batch.batch_size == (2, 5) and calls == [1]  # valid starts computed once
    assert replay.draw("world_model", 3, 5) is None and not replay.ready("world_model", 3, 5)
    assert replay.draw("imagination", 1, 6) is None and not replay.ready("imagination", 1, 6)


def test_extend_longer_than_capacity_keeps_the_newest_rows():
    replay = make_replay(16)
    replay.extend(rows(0, 40))
    assert len(replay) == 16 and replay.sampler.cursor == 40 % 16 == replay.buffer._writer._cursor
    assert sorted(replay.storage[:16]["t"].tolist()) == list(range(24, 40))
    assert replay.num_valid_starts(16) == 1
    batch = replay.sample("world_model", 1, 16)
    assert torch.equal(batch["t"], torch.arange(24, 40).view(1, 16))


def test_stats_report_counters():
    replay = make_replay(64)
    replay.extend(rows(0, 40))
    replay.sample("world_model", 4, 8)
    replay.sample("imagination", 16, 8)
    stats = replay.stats()
    assert stats["rows"] == 40 and stats["c_max"] == 1 and stats["m_max"] == 1
    assert stats["c_mean"] == pytest.approx(4 / 40) and stats["m_mean"] == pytest.approx(16 / 40)
    assert stats["world_model/valid_starts"] == 33 and stats["world_model/never_drawn"] == 1.0


def _run(replay: Replay, t0: int, steps: int) -> tuple[list[torch.Tensor], int]:
    """Alternate writes and draws of both modes (wrapping around the 64-slot buffer); return the drawn starts."""
    drawn = []
    for t in range(t0, t0 + steps):
        replay.extend(rows(t, 1, ends={t} if t % 23 == 22 else ()))
        drawn.append(replay.sample("world_model", 4, 8)["start"][:, 0])
        drawn.append(replay.sample("imagination", 16, 3)["start"][:, 0])
    return drawn, t0 + steps


def _assert_same_state(a: Replay, b: Replay) -> None:
    assert len(a) == len(b) and a.sampler.cursor == b.sampler.cursor
    assert a.buffer._writer._cursor == b.buffer._writer._cursor
    if isinstance(a.sampler, DynamicFrequencySampler):
        assert torch.equal(a.sampler.c, b.sampler.c) and torch.equal(a.sampler.m, b.sampler.m)
    assert (a.storage[: len(a)] == b.storage[: len(b)]).all()
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


@pytest.mark.parametrize("sampler", ["dfs", "uniform"])
def test_state_dict_round_trip_resumes_bitwise(sampler):
    original = make_replay(64, sampler)
    original.extend(rows(0, 40))
    _, t = _run(original, 40, 30)  # wraps around
    blob = io.BytesIO()
    torch.save(original.state_dict(), blob)
    blob.seek(0)
    restored = make_replay(64, sampler, seed=123)  # a different generator: the state must carry the RNG
    restored.load_state_dict(torch.load(blob, weights_only=False))
    _assert_same_state(original, restored)
    expected, _ = _run(original, t, 40)
    got, _ = _run(restored, t, 40)
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))
    _assert_same_state(original, restored)


def test_torchrl_dumps_loads_round_trip_resumes_bitwise(tmp_path):
    """The samplers keep TorchRL's ``ReplayBuffer.dumps`` / ``loads`` contract (a buffer written to a folder)."""
    original = make_replay(64, seed=None)  # private generator seeded from the global RNG
    original.extend(rows(0, 50))
    _, t = _run(original, 50, 30)
    original.buffer.dumps(tmp_path / "replay")
    restored = make_replay(64, seed=7)
    restored.buffer.loads(tmp_path / "replay")
    _assert_same_state(original, restored)
    expected, _ = _run(original, t, 30)
    got, _ = _run(restored, t, 30)
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))
    _assert_same_state(original, restored)
    original.buffer.dumps(tmp_path / "replay")  # overwriting a dump works
    restored.buffer.loads(tmp_path / "replay")
    _assert_same_state(original, restored)


def test_a_100k_slot_buffer_samples_both_modes():
    capacity = 100_000
    replay = Replay(ReplayConfig(capacity=capacity), 16, 1024, torch.Generator().manual_seed(0))
    t = torch.arange(capacity + 5_000)
    episode_end = t % 997 == 996
    data = TensorDict(
        observation=torch.zeros(t.numel(), 4),
        action=torch.zeros(t.numel(), dtype=torch.long),
        reward=torch.zeros(t.numel()),
        termination=episode_end.clone(),
        episode_end=episode_end,
        t=t,
        batch_size=[t.numel()],
    )
    for first in range(0, t.numel(), 20_000):
        replay.extend(data[first : first + 20_000])
    assert len(replay) == capacity and replay.sampler.cursor == 5_000
    for mode, batch, length in [("world_model", 16, 128), ("imagination", 1024, 8)]:
        assert replay.ready(mode, batch, length)
        window = replay.sample(mode, batch, length)
        assert window.batch_size == (batch, length)
        assert (window["t"].diff(dim=1) == 1).all() and not window["episode_end"][:, :-1].any()
        assert window["start"][:, 0].unique().numel() == batch


def test_replay_read_equals_the_torchrl_buffer_read():
    a, b = make_replay(64, seed=3), make_replay(64, seed=3)
    for replay in (a, b):
        replay.extend(rows(0, 100, ends={70}, pixels=True))
    for mode, batch, length in [("world_model", 4, 9), ("imagination", 16, 3)]:
        mine = a.sample(mode, batch, length)
        index, info = b.sampler.draw(b.storage, batch, mode, length)
        theirs = b.storage[index]  # the storage's own (advanced-indexing) read of the same windows
        assert theirs.batch_size == (batch, length)
        assert torch.equal(mine["start"][:, 0], info["start"])
        assert (mine.exclude("start") == theirs).all()


@pytest.mark.parametrize("written", [6, 10, 17])
def test_state_round_trip_into_a_fresh_replay_keeps_only_written_rows(written):
    """Checkpoints of a partly filled buffer hold only the written rows; a fresh Replay resumes bitwise."""
    import io

    def rows(n, offset):
        t = torch.arange(offset, offset + n)
        return TensorDict({"observation": t.float()[:, None].expand(n, 2).clone(), "action": t % 3,
                           "reward": t.float(), "termination": t % 5 == 0, "episode_end": t % 7 == 6},
                          batch_size=[n])

    cfg = ReplayConfig(capacity=10)
    original = Replay(cfg, 2, 4, generator=torch.Generator().manual_seed(0))
    original.extend(rows(written, 0))
    original.sample("world_model", 1, 2)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    saved_rows = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)["_storage"]["_storage"]
    assert saved_rows["observation"].shape[0] == min(written, 10)
    restored = Replay(cfg, 2, 4)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    for replay in (original, restored):
        replay.extend(rows(4, 100))
    assert len(restored) == len(original)
    for mode, length in (("world_model", 2), ("imagination", 1)):
        a, b = original.sample(mode, 2, length), restored.sample(mode, 2, length)
        assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["start"], b["start"])
    assert torch.equal(original.sampler.c, restored.sampler.c) and torch.equal(original.sampler.m, restored.sampler.m)
    assert torch.equal(original.storage.get(slice(None))["reward"], restored.storage.get(slice(None))["reward"])


# ---------------------------------------------------------------- replay.device


def test_replay_device_resolution_on_a_cpu_training_device():
    from drama.data.replay import resolve_replay_device

    cpu = torch.device("cpu")
    assert resolve_replay_device("auto", cpu, 12_320, 100_000) == cpu
    assert resolve_replay_device("cpu", cpu, 12_320, 100_000) == cpu
    with pytest.raises(ValueError, match="replay.device=cuda needs a CUDA training device"):
        resolve_replay_device("cuda", cpu, 12_320, 100_000)


def test_replay_device_is_validated_with_the_config():
    from drama.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="replay.device"):
        load_config(None, ["replay.device=tpu"])
    cpu_run = load_config(None, ["replay.device=cuda", "runtime.device=cpu"])  # valid as a file: a rule of the machine
    from drama.preflight import check_runtime

    with pytest.raises(ConfigError, match="replay.device='cuda' is invalid: needs a CUDA training device"):
        check_runtime(cpu_run)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("storage", ["cuda", "cpu"])
def test_replay_on_cuda_draws_what_the_host_replay_draws(storage):
    """Rows on the GPU (or on the host, handed out through pinned memory) give the host replay's batches."""
    cfg = ReplayConfig(capacity=64)
    host = Replay(cfg, 4, 16, torch.Generator().manual_seed(0))
    other = Replay(cfg, 4, 16, torch.Generator().manual_seed(0), device=storage, batch_device="cuda")
    for replay in (host, other):
        replay.extend(rows(0, 50, ends=(20, 41), pixels=True))
    for mode in ("world_model", "imagination", "world_model"):
        a, b = host.sample(mode, 4, 8), other.sample(mode, 4, 8)
        assert b.device.type == "cuda" and all(v.device.type == "cuda" for v in b.values())
        assert set(a.keys()) == set(b.keys())
        for key in a.keys():
            assert torch.equal(a[key], b[key].cpu()), key
    restored = Replay(cfg, 4, 16, device=storage, batch_device="cuda")
    restored.load_state_dict(other.state_dict())
    assert torch.equal(restored.sample("world_model", 4, 8)["t"].cpu(), host.sample("world_model", 4, 8)["t"])


def test_a_state_whose_sampler_is_out_of_step_with_the_writer_is_refused():
    """The sampler follows the writer slot by slot; a state where they disagree (hand-edited, or from another
    buffer) would draw windows across the write position, so loading it fails naming both positions."""
    original = make_replay(64)
    original.extend(rows(0, 50))
    state = original.state_dict()
    state["_sampler"] = {**state["_sampler"], "cursor": 7}
    with pytest.raises(ValueError, match="write position 7 is not the writer's 50"):
        make_replay(64).load_state_dict(state)
