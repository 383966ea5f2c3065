"""A rich progress bar for long runs: env steps, steps/s, ETA and the last episode return."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """Context manager; a no-op when disabled or when stderr is not a terminal."""

    def __init__(self, total: int, completed: int = 0, enabled: bool = True, description: str = "env steps"):
        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.completed, self.description = total, completed, description
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("last return {task.fields[last_return]}"),
                console=Console(stderr=True), transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed,
                                                 rate="-", last_return="-")
        return self

    def update(self, completed: int, steps_per_second: float | None = None, last_return: float | None = None):
        if self._progress is None:
            return
        fields = {}
        if steps_per_second is not None:
            fields["rate"] = f"{steps_per_second:.1f}"
        if last_return is not None:
            fields["last_return"] = f"{last_return:.1f}"
        self._progress.update(self._task, completed=completed, **fields)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
