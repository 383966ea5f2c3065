"""One trial, inside a Ray worker: ``drama fit`` (``--resume`` when its folder holds a checkpoint), then ``drama
evaluate``, each as a subprocess whose output goes to the trial's log.

Subprocesses, not calls: a crashed or killed trial cannot take the Ray worker with it, and every trial starts from
a clean interpreter. Each one gets SIGTERM when the worker dies (:mod:`drama.processes`): ``drama fit`` then saves a
checkpoint and the next attempt resumes from it.

How a trial fails decides whether Ray runs it again: exit code 2 is a configuration the trial's ``drama`` refused
(:class:`TrialRejected`: running it again cannot help, so it is not retried); anything else (:class:`TrialCrashed`,
or the worker itself lost) is retried up to the sweep's ``retries``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from drama.errors import EXIT_USAGE
from drama.processes import terminate_with_parent
from drama.run import RunFolder

COMMAND_MARK = "$ drama "
"""How each command's output starts in a trial's log (the driver reads which command a trial is in from it)."""


class TrialCrashed(RuntimeError):
    """A trial's ``drama fit`` / ``drama evaluate`` ended with an exit code other than 0 and 2 (retried)."""


class TrialRejected(RuntimeError):
    """A trial's ``drama`` refused its configuration, exit code 2 (not retried)."""


def _last_drama_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.startswith("drama:")]
    return lines[-1] if lines else None


def run_logged(argv: list[str], log_path: Path, env: dict[str, str]) -> str:
    """Run ``python -m drama ARGV`` appending its output to ``log_path``; its stdout's last line. A failure raises
    :class:`TrialRejected` or :class:`TrialCrashed` with the last ``drama:`` line of its stderr."""
    with open(log_path, "ab") as log:
        log.write(f"{COMMAND_MARK}{' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "drama", *argv], stdout=subprocess.PIPE, stderr=log, env=env,
                              stdin=subprocess.DEVNULL, check=False, preexec_fn=terminate_with_parent())
        log.write(proc.stdout)
    if proc.returncode != 0:
        text = log_path.read_text(errors="replace")
        tail = text[text.rfind(f"{COMMAND_MARK}{argv[0]}"):]
        message = _last_drama_line(tail) or f"drama {argv[0]} exited with code {proc.returncode}"
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
    folder = RunFolder(Path(trial_dir))
    full_env = {**os.environ, **env}
    if folder.holds_run():
        run_logged(["fit", "--resume", trial_dir, "runtime.progress=false"], Path(log_path), full_env)
    else:
        run_logged(["fit", "--config", base, *overrides], Path(log_path), full_env)
    line = run_logged(["evaluate", trial_dir, "--episodes", str(episodes), "--no-progress"], Path(log_path),
                      full_env)
    return json.loads(line)
