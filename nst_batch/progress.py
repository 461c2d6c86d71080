"""What a person (or a log file) sees while a gallery runs.

On a terminal: one tqdm bar, over the optimization steps of the tasks to do when their
budget is given (else over the tasks), with ETA, the tasks done of all and the
done/skipped/failed counts, and the running loss of the task in flight. Elsewhere (cron,
Slurm logs): plain lines, one per finished task and at most one per `interval` seconds in
between, each with the share of the steps done and the estimated time left.
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


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


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
        steps: int = 0,
    ) -> None:
        """`total` tasks to do and `skipped` up to date; `steps`: the tasks' step budgets
        added up (0: count tasks only). A task that stops before its budget (converged,
        failed) counts its whole budget once finished."""
        self.stream = stream or sys.stderr
        self.verbosity = verbosity
        self.print_every = print_every
        self.interval = interval
        self.counts = {"done": 0, "skipped": skipped, "failed": 0}
        self.total = total
        self.finished = 0
        self.interactive = self.stream.isatty() and verbosity >= 0
        self.steps = steps
        self.stepped = 0  # steps counted so far, finished tasks' whole budgets included
        self._seen: dict[int, tuple[int, int]] = {}  # id(task): (steps counted, its budget)
        self._start = time.monotonic()
        self.bar = tqdm(
            total=steps or total,
            unit="step" if steps else "task",
            file=self.stream,
            dynamic_ncols=True,
            disable=not self.interactive,
        )
        self._last_line = time.monotonic()
        self._postfix()

    def _postfix(self, loss: float | None = None) -> None:
        if self.interactive:
            fields: dict[str, object] = {}
            if self.steps:
                fields["tasks"] = f"{self.finished}/{self.total}"
            fields.update(self.counts)
            if loss is not None:
                fields["loss"] = f"{loss:.3g}"
            self.bar.set_postfix(fields, refresh=False)

    def _count(self, task: Task, step: int, budget: int) -> None:
        """Move the step count to `step` of `task`'s `budget`."""
        counted, _ = self._seen.get(id(task), (0, budget))
        if step > counted:
            self.stepped += step - counted
            if self.steps:
                self.bar.update(step - counted)
        self._seen[id(task)] = (max(step, counted), budget)

    def _where(self) -> str:
        """'[3/16]', or with step budgets '[3/16 tasks, 41% of steps, 2m10s left]'."""
        if not self.steps:
            return f"[{self.finished}/{self.total}]"
        share = min(self.stepped / self.steps, 1.0)
        elapsed = time.monotonic() - self._start
        left = _duration(elapsed * (1 - share) / share) + " left" if share > 0 else "time left ?"
        return f"[{self.finished}/{self.total} tasks, {share:.0%} of steps, {left}]"

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
        self._count(task, progress.step, progress.steps)
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
                f"{self._where()} {task.label}: step "
                f"{progress.step}/{progress.steps}, loss {losses.total:.4g}"
            )

    def task_finished(self, task: Task, row: ResultRow) -> None:
        self.finished += 1
        self.counts[row.status if row.status in self.counts else "failed"] += 1
        params = getattr(task, "params", None)
        budget = self._seen.get(id(task), (0, getattr(params, "steps", 0)))[1]
        self._count(task, budget, budget)
        self._seen.pop(id(task), None)
        self._postfix()
        if not self.steps:
            self.bar.update(1)
        if row.status == "failed":
            self._line(f"FAILED {task.label}: {row.error}")
        elif not self.interactive and self.verbosity >= 0:
            self._line(
                f"{self._where()} {task.label}: {row.status} in "
                f"{row.seconds:.1f}s, loss {_fmt(row.total_loss)} -> {row.output}"
            )

    def close(self) -> None:
        self.bar.close()
