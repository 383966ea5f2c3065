"""How a run ends early, as exceptions the command line turns into one line and a documented exit code.

Exit codes of ``drama``: 0 done; 2 a usage or configuration error (``drama.config.ConfigError``, nothing written);
3 the run diverged (:class:`Diverged`); 4 the machine refused a write (:data:`WRITE_ERRNOS`: disk full, quota,
permission, read-only file system; the last good checkpoint is intact); 130 stopped by SIGINT (Ctrl-C) and 143
stopped by SIGTERM (:class:`RunStopped`, a checkpoint at the current step was saved first).
"""

from __future__ import annotations

import errno
import os
import signal

EXIT_USAGE = 2
"""Exit code of a usage or configuration error."""
EXIT_DIVERGED = 3
"""Exit code of a run stopped by :class:`Diverged`."""
EXIT_WRITE_REFUSED = 4
"""Exit code when the machine refused a write (an ``OSError`` with one of :data:`WRITE_ERRNOS`)."""
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

    def __init__(self, signum: int, step: int, run_dir: str) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        self.result: object = None
        """what ``drama fit`` reached (its ``FitResult``), set on the way out, for the JSON summary."""
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at env step {step}, checkpoint saved; continue with: "
                         f"drama fit --resume {run_dir}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Diverged(Exception):
    """A loss, gradient norm or parameter became non-finite; the last good checkpoint was kept."""

    exit_code = EXIT_DIVERGED
