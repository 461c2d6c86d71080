"""Runs planned tasks on the chosen devices and records every attempt.

The parent alone writes the results CSV and reports progress; workers (in-process
for one device, spawned processes for several) stylize and write output images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nst_batch.plan import Task
from nst_batch.results import ResultRow, ResultsWriter
from nst_batch.stylize import Progress
from nst_batch.worker import FatalWorkerError, TaskOutcome, Worker


class Events(Protocol):
    """What a front end (the CLI's progress bar) hears of a run."""

    def task_started(self, task: Task, worker: str) -> None: ...
    def step(self, task: Task, progress: Progress) -> None: ...
    def task_finished(self, task: Task, row: ResultRow) -> None: ...


@dataclass
class RunStats:
    done: int = 0
    failed: int = 0
    interrupted: int = 0
    seconds: float = 0.0
    target_computations: int = 0
    model_builds: int = 0
    task_seconds: float = 0.0  # summed over tasks: whole task
    optimize_seconds: float = 0.0  # summed over tasks: optimization steps only
    fatal: str = ""  # set when the run stopped on a problem no task can get past


def resolve_devices(devices: Sequence[str], workers_per_device: int = 1) -> list[str]:
    """'auto' -> every CUDA device, else the CPU; each device repeated per worker."""
    if tuple(devices) == ("auto",):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = [f"cuda:{i}" for i in range(count)] or ["cpu"]
    return [d for d in devices for _ in range(workers_per_device)]


def make_row(task: Task, outcome: TaskOutcome, device: str, worker: str, shard: str) -> ResultRow:
    return ResultRow(
        content=task.content.name,
        style=task.style.name,
        variant=task.variant.name,
        output=task.relative_output,
        status=outcome.status,
        content_loss=outcome.content_loss,
        style_loss=outcome.style_loss,
        tv_loss=outcome.tv_loss,
        total_loss=outcome.total_loss,
        steps=outcome.steps,
        seconds=round(outcome.seconds, 3),
        device=device,
        worker=worker,
        key=task.key,
        error=outcome.error,
        shard=shard,
    )


def skipped_row(task: Task, shard: str) -> ResultRow:
    return ResultRow(
        content=task.content.name,
        style=task.style.name,
        variant=task.variant.name,
        output=task.relative_output,
        status="skipped",
        key=task.key,
        shard=shard,
    )


def run_tasks(
    tasks: Sequence[Task],
    devices: Sequence[str],
    writer: ResultsWriter,
    events: Events,
    report_every: int = 10,
    shard: str = "",
) -> RunStats:
    """Run every task, one row per attempt in `writer`; a failing task never stops the rest."""
    stats = RunStats()
    start = time.perf_counter()
    device = devices[0]
    worker = Worker(device, f"{device}#0")
    for task in tasks:
        events.task_started(task, worker.name)
        try:
            outcome = worker.run(
                task, lambda p, t=task: events.step(t, p), report_every=report_every
            )
        except FatalWorkerError as exc:
            stats.fatal = str(exc)
            break
        row = make_row(task, outcome, device, worker.name, shard)
        writer.write(row)
        _count(stats, outcome)
        events.task_finished(task, row)
    stats.target_computations = worker.target_computations
    stats.model_builds = worker.model_builds
    stats.seconds = time.perf_counter() - start
    return stats


def _count(stats: RunStats, outcome: TaskOutcome) -> None:
    if outcome.status == "done":
        stats.done += 1
    else:
        stats.failed += 1
    stats.task_seconds += outcome.seconds
    stats.optimize_seconds += outcome.optimize_seconds
