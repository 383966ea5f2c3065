"""How a run ends early, as exceptions the command line turns into one line and a documented exit code.

Exit codes of ``drama``: 0 done; 2 a usage or configuration error (``drama.config.ConfigError``, nothing written);
3 the run diverged (:class:`Diverged`); 130 stopped by SIGINT (Ctrl-C) and 143 stopped by SIGTERM
(:class:`RunStopped`, a checkpoint at the current step was saved first).
"""

from __future__ import annotations

import signal

EXIT_USAGE = 2
"""Exit code of a usage or configuration error."""
EXIT_DIVERGED = 3
"""Exit code of a run stopped by :class:`Diverged`."""


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
