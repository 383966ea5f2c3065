"""How a run ends early, as exceptions the command line turns into one line and a documented exit code.

Exit codes of ``drama``: 0 done; 2 a usage or configuration error (``drama.config.ConfigError``, nothing written);
3 the run diverged (:class:`Diverged`); 4 the machine refused a write (:data:`WRITE_ERRNOS`: disk full, quota,
permission, read-only file system; the last good checkpoint is intact); 5 a checkpoint file is damaged or not a
drama checkpoint (:class:`CheckpointError`; a path with no file at all is a usage error); 130 stopped by SIGINT and 143
stopped by SIGTERM (:class:`RunStopped`: a checkpoint at the current step was saved first; or, during the setup
before the first env step, :class:`SetupStopped`: nothing was written beyond the config and the run's record).
"""

from __future__ import annotations

import errno
import os
import signal
import threading

EXIT_USAGE = 2
"""Exit code of a usage or configuration error."""
EXIT_DIVERGED = 3
"""Exit code of a run stopped by :class:`Diverged`."""
EXIT_WRITE_REFUSED = 4
"""Exit code when the machine refused a write (an ``OSError`` with one of :data:`WRITE_ERRNOS`)."""
EXIT_CHECKPOINT = 5
"""Exit code when a checkpoint file is damaged or not a drama checkpoint (:class:`CheckpointError`)."""
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
"""The errors of a write that users meet and can fix: disk full, quota exceeded, no permission, read-only."""


def write_refused(exc: OSError) -> str:
    """One line for a refused write: what the system said, the path, and what drama was writing (the exception's
    notes, added where the write happened)."""
    what = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    where = f" writing {exc.filename}" if exc.filename else ""
    notes = "; ".join(getattr(exc, "__notes__", []))
    return f"{what[:1].lower()}{what[1:]}{where}" + (f" ({notes})" if notes else "")


class RunStopped(Exception):
    """The run stopped on request (SIGINT / SIGTERM) between two env steps, after saving a checkpoint."""

    def __init__(self, signum: int, step: int | None, run_dir: str, message: str | None = None) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        self.result: object = None
        """what ``drama fit`` reached (its ``FitResult``), set on the way out, for the JSON summary."""
        name = signal.Signals(signum).name
        super().__init__(message or f"stopped by {name} at env step {step}, checkpoint saved; continue with: "
                                    f"drama fit --resume {run_dir}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SetupStopped(RunStopped):
    """SIGINT / SIGTERM arrived while ``drama fit`` was setting up (building the env and models, loading the
    checkpoint, opening the run's record), before the first env step: nothing was trained, no checkpoint changed."""

    def __init__(self, signum: int, run_dir: str, resume: bool) -> None:
        name = signal.Signals(signum).name
        super().__init__(signum, None, run_dir, (
            f"stopped by {name} during setup, before training resumed; the checkpoints are unchanged; continue with: "
            f"drama fit --resume {run_dir}" if resume else
            f"stopped by {name} during setup, before the first env step; nothing was trained and {run_dir} holds no "
            "checkpoint: run the same drama fit again (it may reuse the folder)"))


class StopOnSignal:
    """Turns SIGINT (Ctrl-C) and SIGTERM (what a scheduler sends before preemption) into a request, recorded in
    :attr:`signum`, that ``drama fit`` honours at a safe point: between two env steps of the loop (which then saves
    a checkpoint: :class:`RunStopped`) or between two setup phases (:meth:`during_setup`). A second signal stops
    the process at once (the signal's default action). Inactive outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._depth = 0

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum

    def during_setup(self, run_dir: str, resume: bool) -> None:
        """Raise :class:`SetupStopped` if a signal arrived (call it between the phases of the setup)."""
        if self.signum is not None:
            raise SetupStopped(self.signum, run_dir, resume)

    def __enter__(self) -> StopOnSignal:
        """Arm (re-entrant: the setup of ``drama fit`` arms it, the loop enters it again)."""
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous = {}


class CheckpointError(Exception):
    """A checkpoint file is damaged, truncated or not one of ours; the message (one line) names the file. Raised by
    :mod:`drama.checkpoint` (which also raises its subclass ``NoCheckpoint``, a usage error, for a path with no
    file)."""

    exit_code = EXIT_CHECKPOINT


class Diverged(Exception):
    """A loss, gradient norm or parameter became non-finite; the last good checkpoint was kept."""

    exit_code = EXIT_DIVERGED
