"""`drama report`: per-game table, rliable aggregates against the shipped baselines, CSVs and figures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from drama.cli import main
from drama.report import aggregates, collect, draw_curve, learning_curves_figure, per_game, rolling_mean

pytestmark = pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def two_runs(finished_debug_run, tmp_path_factory):
    """The finished run and a copy standing in for a second seed with a different evaluation."""
    second = tmp_path_factory.mktemp("seed2") / "finished-seed2"
    shutil.copytree(finished_debug_run, second)
    path = sorted((second / "evaluations").glob("*greedy*n2.json"))[-1]
    result = json.loads(path.read_text())
    result.update(returns=[-15.0, -13.0], mean=-14.0, run_dir=str(second))
    path.write_text(json.dumps(result))
    return [finished_debug_run, second]


def test_report_on_two_runs_writes_markdown_csv_and_pngs(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_runs), "--out", str(out), "--reps", "200"]) == 0
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(paths) == {"markdown", "scores_csv", "aggregates_csv", "scores_json", "learning_curves_png",
                          "aggregates_png"}
    for path in paths.values():
        assert (out / path.split("/")[-1]).stat().st_size > 0
    for png in ("learning_curves.png", "aggregates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| Pong | -20.7 | 14.6 | " in md and "DRAMA (mamba2)" in md and "IRIS" in md and "(2)" in md
    rows = list(csv.DictReader((out / "scores.csv").open()))
    ours = [r for r in rows if r["method"] == "DRAMA (mamba2)"]
    assert len(ours) == 1 and ours[0]["game"] == "Pong" and ours[0]["runs"] == "2"
    iris = next(r for r in rows if r["method"] == "IRIS")
    assert float(iris["mean_return"]) == 15 and float(iris["human_normalized"]) == pytest.approx(35.7 / 35.3)
    aggs = list(csv.DictReader((out / "aggregates.csv").open()))
    assert {r["metric"] for r in aggs} == {"mean", "median", "iqm"} and len(aggs) == 3 * 10
    # DRAMA's published score per game next to ours, the ratio, and its stated 26-game aggregates
    header = next(line for line in md.splitlines() if line.startswith("| Game |"))
    pong = next(line for line in md.splitlines() if line.startswith("| Pong |"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in pong.split("|")], strict=True))
    ours_mean = float(ours[0]["mean_return"])
    assert cells["DRAMA paper"] == "15" and float(cells["DRAMA (mamba2) / DRAMA paper"]) == round(ours_mean / 15, 2)
    assert "| DRAMA paper | 1 | 1 | " in md and "| 105 / 27 |" in md and "STORM" in md and "DIAMOND" in md
    assert float(next(r for r in rows if r["method"] == "DRAMA paper")["mean_return"]) == 15


def test_aggregates_hand_computed(two_runs):
    results = collect(two_runs)
    table = per_game(results)
    entry = table["Pong"]["DRAMA (mamba2)"]
    first = json.loads(sorted((two_runs[0] / "evaluations").glob("*greedy*n2.json"))[-1].read_text())["mean"]
    assert sorted(entry["returns"]) == sorted([first, -14.0])
    expected = ((first + 20.7) / 35.3 + (-14.0 + 20.7) / 35.3) / 2
    assert entry["human_normalized"] == pytest.approx(expected)
    aggs = aggregates(table, reps=200)
    point, low, high = aggs["DRAMA (mamba2)"]["mean"]
    assert point == pytest.approx(expected) and low <= point <= high
    assert aggs["TWM"]["mean"][0] == pytest.approx((19 + 20.7) / 35.3)  # baseline on the same game
    assert aggs["TWM"]["reported_mean_26"] == 96


def test_report_rejects_inputs_without_evaluations(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _visible_points(line) -> bool:
    return (line.get_visible() and line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0
            and (line.get_alpha() is None or line.get_alpha() > 0.5))


@pytest.mark.parametrize("n", [1, 2, 9])
def test_a_curve_of_few_episodes_draws_every_point_as_a_marker(n):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    line = draw_curve(ax, list(range(50, 50 * (n + 1), 50)), [float(-21 + k) for k in range(n)], label="run")
    assert _visible_points(line) and len(line.get_xdata()) == n and ax.get_lines() == [line]
    plt.close(fig)


def test_a_curve_of_many_episodes_is_a_rolling_mean_over_faint_raw_points():
    import matplotlib.pyplot as plt

    values = [float(v) for v in np.random.default_rng(0).normal(size=30)]
    fig, ax = plt.subplots()
    line = draw_curve(ax, list(range(1, 31)), values, window=10, label="run")
    smooth, raw = ax.get_lines()
    assert smooth is line and smooth.get_marker() in ("None", "", None) and smooth.get_label() == "run"
    np.testing.assert_allclose(smooth.get_ydata(), rolling_mean(values, 10))
    assert raw.get_ydata().tolist() == values and raw.get_alpha() == pytest.approx(0.25)
    assert raw.get_linestyle() == "None" and raw.get_marker() not in ("None", "", None)
    assert rolling_mean([1.0, 2.0, 3.0, 4.0], 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    plt.close(fig)


def test_a_run_with_one_finished_episode_draws_a_visible_point_on_an_axis_from_0(finished_debug_run):
    import matplotlib.pyplot as plt

    fig = learning_curves_figure(collect([finished_debug_run]))
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 1 and len(lines[0].get_xdata()) == 1 and _visible_points(lines[0])
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > lines[0].get_xdata()[0] > 0
    assert ax.get_xlabel() == "env steps" and "1 episode" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_scores_json_round_trips_through_baseline(two_runs, tmp_path, capsys):
    from drama.report import SCORES_FORMAT, read_scores

    out = tmp_path / "first"
    assert main(["report", *map(str, two_runs), "--out", str(out), "--reps", "50"]) == 0
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    document = json.loads(Path(paths["scores_json"]).read_text())
    assert document["format"] == SCORES_FORMAT and document["protocol"]["env_id"] == "ALE/Pong-v5"
    seeds = document["scores"]["Pong"]["DRAMA (mamba2)"]
    assert len(seeds) == 2 and -14.0 in seeds
    rows = read_scores(paths["scores_json"])  # read back: one row per seed, as written
    assert sorted(r["mean"] for r in rows) == sorted(seeds) and {r["method"] for r in rows} == {"DRAMA (mamba2)"}
    # the same file as a baseline of a report on one run: its two seeds enter as their own method
    renamed = tmp_path / "theirs.json"
    renamed.write_text(json.dumps({**document, "scores": {"Pong": {"Theirs": seeds}}}))
    again = tmp_path / "second"
    assert main(["report", str(two_runs[0]), "--baseline", str(renamed), "--baseline", paths["scores_json"],
                 "--out", str(again), "--reps", "50"]) == 0
    capsys.readouterr()
    aggs = {(r["method"], r["metric"]): r for r in csv.DictReader((again / "aggregates.csv").open())}
    assert aggs[("Theirs", "mean")]["runs"] == "2" and aggs[("DRAMA (mamba2)", "mean")]["runs"] == "1"
    assert any(method.startswith("DRAMA (mamba2) [") for method, _ in aggs)  # a same-named baseline stays apart
    assert "| Theirs |" in (again / "report.md").read_text()


@pytest.mark.parametrize("content", ["not json", '{"format": "other", "scores": {}}',
                                     '{"format": "drama-scores/1", "scores": {"Pong": {"X": []}}}'])
def test_a_bad_baseline_file_is_one_line_and_writes_nothing(two_runs, tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "out"
    assert main(["report", str(two_runs[0]), "--baseline", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"drama: error: --baseline {bad}") and err.count("\n") == 1 and not out.exists()
