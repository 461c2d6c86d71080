"""Tests of nst_batch.progress: what ConsoleEvents writes while a gallery runs.

Driven with stand-in tasks, real ResultRow and Progress values and a fake clock; output goes
to a StringIO (not a terminal: plain lines) or to one that says it is a terminal (tqdm bar).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from nst_batch import progress as progress_module
from nst_batch.progress import ConsoleEvents
from nst_batch.results import ResultRow
from nst_batch.stylize import Losses, Progress

LABEL = "chelsea x starry_night"
OTHER = "coffee x the_scream"


@dataclass(frozen=True)
class FakeTask:
    """All of a Task that ConsoleEvents reads."""

    label: str


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def _events(stream: io.StringIO, total: int = 2, skipped: int = 0, **kwargs: Any) -> ConsoleEvents:
    return ConsoleEvents(total, skipped, stream=stream, **kwargs)  # type: ignore[arg-type]


def _progress(step: int, steps: int = 10, total: float = 12345.678) -> Progress:
    return Progress(step, steps, Losses(content=1.5, style=total - 2.0, tv=0.5, total=total))


def _done(output: str = "chelsea__starry_night.jpg", seconds: float = 3.14159) -> ResultRow:
    return ResultRow(
        "chelsea",
        "starry_night",
        "",
        output,
        "done",
        total_loss=12345.678,
        seconds=seconds,
    )


def _failed(error: str = "Cannot use image 'x.png': the file is empty (0 bytes)") -> ResultRow:
    return ResultRow("coffee", "the_scream", "", "coffee__the_scream.jpg", "failed", error=error)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


# --- plain lines: stderr is not a terminal ----------------------------------------------------


def test_plain_mode_writes_one_line_per_finished_task(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream)
    assert not events.interactive
    events.task_started(FakeTask(LABEL), "cpu#0")  # type: ignore[arg-type]
    events.step(FakeTask(LABEL), _progress(5))  # type: ignore[arg-type]
    events.task_finished(FakeTask(LABEL), _done())  # type: ignore[arg-type]
    events.task_finished(FakeTask(OTHER), _failed())  # type: ignore[arg-type]
    events.close()
    assert _lines(stream) == [
        "[1/2] chelsea x starry_night: done in 3.1s, loss 1.235e+04 -> chelsea__starry_night.jpg",
        "FAILED coffee x the_scream: Cannot use image 'x.png': the file is empty (0 bytes)",
    ]
    assert events.counts == {"done": 1, "skipped": 0, "failed": 1}
    assert events.finished == 2


def test_plain_mode_shows_a_missing_loss_as_a_dash(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, total=1)
    row = ResultRow("chelsea", "starry_night", "", "c.jpg", "done", seconds=0.04)
    events.task_finished(FakeTask(LABEL), row)  # type: ignore[arg-type]
    assert _lines(stream) == ["[1/1] chelsea x starry_night: done in 0.0s, loss - -> c.jpg"]


def test_plain_mode_writes_a_step_line_at_most_once_per_interval(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, total=3, interval=30.0)
    task = FakeTask(LABEL)
    events.step(task, _progress(1))  # type: ignore[arg-type]
    clock.now += 30.0  # not more than the interval yet
    events.step(task, _progress(2))  # type: ignore[arg-type]
    clock.now += 0.5
    events.step(task, _progress(3, total=999.5))  # type: ignore[arg-type]
    clock.now += 10.0
    events.step(task, _progress(4))  # type: ignore[arg-type]
    clock.now += 31.0
    events.step(task, _progress(5, total=0.000123456))  # type: ignore[arg-type]
    assert _lines(stream) == [
        "[0/3] chelsea x starry_night: step 3/10, loss 999.5",
        "[0/3] chelsea x starry_night: step 5/10, loss 0.0001235",
    ]


def test_a_finished_task_line_restarts_the_interval(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, interval=30.0)
    clock.now += 40.0
    events.task_finished(FakeTask(LABEL), _done())  # type: ignore[arg-type]
    events.step(FakeTask(OTHER), _progress(2))  # type: ignore[arg-type]
    clock.now += 31.0
    events.step(FakeTask(OTHER), _progress(3))  # type: ignore[arg-type]
    assert _lines(stream)[1:] == ["[1/2] coffee x the_scream: step 3/10, loss 1.235e+04"]
    assert len(_lines(stream)) == 2


def test_skipped_tasks_start_the_counts(clock: Clock) -> None:
    events = _events(io.StringIO(), total=1, skipped=3)
    assert events.counts == {"done": 0, "skipped": 3, "failed": 0}
    events.task_finished(FakeTask(LABEL), _done())  # type: ignore[arg-type]
    assert events.counts == {"done": 1, "skipped": 3, "failed": 0}


# --- -v: a start line and the losses every print_every steps ---------------------------------


def test_verbose_writes_start_and_loss_lines(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, total=1, verbosity=1, print_every=4)
    task = FakeTask(LABEL)
    events.task_started(task, "cpu#1")  # type: ignore[arg-type]
    for step in range(1, 11):
        events.step(task, _progress(step))  # type: ignore[arg-type]
    events.task_finished(task, _done())  # type: ignore[arg-type]
    assert _lines(stream) == [
        "start chelsea x starry_night on cpu#1",
        "chelsea x starry_night step 4/10: content 1.5 style 1.234e+04 tv 0.5 total 1.235e+04",
        "chelsea x starry_night step 8/10: content 1.5 style 1.234e+04 tv 0.5 total 1.235e+04",
        # the last step is always shown, whatever print_every
        "chelsea x starry_night step 10/10: content 1.5 style 1.234e+04 tv 0.5 total 1.235e+04",
        "[1/1] chelsea x starry_night: done in 3.1s, loss 1.235e+04 -> chelsea__starry_night.jpg",
    ]


def test_verbose_still_writes_interval_lines_between_loss_lines(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, total=1, verbosity=1, print_every=50, interval=30.0)
    clock.now += 31.0
    events.step(FakeTask(LABEL), _progress(7, steps=100))  # type: ignore[arg-type]
    assert _lines(stream) == ["[0/1] chelsea x starry_night: step 7/100, loss 1.235e+04"]


# --- -q: only failures ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [io.StringIO, Terminal], ids=["pipe", "terminal"])
def test_quiet_writes_only_failures(clock: Clock, kind: type[io.StringIO]) -> None:
    stream = kind()
    events = _events(stream, verbosity=-1)
    assert not events.interactive  # no bar, even on a terminal
    events.task_started(FakeTask(LABEL), "cpu#0")  # type: ignore[arg-type]
    clock.now += 1000.0
    events.step(FakeTask(LABEL), _progress(10))  # type: ignore[arg-type]
    events.task_finished(FakeTask(LABEL), _done())  # type: ignore[arg-type]
    events.task_finished(FakeTask(OTHER), _failed("internal error: boom"))  # type: ignore[arg-type]
    events.close()
    assert stream.getvalue() == "FAILED coffee x the_scream: internal error: boom\n"
    assert events.counts == {"done": 1, "skipped": 0, "failed": 1}


# --- a terminal: the tqdm bar -----------------------------------------------------------------


def test_terminal_shows_a_bar_and_writes_only_failures_as_lines(clock: Clock) -> None:
    stream = Terminal()
    events = _events(stream, total=2, skipped=1)
    assert events.interactive
    events.step(FakeTask(LABEL), _progress(3))  # type: ignore[arg-type]
    events.task_finished(FakeTask(LABEL), _done())  # type: ignore[arg-type]
    events.task_finished(FakeTask(OTHER), _failed("internal error: boom"))  # type: ignore[arg-type]
    events.close()
    text = stream.getvalue()
    assert "FAILED coffee x the_scream: internal error: boom\n" in text
    assert "2/2" in text  # the bar's count
    assert "done=1, skipped=1, failed=1" in text  # its postfix
    assert "[1/2]" not in text and "done in" not in text  # no plain lines
    assert events.counts == {"done": 1, "skipped": 1, "failed": 1}


def test_terminal_shows_the_running_loss_in_the_bar(clock: Clock) -> None:
    stream = Terminal()
    events = _events(stream, total=1)
    clock.now += 1000.0
    events.step(FakeTask(LABEL), _progress(3, total=4321.0))  # type: ignore[arg-type]
    assert "loss=4.32e+03" in stream.getvalue()
    assert "step 3/10" not in stream.getvalue()  # no interval line on a terminal
    events.close()


# --- progress in steps: the tasks' step budgets given ------------------------------------------


@dataclass(frozen=True)
class BudgetTask:
    label: str
    params: SimpleNamespace


def test_plain_lines_give_the_share_of_steps_and_the_time_left(clock: Clock) -> None:
    stream = io.StringIO()
    events = _events(stream, total=2, steps=20, interval=30.0)
    first, second = (BudgetTask(n, SimpleNamespace(steps=10)) for n in (LABEL, OTHER))
    events.step(first, _progress(5))  # type: ignore[arg-type]
    clock.now += 31.0  # 5 of 20 steps in 31 s: 93 s left
    events.step(first, _progress(5))  # type: ignore[arg-type]
    clock.now += 9.0  # the task converged at step 7: its whole budget counts as done
    events.step(first, _progress(7))  # type: ignore[arg-type]
    events.task_finished(first, _done())  # type: ignore[arg-type]
    assert _lines(stream) == [
        "[0/2 tasks, 25% of steps, 1m33s left] chelsea x starry_night: step 5/10, loss 1.235e+04",
        "[1/2 tasks, 50% of steps, 0m40s left] chelsea x starry_night: done in 3.1s, "
        "loss 1.235e+04 -> chelsea__starry_night.jpg",
    ]
    assert events.stepped == 10
    events.task_finished(second, _failed())  # type: ignore[arg-type]  # failed before a step
    assert events.stepped == 20


def test_the_terminal_bar_moves_with_the_steps(clock: Clock) -> None:
    stream = Terminal()
    events = _events(stream, total=2, steps=20)
    task = BudgetTask(LABEL, SimpleNamespace(steps=10))
    events.step(task, _progress(4))  # type: ignore[arg-type]
    assert events.bar.n == 4 and events.bar.total == 20 and events.bar.unit == "step"
    events.step(task, _progress(6))  # type: ignore[arg-type]
    events.task_finished(task, _done())  # type: ignore[arg-type]
    assert events.bar.n == 10
    assert "tasks=1/2" in str(events.bar)
    events.close()
