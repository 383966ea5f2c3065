"""Window-start samplers: DFS probabilities and counters, valid starts (docs/decisions.md, "Windows stay inside
one episode" and "ring-buffer wrap")."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer, RoundRobinWriter

from drama.config import ReplayConfig
from drama.data import DynamicFrequencySampler, Replay, UniformSampler


def rows(t0: int, n: int, ends=(), lives=()) -> TensorDict:
    """Rows of env steps t0 .. t0+n-1 with a ``t`` column; ``ends``/``lives``: steps with episode_end/termination."""
    t = torch.arange(t0, t0 + n)
    return TensorDict(
        observation=torch.zeros(n, 2),
        action=torch.zeros(n, dtype=torch.long),
        reward=torch.zeros(n),
        termination=torch.tensor([int(x) in lives or int(x) in ends for x in t], dtype=torch.bool),
        episode_end=torch.tensor([int(x) in ends for x in t], dtype=torch.bool),
        t=t,
        batch_size=[n],
    )


def make_replay(capacity: int, sampler: str = "dfs", wm_batch: int = 16, img_batch: int = 1024, seed: int = 0,
                **kw) -> Replay:
    cfg = ReplayConfig(capacity=capacity, sampler=sampler, **kw)
    return Replay(cfg, wm_batch, img_batch, torch.Generator().manual_seed(seed))


def fill(replay: Replay, n: int, ends=(), lives=(), t0: int = 0, chunk: int = 1) -> None:
    for first in range(t0, t0 + n, chunk):
        replay.extend(rows(first, min(chunk, t0 + n - first), ends, lives))


def brute_force_starts(t_of_slot: list[int], ends_of_slot: list[bool], length: int) -> set[int]:
    """Valid starts from first principles: follow the steps ``t`` forward from each slot."""
    slot_of_t = {t: i for i, t in enumerate(t_of_slot)}
    valid = set()
    for i, t in enumerate(t_of_slot):
        slots = [slot_of_t.get(t + k) for k in range(length)]
        if None in slots:
            continue
        if not any(ends_of_slot[s] for s in slots[:-1]):
            valid.add(i)
    return valid


def empirical(replay: Replay, mode: str, length: int, draws: int) -> torch.Tensor:
    """Counts of each slot as a single-start draw (B = 1), with the counters restored after every draw."""
    sampler, storage = replay.sampler, replay.storage
    saved = sampler.state_dict()
    hits = torch.zeros(replay.capacity)
    for _ in range(draws):
        index, info = sampler.draw(storage, 1, mode, length)
        hits[info["start"]] += 1
        if isinstance(sampler, DynamicFrequencySampler):
            sampler.load_state_dict(saved)
    return hits


def chi_square(hits: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic of the counts against the probabilities, and a rejection threshold (about p < 1e-4).

    The least likely categories are pooled until the pool is expected at least 5 times; a hit on a
    zero-probability category rejects outright.
    """
    if hits[expected == 0].sum() > 0:
        return math.inf, 0.0
    support = expected > 0
    hits, mean = hits[support], hits.sum() * expected[support]
    order = mean.argsort()
    hits, mean = hits[order], mean[order]
    pooled = int((mean.cumsum(0) < 5).sum()) + 1  # the smallest prefix that reaches 5
    observed = torch.cat([hits[:pooled].sum().reshape(1), hits[pooled:]])
    mean = torch.cat([mean[:pooled].sum().reshape(1), mean[pooled:]])
    stat = float(((observed - mean) ** 2 / mean).sum())
    df = mean.numel() - 1
    return stat, df + 6 * math.sqrt(2 * df)


# ---------------------------------------------------------------------- probabilities
WM_COUNTS = [0, 0, 3, 7, 10, 15, 20, 30, 0, 5, 40, 2]  # slot 8 (c = 0) is an invalid start: it must never be drawn
WM_ENDS = {8}  # with L = 2 the start at slot 8 would cross the episode end at row 8


@pytest.mark.parametrize("sampler", ["dfs", "uniform"])
def test_world_model_frequencies_follow_exp_minus_c_over_tau(sampler):
    replay = make_replay(13, sampler, tau=10.0)
    fill(replay, 13, ends=WM_ENDS)
    length = 2  # valid starts: slots 0..11 except 8
    counts = WM_COUNTS
    if sampler == "dfs":
        replay.sampler.c[: len(counts)] = torch.tensor(counts)
    valid = [i for i in range(12) if i != 8]
    z = sum(math.exp(-counts[i] / 10.0) for i in valid)
    expected = torch.zeros(13)
    for i in valid:
        expected[i] = math.exp(-counts[i] / 10.0) / z
    hits = empirical(replay, "world_model", length, 2000)
    assert hits[8] == 0 and hits[12] == 0  # invalid starts are never drawn
    stat, threshold = chi_square(hits, expected)
    if sampler == "dfs":
        assert stat < threshold, (hits, expected)
    else:
        assert stat > 5 * threshold  # the same check rejects the uniform sampler


IMG_C = [0, 10, 10, 4, 0, 20, 6, 1, 9, 0]
IMG_M = [0, 0, 160, 640, 320, 40, 24, 200, 36, 0]  # with s = 4: m~ = 0, 0, 40, 160, 80, 10, 6, 50, 9, 0


@pytest.mark.parametrize(
    "sampler,alpha,beta", [("dfs", 1.0, 1.0), ("dfs", 0.5, 2.0), ("dfs", 2.0, 0.25), ("uniform", 0.5, 2.0)]
)
def test_imagination_frequencies_follow_the_score_softmax(sampler, alpha, beta):
    replay = make_replay(10, sampler, wm_batch=4, img_batch=16, imagination_tau=10.0, alpha=alpha, beta=beta)
    fill(replay, 10)
    if sampler == "dfs":
        assert replay.sampler.rate_scale == 4.0
        replay.sampler.c[:] = torch.tensor(IMG_C)
        replay.sampler.m[:] = torch.tensor(IMG_M)
    scores = []
    for c, m in zip(IMG_C, IMG_M, strict=True):  # the imagination-start score, by hand
        m_tilde = m / 4.0
        if c >= m_tilde:
            score = (1 - beta) * c - (alpha - beta) * m_tilde
        else:
            score = c - alpha * m_tilde
        scores.append(score / 10.0)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    expected = torch.tensor(weights) / sum(weights)
    assert expected.max() - expected.min() > 0.1  # the case is not nearly uniform
    hits = empirical(replay, "imagination", 1, 2000)
    stat, threshold = chi_square(hits, expected)
    if sampler == "dfs":
        starts = replay.sampler.valid_starts(replay.storage, 1)  # first-draw probabilities: softmax of the logits
        torch.testing.assert_close(torch.softmax(replay.sampler.logits(starts, "imagination"), 0), expected.double())
        assert stat < threshold, (hits, expected)
    else:
        assert stat > 5 * threshold


# ---------------------------------------------------------------------- batches and counters
def test_dfs_batch_has_distinct_starts_uniform_may_repeat():
    length, valid = 4, 37
    dfs, uniform = make_replay(40), make_replay(40, "uniform")
    for replay in (dfs, uniform):
        fill(replay, 40)
        assert replay.num_valid_starts(length) == valid
    repeats = 0
    for _ in range(20):
        starts = dfs.sample("world_model", valid - 1, length)["start"][:, 0]
        assert starts.unique().numel() == valid - 1
        starts = dfs.sample("imagination", valid, length)["start"][:, 0]
        assert sorted(starts.tolist()) == list(range(valid))
        starts = uniform.sample("world_model", valid - 1, length)["start"][:, 0]
        repeats += starts.unique().numel() < valid - 1
    assert repeats > 0
    with pytest.raises(RuntimeError, match="valid starts"):
        dfs.sample("world_model", valid + 1, length)


def test_counters_increment_in_their_mode_only_by_one_per_start():
    replay = make_replay(64, wm_batch=4, img_batch=16)
    fill(replay, 64, ends={30})
    sampler = replay.sampler
    wm_hits, img_hits = torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=torch.long)
    for _ in range(5):
        c_before, m_before = sampler.c.clone(), sampler.m.clone()
        starts = replay.sample("world_model", 4, 8)["start"][:, 0]
        assert torch.equal(sampler.m, m_before)
        diff = sampler.c - c_before
        assert diff.sum() == 4 and torch.equal(diff[starts], torch.ones(4, dtype=torch.long))
        wm_hits += torch.bincount(starts, minlength=64)

        c_before, m_before = sampler.c.clone(), sampler.m.clone()
        starts = replay.sample("imagination", 16, 3)["start"][:, 0]
        assert torch.equal(sampler.c, c_before)
        diff = sampler.m - m_before
        assert diff.sum() == 16 and torch.equal(diff[starts], torch.ones(16, dtype=torch.long))
        img_hits += torch.bincount(starts, minlength=64)
    assert torch.equal(sampler.c, wm_hits) and torch.equal(sampler.m, img_hits)


def test_overwritten_slots_restart_from_zero():
    replay = make_replay(50, wm_batch=10, img_batch=40)
    fill(replay, 50)
    for _ in range(30):
        replay.sample("world_model", 10, 1)
        replay.sample("imagination", 40, 1)
    sampler = replay.sampler
    assert (sampler.c > 0).all() and (sampler.m > 0).all()
    c_old, m_old = sampler.c.clone(), sampler.m.clone()
    fill(replay, 30, t0=50)  # one row at a time: slots 0..29 are overwritten
    assert (sampler.c[:30] == 0).all() and (sampler.m[:30] == 0).all()
    assert torch.equal(sampler.c[30:], c_old[30:]) and torch.equal(sampler.m[30:], m_old[30:])
    assert sampler.cursor == 30 == replay.buffer._writer._cursor


def test_empty_resets_counters_and_cursor_in_a_plain_torchrl_buffer():
    sampler = DynamicFrequencySampler(10)
    rb = ReplayBuffer(storage=LazyTensorStorage(10), sampler=sampler, writer=RoundRobinWriter())
    rb.extend(rows(0, 7))
    index, _ = sampler.draw(rb.storage, 4, "world_model", 3)
    data = rb.storage[index]
    assert data.shape == (4, 3) and (data["t"].diff(dim=1) == 1).all()
    assert sampler.c.sum() == 4 and sampler.cursor == 7
    with pytest.raises(NotImplementedError, match="Replay.draw"):
        rb.sample(4)  # no mode, no window length: the buffer's own sampling path is refused
    rb.empty()
    assert sampler.c.sum() == 0 and sampler.cursor == 0


# ---------------------------------------------------------------------- valid starts
@pytest.mark.parametrize("sampler", ["dfs", "uniform"])
def test_after_wrap_windows_are_chronological_and_never_straddle_the_write_position(sampler):
    replay = make_replay(50, sampler)
    fill(replay, 80, chunk=7)
    length = 10
    assert replay.buffer._writer._cursor == replay.sampler.cursor == 30
    t_of_slot = replay.storage[:50]["t"]
    starts = replay.sampler.valid_starts(replay.storage, length)
    assert sorted(t_of_slot[starts].tolist()) == list(range(30, 71))  # steps 30..70 start a full window
    for _ in range(20):
        window = replay.sample("world_model", 16, length)["t"]
        assert (window.diff(dim=1) == 1).all()
        assert window.min() >= 30 and window.max() <= 79


def test_not_yet_full_and_exactly_full():
    replay = make_replay(50)
    fill(replay, 30)
    assert replay.sampler.valid_starts(replay.storage, 10).tolist() == list(range(21))
    fill(replay, 20, t0=30)
    assert replay.sampler.cursor == 0
    assert replay.sampler.valid_starts(replay.storage, 10).tolist() == list(range(41))


def test_valid_starts_match_brute_force_with_wrap_and_random_episode_ends():
    gen = torch.Generator().manual_seed(1)
    for capacity, total in [(37, 20), (37, 37), (37, 90), (64, 150)]:
        ends = set((torch.nonzero(torch.rand(total, generator=gen) < 0.12).squeeze(1)).tolist())
        replay = make_replay(capacity)
        fill(replay, total, ends=ends, chunk=5)
        stored = replay.storage[: len(replay)]
        for length in (1, 2, 5, 12):
            expected = brute_force_starts(stored["t"].tolist(), stored["episode_end"].tolist(), length)
            got = replay.sampler.valid_starts(replay.storage, length).tolist()
            assert len(got) == len(set(got)) and set(got) == expected, (capacity, total, length)


def test_windows_stay_within_one_episode_life_losses_allowed():
    # episodes: steps 0..11 (12 rows), 12..14 (3 rows, shorter than L), 15..34, then 35.. still running
    ends, lives = {11, 14, 34}, {5, 20, 21}
    replay = make_replay(60, wm_batch=4, img_batch=16)
    fill(replay, 40, ends=ends, lives=lives)
    length = 5
    starts = replay.sampler.valid_starts(replay.storage, length).tolist()
    assert starts == list(range(0, 8)) + list(range(15, 31)) + [35]
    ends_last = lives_inside = 0
    for _ in range(30):
        window = replay.sample("world_model", 16, length)
        assert not window["episode_end"][:, :-1].any()
        ends_last += int(window["episode_end"][:, -1].sum())
        lives_inside += int(window["termination"][:, :-1].sum())
    assert ends_last > 0 and lives_inside > 0  # an episode may end on the last row; life losses anywhere


def test_short_episodes_offer_no_start():
    replay = make_replay(100, wm_batch=2, img_batch=4)
    fill(replay, 60, ends=set(range(5, 60, 6)))  # episodes of 6 rows
    assert replay.num_valid_starts(7) == 0 and not replay.ready("world_model", 1, 7)
    assert replay.num_valid_starts(6) == 10 and replay.ready("world_model", 10, 6)
    assert not replay.ready("world_model", 11, 6)
    with pytest.raises(RuntimeError, match="not ready"):
        replay.sample("world_model", 2, 7)
    sampler = UniformSampler(100)
    assert sampler.draw(replay.storage, 1, "imagination", 7) is None
