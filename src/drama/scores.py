"""Atari 100k games, random / human reference scores, human-normalised scores and published baselines.

Reference scores
    ``RANDOM_SCORES`` and ``HUMAN_SCORES`` are the standard **unrounded** Atari-57 random-agent and
    professional-human scores (no-op starts, 108k-frame episode cap) used by DQN (Nature 2015) and the whole
    Atari 100k literature (SimPLe, DER, SPR, IRIS, DreamerV3, ...). The 26 pairs were checked one by one
    against two public copies: ``dqn_zoo/atari_data.py`` of google-deepmind/dqn_zoo (``_ATARI_DATA``, random
    and human for all 57 games) and ``reincarnating_rl/atari_scores.py`` of google-research/reincarnating_rl
    (random); also identical in the 26-game ``RANDOM_SCORES`` / ``HUMAN_SCORES`` dictionaries of public
    Atari 100k analysis scripts derived from the rliable colab. The reference implementation normalised with
    the same numbers rounded to integers (docs/decisions.md, "rounded normalisation constants"); this module
    never does.

Human-normalised score
    ``(score - random) / (human - random)``, returned as a **fraction** (0 = random, 1 = human), as in
    rliable and dqn_zoo. ``human_normalized_percent`` gives the same number × 100, the unit of the
    "mean / median %" columns of papers and of :func:`baselines`.

Baselines
    :func:`baselines` loads the method rows of the reference's ``atari_performance.csv`` (shipped
    as ``drama/resources/baselines.csv``): PPO, SimPLe, SPR, TWM, IRIS and DreamerV3 per-game scores
    (rounded to integers as published there), the settings recorded in their row labels (frames, sticky
    actions, full action space) and their reported human-normalised mean / median in %, as given in the file.
    The file's rounded Random / Human rows are deliberately not shipped. Recomputing each method's mean and
    median from its (integer) per-game scores with the unrounded constants lands within 0.5 of the reported
    integers, i.e. rounds to them, for all six methods.

    The rounded rows of that file are exactly ``round()`` (round half to even) of the constants below, e.g.
    Breakout human 30.5 -> 30 and Krull human 2665.5 -> 2666, which confirms that they come from the same
    source.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "ATARI_100K_ENV_IDS",
    "ATARI_100K_GAMES",
    "HUMAN_SCORES",
    "RANDOM_SCORES",
    "Baseline",
    "PUBLISHED_AGGREGATES",
    "PublishedScore",
    "atari_game",
    "baselines",
    "env_id",
    "game_from_env_id",
    "human_normalized_percent",
    "human_normalized_score",
    "human_normalized_scores",
    "published_scores",
]

ATARI_100K_GAMES: tuple[str, ...] = (
    "Alien",
    "Amidar",
    "Assault",
    "Asterix",
    "BankHeist",
    "BattleZone",
    "Boxing",
    "Breakout",
    "ChopperCommand",
    "CrazyClimber",
    "DemonAttack",
    "Freeway",
    "Frostbite",
    "Gopher",
    "Hero",
    "Jamesbond",
    "Kangaroo",
    "Krull",
    "KungFuMaster",
    "MsPacman",
    "Pong",
    "PrivateEye",
    "Qbert",
    "RoadRunner",
    "Seaquest",
    "UpNDown",
)
"""The 26 Atari 100k games, in the order of the reference's ``atari_performance.csv`` (alphabetical). Names match
the ALE v5 ids."""

ATARI_100K_ENV_IDS: Mapping[str, str] = MappingProxyType({g: f"ALE/{g}-v5" for g in ATARI_100K_GAMES})
"""Game name -> Gymnasium ALE v5 id (``"Pong"`` -> ``"ALE/Pong-v5"``)."""

RANDOM_SCORES: Mapping[str, float] = MappingProxyType(
    {
        "Alien": 227.8,
        "Amidar": 5.8,
        "Assault": 222.4,
        "Asterix": 210.0,
        "BankHeist": 14.2,
        "BattleZone": 2360.0,
        "Boxing": 0.1,
        "Breakout": 1.7,
        "ChopperCommand": 811.0,
        "CrazyClimber": 10780.5,
        "DemonAttack": 152.1,
        "Freeway": 0.0,
        "Frostbite": 65.2,
        "Gopher": 257.6,
        "Hero": 1027.0,
        "Jamesbond": 29.0,
        "Kangaroo": 52.0,
        "Krull": 1598.0,
        "KungFuMaster": 258.5,
        "MsPacman": 307.3,
        "Pong": -20.7,
        "PrivateEye": 24.9,
        "Qbert": 163.9,
        "RoadRunner": 11.5,
        "Seaquest": 68.4,
        "UpNDown": 533.4,
    }
)
"""Uniform-random agent score per game (unrounded; see the module docstring for the sources)."""

HUMAN_SCORES: Mapping[str, float] = MappingProxyType(
    {
        "Alien": 7127.7,
        "Amidar": 1719.5,
        "Assault": 742.0,
        "Asterix": 8503.3,
        "BankHeist": 753.1,
        "BattleZone": 37187.5,
        "Boxing": 12.1,
        "Breakout": 30.5,
        "ChopperCommand": 7387.8,
        "CrazyClimber": 35829.4,
        "DemonAttack": 1971.0,
        "Freeway": 29.6,
        "Frostbite": 4334.7,
        "Gopher": 2412.5,
        "Hero": 30826.4,
        "Jamesbond": 302.8,
        "Kangaroo": 3035.0,
        "Krull": 2665.5,
        "KungFuMaster": 22736.3,
        "MsPacman": 6951.6,
        "Pong": 14.6,
        "PrivateEye": 69571.3,
        "Qbert": 13455.0,
        "RoadRunner": 7845.0,
        "Seaquest": 42054.7,
        "UpNDown": 11693.2,
    }
)
"""Professional human tester score per game (unrounded; see the module docstring for the sources)."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, str] = {_key(g): g for g in ATARI_100K_GAMES}
# "ALE/Pong-v5", "Pong-v5", "PongNoFrameskip-v4", "PongDeterministic-v4", "ale/pong", "Pong".
_ID_RE = re.compile(r"^(?:ALE/)?(?P<name>[A-Za-z0-9_ ]+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$", re.IGNORECASE)


def atari_game(env_id: str) -> str | None:
    """The Atari 100k game of ``env_id``, or ``None`` for anything else (CartPole, other ALE games).

    Accepts ALE v5 ids (``"ALE/Pong-v5"``), older Gym ids (``"PongNoFrameskip-v4"``) and bare names
    (``"Pong"``, ``"pong"``, ``"ms_pacman"``); matching ignores case, ``_``, ``-`` and spaces.
    """
    m = _ID_RE.match(env_id.strip())
    return _BY_KEY.get(_key(m.group("name"))) if m else None


def game_from_env_id(env_id: str) -> str:
    """Like :func:`atari_game` but raises ``ValueError`` when ``env_id`` is not one of the 26 games."""
    game = atari_game(env_id)
    if game is None:
        raise ValueError(
            f"{env_id!r} is not an Atari 100k game; expected one of {', '.join(ATARI_100K_GAMES)} "
            "(as a name or an id such as 'ALE/Pong-v5')"
        )
    return game


def env_id(game: str) -> str:
    """The ALE v5 id of an Atari 100k game given by name or id (``"pong"`` -> ``"ALE/Pong-v5"``)."""
    return ATARI_100K_ENV_IDS[game_from_env_id(game)]


@overload
def human_normalized_score(game: str, score: float) -> float: ...
@overload
def human_normalized_score(game: str, score: npt.ArrayLike) -> float | np.ndarray: ...
def human_normalized_score(game: str, score: npt.ArrayLike) -> float | np.ndarray:
    """Human-normalised score as a **fraction**: ``(score - random) / (human - random)``.

    ``game`` is a name or env id (:func:`game_from_env_id`). ``score`` is a number (returns a ``float``) or
    array-like (returns a float64 array of the same shape). 0 is random play, 1 is the human reference.
    """
    g = game_from_env_id(game)
    lo, hi = RANDOM_SCORES[g], HUMAN_SCORES[g]
    out = (np.asarray(score, dtype=np.float64) - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out


@overload
def human_normalized_percent(game: str, score: float) -> float: ...
@overload
def human_normalized_percent(game: str, score: npt.ArrayLike) -> float | np.ndarray: ...
def human_normalized_percent(game: str, score: npt.ArrayLike) -> float | np.ndarray:
    """:func:`human_normalized_score` × 100 (percent; 100 = human)."""
    return human_normalized_score(game, score) * 100.0


def human_normalized_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """Per-game human-normalised fractions of a ``{game or env id: raw score}`` mapping, keyed by game name."""
    return {game_from_env_id(k): float(human_normalized_score(k, v)) for k, v in scores.items()}


@dataclass(frozen=True)
class Baseline:
    """One method row of the reference's ``atari_performance.csv``.

    ``scores`` are raw per-game scores (as published in the reference CSV, rounded to integers), keyed by
    the names of :data:`ATARI_100K_GAMES` in that order. ``sticky_actions`` / ``full_action_space`` are
    ``None`` where the row label does not say. ``reported_mean`` / ``reported_median`` are the method's
    human-normalised mean / median **in percent** as given in the file, not recomputed.
    """

    method: str
    label: str
    frames: int
    sticky_actions: bool | None
    full_action_space: bool | None
    scores: Mapping[str, float]
    reported_mean: float
    reported_median: float

    def human_normalized(self) -> dict[str, float]:
        """Per-game human-normalised fractions computed with the unrounded constants."""
        return human_normalized_scores(self.scores)


_BASELINES_RESOURCE = ("resources", "baselines.csv")


def _flag(text: str) -> bool | None:
    text = text.strip().lower()
    if not text:
        return None
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"bad boolean {text!r} in {'/'.join(_BASELINES_RESOURCE)}")


@functools.cache
def _load_baselines() -> dict[str, Baseline]:
    text = resources.files("drama").joinpath(*_BASELINES_RESOURCE).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    missing = set(ATARI_100K_GAMES) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{'/'.join(_BASELINES_RESOURCE)} lacks columns for {sorted(missing)}")
    out: dict[str, Baseline] = {}
    for row in reader:
        out[row["method"]] = Baseline(
            method=row["method"],
            label=row["label"],
            frames=int(row["frames"]),
            sticky_actions=_flag(row["sticky_actions"]),
            full_action_space=_flag(row["full_action_space"]),
            scores=MappingProxyType({g: float(row[g]) for g in ATARI_100K_GAMES}),
            reported_mean=float(row["reported_mean"]),
            reported_median=float(row["reported_median"]),
        )
    return out


def baselines() -> dict[str, Baseline]:
    """Published Atari 100k baselines of the reference's ``atari_performance.csv``, keyed by method.

    Methods, in file order: ``PPO``, ``SimPLe``, ``SPR``, ``TWM``, ``IRIS``, ``DreamerV3``. Returns a new
    dict each call (the :class:`Baseline` values are immutable and shared).
    """
    return dict(_load_baselines())


# ---------------------------------------------------------------------- published per-game scores, with sources
_PUBLISHED_RESOURCE = ("resources", "published_scores.csv")


@dataclass(frozen=True)
class PublishedScore:
    """One method's published Atari 100k score of one game, and where it comes from.

    ``score`` is the published per-game value (mean over seeds); ``seeds`` the per-seed scores where the source
    publishes them (None for a seed the published mean leaves out), else empty; ``source`` names the file (and
    commit) or page the value was read from; ``note`` says how it was obtained and what is uncertain (a
    third-party copy, a disagreement between sources, a single-seed value).
    """

    method: str
    game: str
    score: float
    seeds: tuple[float | None, ...]
    source: str
    note: str


PUBLISHED_AGGREGATES: Mapping[str, tuple[float, float, str]] = MappingProxyType({
    "DRAMA": (105.0, 27.0, "human-normalised mean / median in %, stated by the first author in "
                           "https://github.com/realwenlongwang/Drama/issues/2 (2025-02-26), which also corrects "
                           "CrazyClimber to 83,931 and KungFuMaster to 23,920"),
})
"""Aggregates a method's authors state, in percent: method -> (mean, median, source)."""


@functools.cache
def _load_published() -> dict[str, dict[str, PublishedScore]]:
    text = resources.files("drama").joinpath(*_PUBLISHED_RESOURCE).read_text(encoding="utf-8")
    out: dict[str, dict[str, PublishedScore]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        seeds = tuple(None if v == "NA" else float(v) for v in row["per_seed_scores"].split(";") if v)
        score = PublishedScore(row["method"], game_from_env_id(row["game"]), float(row["score"]), seeds,
                               row["source"], row["note"])
        out.setdefault(score.method, {})[score.game] = score
    return out


def published_scores() -> dict[str, dict[str, PublishedScore]]:
    """Published per-game scores of DRAMA, STORM, DIAMOND and DreamerV3 with their sources: method -> game ->
    :class:`PublishedScore` (``drama/resources/published_scores.csv``; docs/published_scores.md tells where each
    method's numbers come from and what is uncertain).

    Methods: ``DRAMA`` (the paper's DramaXS table; a third-party copy that reproduces the authors' stated
    aggregates, :data:`PUBLISHED_AGGREGATES`), ``DRAMA_issue6_other_batch`` (4 games of a different batch the
    author posted, not the paper's), ``STORM`` and ``DIAMOND`` (the authors' per-seed files), ``DreamerV3`` (the
    current table, which DRAMA compares against; training-episode returns) and ``DreamerV3_v1_2023`` (the first
    table, which STORM and DIAMOND compare against).
    """
    return {method: dict(games) for method, games in _load_published().items()}
