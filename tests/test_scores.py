"""Atari 100k reference scores, human-normalised scores and the shipped baseline rows of the reference's score
table (atari_performance.csv, without its rounded Random / Human rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drama import scores
from drama.scores import (
    ATARI_100K_ENV_IDS,
    ATARI_100K_GAMES,
    HUMAN_SCORES,
    RANDOM_SCORES,
    atari_game,
    baselines,
    env_id,
    game_from_env_id,
    human_normalized_percent,
    human_normalized_score,
    human_normalized_scores,
)

# The reference's rounded Random / Human rows (its atari_performance.csv), in game order.
APPENDIX_C_RANDOM = [228, 6, 222, 210, 14, 2360, 0, 2, 811, 10780, 152, 0, 65, 258, 1027, 29, 52, 1598, 258, 307,
                     -21, 25, 164, 12, 68, 533]  # fmt: skip
APPENDIX_C_HUMAN = [7128, 1720, 742, 8503, 753, 37188, 12, 30, 7388, 35829, 1971, 30, 4335, 2412, 30826, 303, 3035,
                    2666, 22736, 6952, 15, 69571, 13455, 7845, 42055, 11693]  # fmt: skip
METHODS = ("PPO", "SimPLe", "SPR", "TWM", "IRIS", "DreamerV3")


def test_hand_computed_pong_and_breakout():
    # Pong: random -20.7, human 14.6 -> (0 + 20.7) / 35.3
    assert human_normalized_score("Pong", 0.0) == pytest.approx(0.5864022662889519, rel=1e-12)
    assert human_normalized_score("ALE/Pong-v5", 21.0) == pytest.approx(1.1813031161473089, rel=1e-12)
    # Breakout: random 1.7, human 30.5 -> (20 - 1.7) / 28.8
    assert human_normalized_score("Breakout", 20.0) == pytest.approx(0.6354166666666666, rel=1e-12)
    assert human_normalized_percent("Breakout", 20.0) == pytest.approx(63.54166666666666, rel=1e-12)
    # The rounded constants of the reference (-21 / 15) would give 21/36 = 0.5833..., not 0.5864...
    assert abs(human_normalized_score("Pong", 0.0) - 21 / 36) > 2e-3


def test_endpoints_and_vectorised():
    for g in ATARI_100K_GAMES:
        assert human_normalized_score(g, RANDOM_SCORES[g]) == pytest.approx(0.0, abs=1e-12)
        assert human_normalized_score(g, HUMAN_SCORES[g]) == pytest.approx(1.0, rel=1e-12)
    out = human_normalized_score("Breakout", np.array([[1.7, 30.5], [20.0, 59.3]]))
    assert isinstance(out, np.ndarray) and out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.0, 1.0], [0.6354166666666666, 2.0]], rtol=1e-12, atol=1e-12)
    assert isinstance(human_normalized_score("Pong", 3), float)
    assert human_normalized_scores({"ALE/Pong-v5": 0.0, "Breakout": 20.0}) == pytest.approx(
        {"Pong": 0.5864022662889519, "Breakout": 0.6354166666666666}
    )


def test_all_26_games_with_unrounded_constants():
    assert len(ATARI_100K_GAMES) == len(set(ATARI_100K_GAMES)) == 26
    assert tuple(RANDOM_SCORES) == tuple(HUMAN_SCORES) == ATARI_100K_GAMES
    for g in ATARI_100K_GAMES:
        assert HUMAN_SCORES[g] > RANDOM_SCORES[g], g
    # A few standard values (DQN Nature / dqn_zoo / rliable).
    assert (RANDOM_SCORES["Pong"], HUMAN_SCORES["Pong"]) == (-20.7, 14.6)
    assert (RANDOM_SCORES["Breakout"], HUMAN_SCORES["Breakout"]) == (1.7, 30.5)
    assert (RANDOM_SCORES["Boxing"], HUMAN_SCORES["Boxing"]) == (0.1, 12.1)
    assert (RANDOM_SCORES["Freeway"], HUMAN_SCORES["Freeway"]) == (0.0, 29.6)
    assert any(v != round(v) for v in HUMAN_SCORES.values())


def test_unrounded_constants_round_to_appendix_c():
    # Python's round() (half to even) reproduces every rounded entry exactly (e.g. 30.5 -> 30, 2665.5 -> 2666).
    for g, r, h in zip(ATARI_100K_GAMES, APPENDIX_C_RANDOM, APPENDIX_C_HUMAN, strict=True):
        assert abs(RANDOM_SCORES[g] - r) <= 0.5 and round(RANDOM_SCORES[g]) == r, g
        assert abs(HUMAN_SCORES[g] - h) <= 0.5 and round(HUMAN_SCORES[g]) == h, g


def test_env_ids_round_trip_and_are_registered():
    gymnasium = pytest.importorskip("gymnasium")
    ale_py = pytest.importorskip("ale_py")
    gymnasium.register_envs(ale_py)
    assert tuple(ATARI_100K_ENV_IDS) == ATARI_100K_GAMES
    for g, eid in ATARI_100K_ENV_IDS.items():
        assert eid in gymnasium.registry, eid
        assert game_from_env_id(eid) == g
        assert game_from_env_id(g) == g
        assert env_id(g) == eid
    assert ATARI_100K_ENV_IDS["Jamesbond"] == "ALE/Jamesbond-v5"
    assert ATARI_100K_ENV_IDS["UpNDown"] == "ALE/UpNDown-v5"


@pytest.mark.parametrize(
    ("name", "game"),
    [
        ("ALE/Pong-v5", "Pong"),
        ("Pong", "Pong"),
        ("pong", "Pong"),
        ("PongNoFrameskip-v4", "Pong"),
        ("ALE/MsPacman-v5", "MsPacman"),
        ("ms_pacman", "MsPacman"),
        ("ALE/KungFuMaster-v5", "KungFuMaster"),
        ("up_n_down", "UpNDown"),
    ],
)
def test_game_name_variants(name, game):
    assert atari_game(name) == game
    assert game_from_env_id(name) == game


@pytest.mark.parametrize("name", ["CartPole-v1", "ALE/SpaceInvaders-v5", "Pendulum-v1", "", "ALE/"])
def test_non_atari100k_ids(name):
    assert atari_game(name) is None
    with pytest.raises(ValueError, match="not an Atari 100k game"):
        game_from_env_id(name)
    with pytest.raises(ValueError):
        human_normalized_score(name, 1.0)


def test_baselines_load():
    rows = baselines()
    assert tuple(rows) == METHODS
    for m, b in rows.items():
        assert b.method == m
        assert tuple(b.scores) == ATARI_100K_GAMES, m
        assert all(math.isfinite(v) for v in b.scores.values())
        assert b.frames == 400_000
    assert rows["IRIS"].scores["Breakout"] == 84
    assert rows["DreamerV3"].scores["UpNDown"] == 46910
    assert rows["PPO"].scores["Pong"] == -20
    assert (rows["IRIS"].reported_mean, rows["IRIS"].reported_median) == (105, 29)
    assert (rows["DreamerV3"].reported_mean, rows["DreamerV3"].reported_median) == (125, 49)
    # Flags from the row labels.
    assert rows["SimPLe"].sticky_actions is True and rows["SimPLe"].full_action_space is False
    assert rows["DreamerV3"].sticky_actions is False and rows["DreamerV3"].full_action_space is True
    assert rows["IRIS"].sticky_actions is False and rows["IRIS"].full_action_space is False
    assert rows["PPO"].sticky_actions is None and rows["PPO"].full_action_space is None
    # Callers may mutate the returned dict without affecting later calls.
    rows.clear()
    assert tuple(baselines()) == METHODS


def test_baseline_means_match_reported():
    # With the unrounded constants every recomputed mean / median is within 0.5 points of the reported integer
    # (PPO 10.56 / 2.47, SimPLe 33.28 / 13.41, SPR 61.74 / 40.15, TWM 95.77 / 50.55, IRIS 104.65 / 28.88,
    # DreamerV3 124.71 / 49.41); allow 1 point.
    for m, b in baselines().items():
        scores = list(b.human_normalized().values())
        assert 100 * np.mean(scores) == pytest.approx(b.reported_mean, abs=1.0), m
        assert 100 * np.median(scores) == pytest.approx(b.reported_median, abs=1.0), m


def test_baselines_csv_is_package_data():
    from importlib import resources

    assert resources.files("drama").joinpath("resources", "baselines.csv").is_file()
    assert scores.__all__ and all(hasattr(scores, n) for n in scores.__all__)


# ---------------------------------------------------------------------- published scores with sources
def test_published_scores_cover_the_26_games_with_a_source_each():
    from drama.scores import published_scores

    published = published_scores()
    for method in ("DRAMA", "STORM", "DIAMOND", "DreamerV3", "DreamerV3_v1_2023"):
        assert set(published[method]) == set(ATARI_100K_GAMES), method
        assert all(score.source and score.note for score in published[method].values())
    assert published["DRAMA"]["Boxing"].score == 78 and published["DRAMA"]["Krull"].score == 9693
    # the two values the first author corrected (Drama issue #2)
    assert published["DRAMA"]["CrazyClimber"].score == 83931 and published["DRAMA"]["KungFuMaster"].score == 23920


def test_dramas_published_table_reproduces_the_authors_aggregates():
    import statistics

    from drama.scores import PUBLISHED_AGGREGATES, published_scores

    table = published_scores()["DRAMA"]
    hns = [human_normalized_percent(game, entry.score) for game, entry in table.items()]
    mean, median, source = PUBLISHED_AGGREGATES["DRAMA"]
    assert round(statistics.fmean(hns)) == mean and round(statistics.median(hns)) == median and "issues/2" in source


@pytest.mark.parametrize("method", ["STORM", "DIAMOND", "DreamerV3", "DreamerV3_v1_2023"])
def test_per_seed_scores_average_to_the_published_score(method):
    from drama.scores import published_scores

    for game, entry in published_scores()[method].items():
        seeds = [s for s in entry.seeds if s is not None]
        if seeds:  # STORM's Freeway has none: its per-seed file disagrees with the paper (see the note)
            assert sum(seeds) / len(seeds) == pytest.approx(entry.score, abs=0.06, rel=1e-3), (method, game)
