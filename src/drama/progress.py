"""A rich progress bar for long runs: env steps, steps/s, ETA and the last episode return."""

from __future__ import annotations

import datetime
import sys
import time

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
    """Context manager: a rich bar on a terminal, plain one-line updates on stderr otherwise (logs, CI), nothing
    when disabled."""

    def __init__(self, total: int, completed: int = 0, enabled: bool = True, description: str = "env steps",
                 unit: str = "steps"):
        self.enabled = enabled
        self.rich = enabled and sys.stderr.isatty()
        self.total, self.completed, self.description, self.unit = total, completed, description, unit
        self._progress: Progress | None = None
        self._task = None
        self._start, self._start_step = time.perf_counter(), completed

    def __enter__(self) -> ProgressBar:
        if self.rich:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{{task.fields[rate]}} {self.unit}/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("last return {task.fields[last_return]}"),
                console=Console(stderr=True), transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed,
                                                 rate="-", last_return="-")
        return self

    def update(self, completed: int, steps_per_second: float | None = None, last_return: float | None = None):
        if self.enabled and self._progress is None:
            elapsed = time.perf_counter() - self._start
            # the latest rate (updates make steps slower than the warm-up), else the average so far
            rate = steps_per_second or (completed - self._start_step) / max(elapsed, 1e-9)
            eta = (self.total - completed) / rate if rate > 0 else float("inf")
            eta_text = str(datetime.timedelta(seconds=round(eta))) if eta != float("inf") else "-"
            last = "-" if last_return is None else f"{last_return:.1f}"
            print(f"{self.description} {completed}/{self.total} | {rate:.2f} {self.unit}/s | ETA {eta_text} | "
                  f"last return {last}", file=sys.stderr, flush=True)
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
