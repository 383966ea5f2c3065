"""``drama report``: evaluation results of several runs as a per-game table, aggregate scores and figures.

Inputs are run directories (their latest evaluation under ``evaluations/``, greedy preferred) or evaluation JSON
files written by ``drama evaluate``. Runs are grouped into methods by backbone (``DRAMA (mamba2)``, ...); the
runs of one method on one game are its seeds.

Outputs (in ``--out``):

* ``report.md``: the per-game table (mean raw return over runs, with the random and human references and the
  baselines of the reference's ``atari_performance.csv`` side by side) and the aggregate table: mean, median and
  IQM of human-normalised scores with stratified-bootstrap 95% confidence intervals (rliable, Agarwal et al.
  2021), the baselines computed on the same games with the same unrounded constants;
* ``scores.csv`` (per game and method) and ``aggregates.csv`` (per method and metric);
* ``scores.json``: per-seed scores in one documented format (:data:`SCORES_FORMAT`): ``{"format", "protocol",
  "scores": {game: {method: [one score per run (seed)]}}}``, where a run's score is the mean return of its
  evaluation episodes and ``protocol`` is the evaluation protocol of the runs (one object, or a list when the runs
  differ). ``--baseline FILE`` reads the same format back as extra methods (their seeds enter the aggregates with
  confidence intervals like ours), so results can be exchanged between groups and papers;
* ``learning_curves.png``: training episode returns from each run's MLflow record, per game;
* ``aggregates.png``: the interval estimates (rliable ``plot_interval_estimates``).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from drama.config import ConfigError
from drama.run import RunFolder
from drama.scores import (
    HUMAN_SCORES,
    PUBLISHED_AGGREGATES,
    RANDOM_SCORES,
    atari_game,
    baselines,
    human_normalized_percent,
    human_normalized_score,
    published_scores,
)

METRICS = ("mean", "median", "iqm")

PUBLISHED = {"DRAMA paper": "DRAMA", "STORM": "STORM", "DIAMOND": "DIAMOND"}
"""Published methods of :func:`drama.scores.published_scores` shown in the report: report name -> method key."""


def published_table() -> dict[str, dict[str, float]]:
    """Report name -> game -> published score of the :data:`PUBLISHED` methods."""
    table = published_scores()
    return {name: {game: entry.score for game, entry in table[key].items()} for name, key in PUBLISHED.items()}


def published_26_game(name: str) -> tuple[float, float, str]:
    """A published method's 26-game human-normalised mean / median in %: as its authors state them where they
    do (:data:`drama.scores.PUBLISHED_AGGREGATES`), else recomputed from its published per-game scores."""
    key = PUBLISHED[name]
    if key in PUBLISHED_AGGREGATES:
        mean, median, _ = PUBLISHED_AGGREGATES[key]
        return mean, median, "stated"
    values = [human_normalized_percent(g, v) for g, v in published_table()[name].items()]
    return float(np.mean(values)), float(np.median(values)), "recomputed"


def _load(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise ConfigError(f"{path}: not a readable evaluation JSON ({type(exc).__name__})") from None
    if not isinstance(result, dict) or "returns" not in result or "env_id" not in result:
        raise ConfigError(f"{path}: not an evaluation result of drama evaluate (no returns / env_id)")
    returns, mean = result["returns"], result.get("mean")
    if not (isinstance(returns, list) and returns and all(_is_number(r) for r in returns) and _is_number(mean)
            and isinstance(result["env_id"], str)):
        raise ConfigError(f"{path}: not an evaluation result of drama evaluate (returns must be a non-empty list of "
                          "numbers, mean a number, env_id a string)")
    result.setdefault("run_dir", str(path.parent.parent))
    result["source"] = str(path)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


SCORES_FORMAT = "drama-scores/1"
"""The ``format`` value of ``scores.json`` (written by ``drama report``, read by ``drama report --baseline``)."""


def scores_document(table: dict[str, dict[str, dict[str, Any]]], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``scores.json`` object of a report: per game and method the per-run scores, and the protocol."""
    protocols = sorted({json.dumps(r["protocol"], sort_keys=True) for r in results if r.get("protocol")})
    protocol: Any = [json.loads(p) for p in protocols]
    return {"format": SCORES_FORMAT,
            "description": "per game and method, one score per run (seed): the mean return of its evaluation "
                           "episodes; protocol: how the episodes were played",
            "protocol": protocol[0] if len(protocol) == 1 else protocol,
            "scores": {game: {method: list(entry["returns"]) for method, entry in sorted(methods.items())}
                       for game, methods in sorted(table.items())}}


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """The per-seed scores of a ``scores.json`` (:data:`SCORES_FORMAT`) as report inputs: one result per seed,
    its method and game as written there (a :class:`ConfigError` naming the file for anything else)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--baseline {path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(document, dict) or document.get("format") != SCORES_FORMAT or \
            not isinstance(document.get("scores"), dict):
        raise ConfigError(f"--baseline {path}: not a scores file of format {SCORES_FORMAT!r} (drama report writes "
                          "one as scores.json)")
    out = []
    for game, methods in document["scores"].items():
        if not isinstance(methods, dict) or not all(
                isinstance(seeds, list) and seeds and all(_is_number(v) for v in seeds) for seeds in methods.values()):
            raise ConfigError(f"--baseline {path}: scores[{game!r}] must map each method to a non-empty list of "
                              "numbers")
        for method, seeds in methods.items():
            for value in seeds:
                out.append({"method": str(method), "game": atari_game(game), "env_id": game, "mean": float(value),
                            "source": str(path), "episodes": None, "policy": "", "checkpoint_step": None,
                            "baseline_file": True})
    return out


def latest_evaluation(run_dir: Path) -> dict[str, Any]:
    """The run's latest evaluation: highest checkpoint step, greedy before sampled, then the newest file."""
    files = sorted(RunFolder(run_dir).evaluations.glob("*.json"))
    if not files:
        raise ConfigError(f"{run_dir}: no evaluation results in {RunFolder(run_dir).evaluations} "
                          f"(run drama evaluate {run_dir} first)")
    results = [_load(f) for f in files]
    return max(results, key=lambda r: (r.get("checkpoint_step", 0), r.get("policy") == "greedy",
                                       Path(r["source"]).stat().st_mtime))


def collect(inputs: list[str | Path]) -> list[dict[str, Any]]:
    """One evaluation result per input (run directory or JSON file), with ``method`` and ``game`` set."""
    if not inputs:
        raise ConfigError("drama report needs at least one run directory or evaluation JSON")
    results = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            result = latest_evaluation(path)
        elif path.is_file():
            result = _load(path)
        else:
            raise ConfigError(f"{path}: no such run directory or evaluation JSON")
        result["method"] = f"DRAMA ({result.get('backbone', 'mamba2')})"
        result["game"] = atari_game(result["env_id"])
        results.append(result)
    return results


def per_game(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{game or env id: {method: {runs, returns (one mean per run), mean, std, human_normalized}}}``."""
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        grouped[(r["game"] or r["env_id"], r["method"])].append(r)
    for (game, method), runs in grouped.items():
        means = [float(r["mean"]) for r in runs]
        table[game][method] = {
            "runs": len(runs), "returns": means, "mean": float(np.mean(means)), "std": float(np.std(means)),
            "human_normalized": (float(np.mean(human_normalized_score(game, means)))
                                 if game in HUMAN_SCORES else None),
        }
    return dict(table)


def aggregates(table: dict[str, dict[str, dict[str, Any]]], reps: int = 2000,
               seed: int = 0) -> dict[str, dict[str, Any]]:
    """Mean, median and IQM of human-normalised scores per method over its Atari 100k games, with stratified-
    bootstrap 95% CIs (rliable); baselines on the union of those games (point estimates)."""
    from rliable import library as rly
    from rliable import metrics

    def aggregate(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(scores), metrics.aggregate_median(scores),
                         metrics.aggregate_iqm(scores)])

    out: dict[str, dict[str, Any]] = {}
    ours: dict[str, np.ndarray] = {}
    covered: set[str] = set()
    by_method: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for game, methods in table.items():
        if game not in HUMAN_SCORES:
            continue
        for method, entry in methods.items():
            by_method[method][game] = list(human_normalized_score(game, entry["returns"]))
    for method, games in by_method.items():
        runs = min(len(v) for v in games.values())  # rliable needs a (runs x games) matrix
        ordered = sorted(games)
        ours[method] = np.array([[games[g][k] for g in ordered] for k in range(runs)])
        out[method] = {"games": ordered, "runs": runs, "dropped_runs": sum(len(v) - runs for v in games.values())}
        covered.update(ordered)
    if ours:
        with warnings.catch_warnings():  # arch: "random_state is deprecated" (rliable 1.2 passes it)
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates(ours, aggregate, reps=reps,
                                                           random_state=np.random.RandomState(seed))
        for method in ours:
            for i, name in enumerate(METRICS):
                out[method][name] = (float(points[method][i]), float(intervals[method][0, i]),
                                     float(intervals[method][1, i]))
    games = sorted(covered)
    for name, scores_by_game in published_table().items() if games else ():
        scores = np.array([[human_normalized_score(g, scores_by_game[g]) for g in games]])
        values = aggregate(scores)
        mean_26, median_26, how = published_26_game(name)
        out[name] = {"games": games, "runs": 1, "dropped_runs": 0, "baseline": True, "reported_mean_26": mean_26,
                     "reported_median_26": median_26, "reported_how": how,
                     **{m: (float(values[i]), None, None) for i, m in enumerate(METRICS)}}
    for name, baseline in baselines().items() if games else ():
        normalized = baseline.human_normalized()
        scores = np.array([[normalized[g] for g in games]])
        values = aggregate(scores)
        out[name] = {"games": games, "runs": 1, "dropped_runs": 0, "baseline": True,
                     "reported_mean_26": baseline.reported_mean, "reported_median_26": baseline.reported_median,
                     **{m: (float(values[i]), None, None) for i, m in enumerate(METRICS)}}
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _fmt_ci(entry: tuple[float, float | None, float | None]) -> str:
    point, low, high = entry
    text = f"{100 * point:.1f}"
    return text if low is None else f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def markdown(table: dict, aggs: dict, results: list[dict[str, Any]], figures: list[Path]) -> str:
    methods = sorted({m for entries in table.values() for m in entries})
    base = baselines()
    lines = ["# drama report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(results)} evaluation(s).",
             "", "## Per-game scores", "",
             "Mean raw return over runs (number of runs) / human-normalised score in %. Random and human "
             "references are the standard unrounded scores. 'DRAMA paper' is the paper's published score (sources: "
             "docs/published_scores.md) and the ratio columns divide our mean by it; the other baselines are the "
             "rows of the reference's atari_performance.csv.", ""]
    paper = published_table()["DRAMA paper"]
    header = ["Game", "Random", "Human", *methods, "DRAMA paper", *[f"{m} / DRAMA paper" for m in methods], *base]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for game in sorted(table):
        atari = game in HUMAN_SCORES
        row = [game, _fmt(RANDOM_SCORES.get(game)), _fmt(HUMAN_SCORES.get(game))]
        for method in methods:
            entry = table[game].get(method)
            if entry is None:
                row.append("")
                continue
            hns = "" if entry["human_normalized"] is None else f" / {100 * entry['human_normalized']:.1f}%"
            row.append(f"{_fmt(entry['mean'])} ({entry['runs']}){hns}")
        row.append(_fmt(paper[game], 0) if atari else "")
        for method in methods:
            entry = table[game].get(method)
            ratio = entry["mean"] / paper[game] if entry is not None and atari and paper[game] else None
            row.append("" if ratio is None else f"{ratio:.2f}")
        row += [_fmt(b.scores[game], 0) if atari else "" for b in base.values()]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Human-normalised aggregates", ""]
    if not aggs:
        lines.append("No Atari 100k game among the inputs: no human-normalised aggregates.")
    else:
        lines += ["Percent of human; 95% stratified-bootstrap confidence intervals (rliable) for our runs. Baselines "
                  "are computed on the same games with the same constants (single published score per game, no CI); "
                  "their published 26-game mean / median is in the last column.", "",
                  "| Method | Games | Runs | Mean | Median | IQM | Published 26-game mean / median |",
                  "|---|---|---|---|---|---|---|"]
        for method, entry in aggs.items():
            published = (f"{entry['reported_mean_26']:.0f} / {entry['reported_median_26']:.0f}"
                         + (" (recomputed)" if entry.get("reported_how") == "recomputed" else "")
                         if entry.get("baseline") else "")
            lines.append(f"| {method} | {len(entry['games'])} | {entry['runs']} | {_fmt_ci(entry['mean'])} | "
                         f"{_fmt_ci(entry['median'])} | {_fmt_ci(entry['iqm'])} | {published} |")
        dropped = {m: e["dropped_runs"] for m, e in aggs.items() if e.get("dropped_runs")}
        if dropped:
            lines += ["", f"Runs left out to make the runs x games matrix rectangular: {dropped}."]
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += ["", "## Inputs", ""] + [f"- `{r['source']}`: {r['env_id']}, {r['method']}, checkpoint step "
                                      f"{r.get('checkpoint_step')}, {r['episodes']} {r.get('policy', '')} episodes"
                                      for r in results if not r.get("baseline_file")]
    lines += [f"- `{source}`: scores file (--baseline)"
              for source in sorted({r["source"] for r in results if r.get("baseline_file")})]
    return "\n".join(lines) + "\n"


def write_csvs(table: dict, aggs: dict, out: Path) -> tuple[Path, Path]:
    scores_path, aggs_path = out / "scores.csv", out / "aggregates.csv"
    with scores_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["game", "method", "runs", "mean_return", "std_over_runs", "human_normalized"])
        for game in sorted(table):
            for method, e in sorted(table[game].items()):
                writer.writerow([game, method, e["runs"], e["mean"], e["std"], e["human_normalized"]])
            published = {name: scores[game] for name, scores in published_table().items()} \
                if game in HUMAN_SCORES else {}
            published.update({name: b.scores[game] for name, b in baselines().items()} if game in HUMAN_SCORES
                             else {})
            for name, score in published.items():
                writer.writerow([game, name, 1, score, 0.0, human_normalized_score(game, score)])
    with aggs_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "games", "runs", "metric", "value", "ci_low", "ci_high"])
        for method, e in aggs.items():
            for name in METRICS:
                writer.writerow([method, len(e["games"]), e["runs"], name, *e[name]])
    return scores_path, aggs_path


def _episode_returns(run_dir: Path) -> tuple[list[int], list[float]] | None:
    from drama.metrics import EPISODE_RETURN
    from drama.tracking import Tracker

    tracker = Tracker.open(RunFolder(run_dir))
    return None if tracker is None else tracker.metric_history(EPISODE_RETURN)


FEW_EPISODES = 10
"""Below this many episodes a learning curve is drawn as markers joined by a line (no smoothing)."""


def rolling_mean(values: list[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start), one value per input value."""
    values = np.asarray(values, dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def draw_curve(ax: Any, steps: list[int], values: list[float], window: int = 10, label: str | None = None,
               few: int = FEW_EPISODES) -> Any:
    """One run's episode returns on ``ax``: with fewer than ``few`` episodes, every point as a marker joined by a
    line; otherwise the rolling mean over ``window`` episodes as a line over the raw points, drawn faint.
    Returns the labelled line (matplotlib ``Line2D``)."""
    if len(values) < few:
        line, = ax.plot(steps, values, marker="o", markersize=6, linewidth=1.5, label=label)
        return line
    line, = ax.plot(steps, rolling_mean(values, window), linewidth=2, label=label)
    ax.plot(steps, values, linestyle="none", marker="o", markersize=3, alpha=0.25, color=line.get_color())
    return line


def learning_curves_figure(results: list[dict[str, Any]], window: int = 10) -> Any:
    """The figure of :func:`plot_learning_curves` (a matplotlib ``Figure``, one panel per game)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({r["game"] or r["env_id"] for r in results})
    cols = min(4, len(games))
    rows = -(-len(games) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, game in zip(axes.flat, games, strict=False):
        last = 0
        for r in (r for r in results if (r["game"] or r["env_id"]) == game):
            curve = _episode_returns(Path(r["run_dir"]))
            if not curve or not curve[0]:
                continue
            steps, values = curve
            n = len(values)
            smoothing = "" if n < FEW_EPISODES else f", mean of {min(window, n)}"
            draw_curve(ax, steps, values, window,
                       label=f"{Path(r['run_dir']).name} ({n} episode{'s' * (n != 1)}{smoothing})")
            last = max(last, max(steps))
        if last:
            ax.set_xlim(0, last * 1.05)
            ax.legend(fontsize=7)
        else:
            ax.set_xlim(left=0)
            ax.text(0.5, 0.5, "no finished episodes recorded", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
        ax.set_title(game)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episode return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(games):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_learning_curves(results: list[dict[str, Any]], path: Path, window: int = 10) -> Path:
    """Training episode returns per game, one curve per run (:func:`draw_curve`), the env-step axis from 0."""
    fig = learning_curves_figure(results, window)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_aggregates(aggs: dict[str, dict[str, Any]], path: Path) -> Path:
    """rliable interval-estimate plot of mean, median and IQM (fractions of human) per method, each point estimate
    also drawn as a dot (baselines, which have no interval, in grey) and the human level as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    methods = list(aggs)
    points = {m: np.array([e[k][0] for k in METRICS]) for m, e in aggs.items()}
    intervals = {m: np.array([[e[k][1] if e[k][1] is not None else e[k][0] for k in METRICS],
                              [e[k][2] if e[k][2] is not None else e[k][0] for k in METRICS]])
                 for m, e in aggs.items()}
    palette = plt.get_cmap("tab10").colors
    ours = [m for m in methods if not aggs[m].get("baseline")]
    colors = {m: palette[ours.index(m) % len(palette)] if m in ours else (0.6, 0.6, 0.6) for m in methods}
    fig, axes = plot_utils.plot_interval_estimates(points, intervals, metric_names=["Mean", "Median", "IQM"],
                                                   algorithms=methods, colors=colors,
                                                   xlabel="Human-normalised score (1 = human)")
    values = np.concatenate([np.concatenate([points[m], intervals[m].ravel()]) for m in methods] + [[0.0, 1.0]])
    low, high = float(values.min()), float(values.max())
    margin = 0.05 * (high - low or 1.0)
    for i, ax in enumerate(np.atleast_1d(axes)):
        for y, m in enumerate(methods):
            ax.plot(points[m][i], y, marker="o", markersize=7 if m in ours else 5, color=colors[m], zorder=3)
        ax.axvline(1.0, linestyle="--", linewidth=1, color="0.4", zorder=1)
        ax.set_xlim(low - margin, high + margin)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def report(inputs: list[str | Path], out: str | Path = "reports", reps: int = 2000, seed: int = 0,
           baselines_files: list[str | Path] = ()) -> dict[str, str]:
    """Write the report files (module docstring) into ``out``; returns their paths. ``baselines_files``:
    ``scores.json`` files whose methods join the tables as extra baselines."""
    results = collect(inputs)
    extra = [row for path in baselines_files for row in read_scores(path)]
    ours = {r["method"] for r in results}
    for row in extra:  # a baseline never merges into a method of the inputs: it is named after its file there
        if row["method"] in ours:
            row["method"] = f"{row['method']} [{row['source']}]"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = per_game(results + extra)
    aggs = aggregates(table, reps=reps, seed=seed)
    figures = [plot_learning_curves(results, out / "learning_curves.png")]
    if aggs:
        figures.append(plot_aggregates(aggs, out / "aggregates.png"))
    scores_csv, aggs_csv = write_csvs(table, aggs, out)
    scores_json = out / "scores.json"
    scores_json.write_text(json.dumps(scores_document(per_game(results), results), indent=2) + "\n")
    md = out / "report.md"
    md.write_text(markdown(table, aggs, results + extra, figures))
    paths = {"markdown": md, "scores_csv": scores_csv, "aggregates_csv": aggs_csv, "scores_json": scores_json,
             **{f"{p.stem}_png": p for p in figures}}
    return {k: str(v) for k, v in paths.items()}
