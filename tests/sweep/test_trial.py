"""A trial's one process (:mod:`drama.sweep.trial`): its commands run in turn, each after its mark in the log, the
first failure stops it with that command's exit code and one-line error."""

from __future__ import annotations

import os

import pytest

from drama.sweep.trial import COMMAND_MARK, THEN, TrialRejected, current_command, run_commands, run_logged


def test_commands_run_in_turn_after_their_marks_and_only_the_last_ones_stdout_stays_on_stdout(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        print(f"summary of {argv[0]}")
        return 0

    assert run_commands(["fit", "--config", "c.yaml", "x=1", THEN, "evaluate", "run", "--episodes", "1"], main) == 0
    assert seen == [["fit", "--config", "c.yaml", "x=1"], ["evaluate", "run", "--episodes", "1"]]
    out, err = capsys.readouterr()
    assert out == "summary of evaluate\n"
    assert err == (f"{COMMAND_MARK}fit --config c.yaml x=1\nsummary of fit\n"
                   f"{COMMAND_MARK}evaluate run --episodes 1\n")


def test_the_first_failure_stops_the_commands_with_its_exit_code(capsys):
    seen = []

    def main(argv):
        seen.append(argv[0])
        return 3 if argv[0] == "fit" else 0

    assert run_commands(["fit", THEN, "evaluate"], main) == 3
    assert seen == ["fit"] and "evaluate" not in capsys.readouterr().err


def test_a_refused_fit_is_rejected_with_its_one_line_error_and_evaluate_never_runs(tmp_path):
    log = tmp_path / "trial.log"
    with pytest.raises(TrialRejected) as caught:
        run_logged([["fit", "--config", str(tmp_path / "missing.yaml")], ["evaluate", str(tmp_path / "run")]], log,
                   dict(os.environ))
    assert str(caught.value).startswith("drama: error: ") and "missing.yaml" in str(caught.value)
    text = log.read_text()
    assert text.count(COMMAND_MARK) == 1 and current_command(log) == "fit"
