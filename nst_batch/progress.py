"""What a person (or a log file) sees while a gallery runs.

On a terminal: one tqdm bar over the tasks, with ETA, the done/skipped/failed counts
and the running loss of the task in flight. Elsewhere (cron, Slurm logs): plain
lines, one per finished task and at most one per `interval` seconds in between.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from nst_batch.plan import Task
from nst_batch.results import ResultRow

if TYPE_CHECKING:  # a run with nothing to do reports through this module without torch
    from nst_batch.stylize import Progress


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class ConsoleEvents:
    """Implements runner.Events for the command line."""

    def __init__(
        self,
        total: int,
        skipped: int,
        verbosity: int = 0,
        print_every: int = 50,
        interval: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbosity = verbosity
        self.print_every = print_every
        self.interval = interval
        self.counts = {"done": 0, "skipped": skipped, "failed": 0}
        self.total = total
        self.finished = 0
        self.interactive = self.stream.isatty() and verbosity >= 0
        self.bar = tqdm(
            total=total,
            unit="task",
            file=self.stream,
            dynamic_ncols=True,
            disable=not self.interactive,
        )
        self._last_line = time.monotonic()
        self._postfix()

    def _postfix(self, loss: float | None = None) -> None:
        if self.interactive:
            fields = dict(self.counts)
            if loss is not None:
                fields["loss"] = f"{loss:.3g}"  # type: ignore[assignment]
            self.bar.set_postfix(fields, refresh=False)

    def _line(self, text: str) -> None:
        if self.interactive:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
        self._last_line = time.monotonic()

    def task_started(self, task: Task, worker: str) -> None:
        if self.verbosity > 0:
            self._line(f"start {task.label} on {worker}")

    def step(self, task: Task, progress: Progress) -> None:
        losses = progress.losses
        last = progress.step == progress.steps
        if self.verbosity > 0 and (progress.step % self.print_every == 0 or last):
            self._line(
                f"{task.label} step {progress.step}/{progress.steps}: "
                f"content {losses.content:.4g} style {losses.style:.4g} "
                f"tv {losses.tv:.4g} total {losses.total:.4g}"
            )
        elif self.interactive:
            self._postfix(losses.total)
            self.bar.refresh()
        elif self.verbosity >= 0 and time.monotonic() - self._last_line > self.interval:
            self._line(
                f"[{self.finished}/{self.total}] {task.label}: step "
                f"{progress.step}/{progress.steps}, loss {losses.total:.4g}"
            )

    def task_finished(self, task: Task, row: ResultRow) -> None:
        self.finished += 1
        self.counts[row.status if row.status in self.counts else "failed"] += 1
        self._postfix()
        self.bar.update(1)
        if row.status == "failed":
            self._line(f"FAILED {task.label}: {row.error}")
        elif not self.interactive and self.verbosity >= 0:
            self._line(
                f"[{self.finished}/{self.total}] {task.label}: {row.status} in "
                f"{row.seconds:.1f}s, loss {_fmt(row.total_loss)} -> {row.output}"
            )

    def close(self) -> None:
        self.bar.close()
