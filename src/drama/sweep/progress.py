"""The sweep's live progress: a table of trials (state, env steps, steps/s, last return, ETA) refreshed while the
sweep runs, one plain line per change when stderr is not a terminal (logs, CI).

Where the numbers come from: each running trial's MLflow run (its id is in the trial's ``run.json``), read through
the tracking URI the trials log to (the sweep's server: its REST API), the latest value of ``progress/env_steps``,
``time/steps_per_second`` and ``episode/return``; which command a trial is in (``fit`` / ``evaluate``) comes from
its log. Nothing here changes a trial: a poll that fails (a server busy for a moment, a run not created yet) keeps
the last numbers.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from drama.metrics import ENV_STEPS, EPISODE_RETURN, STEPS_PER_SECOND
from drama.run import RunFolder
from drama.sweep.folder import SweepFolder
from drama.sweep.trial import current_command
from drama.tracking import Tracker

STEPS_KEY, RATE_KEY, RETURN_KEY = ENV_STEPS, STEPS_PER_SECOND, EPISODE_RETURN
"""The trial metrics the table shows (logged by :mod:`drama.loop`, keys owned by :mod:`drama.metrics`)."""
STATES = ("pending", "starting", "fit", "evaluate", "done", "failed")
"""A trial's states, in order: ``starting`` is submitted with no metrics yet; ``fit`` and ``evaluate`` name the
command under way."""
RUNNING = ("starting", "fit", "evaluate")
MAX_ROWS = 20
"""Rows of the live table: every running trial, then the latest finished ones."""


def duration(seconds: float | None) -> str:
    """``1:02:03``, or ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return str(datetime.timedelta(seconds=round(seconds)))


@dataclass
class TrialStatus:
    """What the table shows of one trial."""

    name: str
    total_steps: int
    state: str = "pending"
    step: int | None = None
    rate: float | None = None
    """Env steps per second over its latest logging interval."""
    last_return: float | None = None
    """Return of its latest training episode."""
    result: float | None = None
    """Mean evaluation return, once done."""
    error: str | None = None
    finished_at: float = 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until its ``drama fit`` reaches ``total_steps`` at the current rate."""
        if self.state != "fit" or self.step is None or not self.rate:
            return None
        return max(self.total_steps - self.step, 0) / self.rate

    def steps_text(self) -> str:
        return "-" if self.step is None else f"{self.step:,}/{self.total_steps:,}"

    def line(self) -> str:
        """One plain line: ``seed1_gru fit 20/30 steps | 1.23 steps/s | ETA 0:00:08 | last return 3.0``."""
        rate = "-" if self.rate is None else f"{self.rate:.2f}"
        last = "-" if self.last_return is None else f"{self.last_return:.1f}"
        return (f"{self.name} {self.state} {self.steps_text()} steps | {rate} steps/s | ETA {duration(self.eta)} | "
                f"last return {last}")


class SweepProgress:
    """Context manager around the driver's loop: :meth:`say` prints an event line, :meth:`set` changes a trial's
    state, :meth:`poll` reads the running trials' metrics (at most every ``refresh`` seconds) and redraws."""

    def __init__(self, trials: list[Any], folder: Path, tracking_uri: str, refresh: float = 10.0,
                 stream: IO[str] | None = None) -> None:
        self.folder, self.uri, self.refresh = folder, tracking_uri, refresh
        self.stream = stream or sys.stderr
        self.rich = self.stream.isatty()
        self.trials = {t.name: TrialStatus(t.name, t.total_steps) for t in trials}
        self.started = time.monotonic()
        self._last_poll = -math.inf
        self._printed: dict[str, str] = {}
        self._live: Live | None = None
        self._client: tuple[str, Any] | None = None
        """(tracking URI, its MLflow client), made at the first read."""

    # -------------------------------------------------------------- events
    def __enter__(self) -> SweepProgress:
        if self.rich:
            self._live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=2,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def say(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(f"sweep: {message}", markup=False, highlight=False)
        else:
            print(f"sweep: {message}", file=self.stream, flush=True)

    def set(self, name: str, state: str, **fields: Any) -> None:
        status = self.trials[name]
        status.state = state
        for key, value in fields.items():
            setattr(status, key, value)
        if state in ("done", "failed"):
            status.finished_at = time.monotonic()
        self._redraw()

    # -------------------------------------------------------------- metrics
    def record(self, run_id: str) -> Tracker:
        """A trial's MLflow record through the tracking URI the trials log to (the driver tags with it); one client
        for the sweep."""
        if self._client is None or self._client[0] != self.uri:
            self._client = (self.uri, Tracker.at(self.uri, run_id).client)
        return Tracker(self._client[1], run_id)

    def run_id(self, name: str) -> str | None:
        """The trial's MLflow run id from its ``run.json``; None before its ``drama fit`` created the run."""
        info = RunFolder(SweepFolder(self.folder).trial(name)).read_info()
        return None if info is None else info["mlflow_run_id"]

    def metrics(self, name: str) -> dict[str, float] | None:
        """The latest value of every metric of a trial's MLflow run, read through the tracking URI; ``None`` when
        the trial has no run yet or the tracking server does not answer."""
        run_id = self.run_id(name)
        if run_id is None:
            return None
        try:
            return self.record(run_id).latest_metrics()
        except Exception:  # noqa: BLE001 - a busy or restarting server: keep the last numbers
            return None

    def poll(self, force: bool = False) -> None:
        """Read the running trials' numbers (every ``refresh`` seconds, or now with ``force``) and redraw."""
        now = time.monotonic()
        if not force and now - self._last_poll < self.refresh:
            return
        self._last_poll = now
        for status in self.trials.values():
            if status.state not in RUNNING:
                continue
            command = current_command(SweepFolder(self.folder).trial_log(status.name))
            metrics = self.metrics(status.name)
            if metrics is not None and STEPS_KEY in metrics:
                status.step = int(metrics[STEPS_KEY])
                status.rate = metrics.get(RATE_KEY, status.rate)
                status.last_return = metrics.get(RETURN_KEY, status.last_return)
                status.state = command if command in ("fit", "evaluate") else "fit"
        self._redraw()

    # -------------------------------------------------------------- drawing
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for status in self.trials.values():
            counts[status.state] += 1
        return counts

    def eta(self) -> float | None:
        """Seconds until every trial's ``drama fit`` is done if the running ones keep their pace: the env steps
        left over all unfinished trials divided by the running trials' summed rate (evaluations not counted)."""
        running = [s for s in self.trials.values() if s.state == "fit" and s.rate]
        if not running:
            return None
        left = sum(max(s.total_steps - (s.step or 0), 0) for s in self.trials.values()
                   if s.state not in ("done", "failed"))
        return left / sum(s.rate for s in running)  # type: ignore[misc]

    def header(self) -> str:
        counts = self.counts()
        parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
        running = sum(counts[s] for s in RUNNING)
        return (f"{len(self.trials)} trials: {', '.join(parts)} | running {running} | elapsed "
                f"{duration(time.monotonic() - self.started)} | ETA {duration(self.eta())}")

    def rows(self) -> list[TrialStatus]:
        """Running trials first, then failed, then the most recently done ones; at most :data:`MAX_ROWS`."""
        statuses = list(self.trials.values())
        running = [s for s in statuses if s.state in RUNNING]
        failed = [s for s in statuses if s.state == "failed"]
        done = sorted((s for s in statuses if s.state == "done"), key=lambda s: -s.finished_at)
        return (running + failed + done)[:MAX_ROWS]

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("trial", "left"), ("state", "left"), ("env steps", "right"), ("steps/s", "right"),
                                ("last return", "right"), ("ETA", "right"), ("result", "left")):
            table.add_column(column, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                             overflow="ellipsis" if column == "result" else "fold")
        for s in self.rows():
            result = s.error or ("" if s.result is None else f"eval return {s.result:.1f}")
            table.add_row(s.name, s.state, s.steps_text(), "-" if s.rate is None else f"{s.rate:.2f}",
                          "-" if s.last_return is None else f"{s.last_return:.1f}", duration(s.eta), result)
        return Group(Text(self.header(), style="bold"), table)

    def _redraw(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            return
        for status in self.trials.values():  # plain lines: a running trial whose numbers changed
            if status.state not in RUNNING or status.step is None:
                continue
            line = status.line()
            if self._printed.get(status.name) != line:
                self._printed[status.name] = line
                self.say(line)
