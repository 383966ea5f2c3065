"""One trial, inside a Ray worker: ``drama fit`` (``--resume`` when its folder holds a checkpoint), then ``drama
evaluate``, both in one subprocess whose output goes to the trial's log.

A subprocess, not a call: a crashed or killed trial cannot take the Ray worker with it, and every trial starts from
a clean interpreter. One subprocess for both commands, not one each: a Python start-up with torch, Lightning and
MLflow costs ~8 s on a 2-core CPU, which is a third of a small trial. The subprocess runs each command as ``drama``
would (:func:`drama.cli.main`), writing a ``$ drama ...`` line to the log before it, and stops at the first that
fails, with its exit code. It gets SIGTERM when the worker dies (:mod:`drama.processes`): ``drama fit`` then saves a
checkpoint and the next attempt resumes from it.

How a trial fails decides whether Ray runs it again: exit code 2 is a configuration the trial's ``drama`` refused
(:class:`TrialRejected`: running it again cannot help, so it is not retried); anything else (:class:`TrialCrashed`,
or the worker itself lost) is retried up to the sweep's ``retries``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drama.errors import EXIT_USAGE
from drama.processes import terminate_with_parent
from drama.run import RunFolder

COMMAND_MARK = "$ drama "
"""How each command's output starts in a trial's log (the driver reads which command a trial is in from it)."""
THEN = "--then"
"""Between two ``drama`` commands on the command line of a trial's process (no ``drama`` option is spelt so)."""
CHILD = "import sys; from drama.cli import main; from drama.sweep.trial import run_commands; " \
        "sys.exit(run_commands(sys.argv[1:], main))"
"""The program of a trial's process (``python -c CHILD COMMANDS``)."""


class TrialCrashed(RuntimeError):
    """A trial's ``drama fit`` / ``drama evaluate`` ended with an exit code other than 0 and 2 (retried)."""


class TrialRejected(RuntimeError):
    """A trial's ``drama`` refused its configuration, exit code 2 (not retried)."""


def _last_drama_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.startswith("drama:")]
    return lines[-1] if lines else None


def run_commands(argv: list[str], main: Callable[[list[str]], int]) -> int:
    """The trial's subprocess: ``argv`` is ``drama`` commands joined by :data:`THEN`, run in turn through ``main``
    (:func:`drama.cli.main`, handed in by the process's first line: the sweep sits below the CLI), each after its
    ``$ drama ...`` line on stderr (the trial's log), the stdout of all but the last going to the log too; stops at
    the first failure and returns its exit code. The last command's stdout stays on stdout (the trial's
    result)."""
    commands: list[list[str]] = [[]]
    for arg in argv:
        if arg == THEN:
            commands.append([])
        else:
            commands[-1].append(arg)
    *first, last = commands
    for command in first:
        _mark(command)
        with contextlib.redirect_stdout(sys.stderr):  # into the log as it comes (a kill -9 loses none of it)
            code = main(command)
        if code:
            return code
    _mark(last)
    return main(last)


def _mark(command: list[str]) -> None:
    sys.stderr.write(f"{COMMAND_MARK}{' '.join(command)}\n")
    sys.stderr.flush()


def run_logged(commands: list[list[str]], log_path: Path, env: dict[str, str]) -> str:
    """``drama`` COMMANDS one after the other in one fresh Python process (:func:`run_commands`; ``ps`` shows
    ``python -c ... fit ... --then evaluate ...``), its output appended to ``log_path``; the last command's last
    stdout line. A failure raises :class:`TrialRejected` or :class:`TrialCrashed` with the last ``drama:`` line the
    failed command wrote."""
    argv = [arg for i, command in enumerate(commands) for arg in ([THEN] if i else []) + command]
    with open(log_path, "ab") as log:
        proc = subprocess.run([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, stderr=log, env=env,
                              stdin=subprocess.DEVNULL, check=False, preexec_fn=terminate_with_parent())
        log.write(proc.stdout)
    if proc.returncode != 0:
        text = log_path.read_text(errors="replace")
        tail = text[text.rfind(COMMAND_MARK):]
        command = tail[len(COMMAND_MARK):].split(" ", 1)[0].strip()
        message = _last_drama_line(tail) or f"drama {command} exited with code {proc.returncode}"
        raise (TrialRejected if proc.returncode == EXIT_USAGE else TrialCrashed)(message)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def current_command(log_path: Path) -> str | None:
    """``fit`` or ``evaluate``: the command a trial's log started last (read from its last 64 KiB)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
            text = log.read().decode(errors="replace")
    except OSError:
        return None
    at = text.rfind(COMMAND_MARK)
    if at < 0:
        return None
    return text[at + len(COMMAND_MARK):].split(" ", 1)[0].strip() or None


def run_trial(base: str, overrides: list[str], trial_dir: str, episodes: int, log_path: str,
              env: dict[str, str]) -> dict[str, Any]:
    """``drama fit`` (``--resume`` when the folder holds a checkpoint) then ``drama evaluate``; the evaluation's
    summary (its last stdout line, JSON)."""
    if RunFolder(Path(trial_dir)).holds_run():
        fit = ["fit", "--resume", trial_dir, "runtime.progress=false"]
    else:
        fit = ["fit", "--config", base, *overrides]
    evaluate = ["evaluate", trial_dir, "--episodes", str(episodes), "--no-progress"]
    return json.loads(run_logged([fit, evaluate], Path(log_path), {**os.environ, **env}))
