"""The ideas every part of a run shares about one task, with no torch: its identity (the
names a task and its results row are matched by), the one vocabulary of its state, and the
one classification of a task against its latest result. `report`, the gallery, `--dry-run`
and the run's summary all count by `classify`. See docs/reliability.md for what each
state means to a user.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple, Protocol, TypeVar

# What a results row records of an attempt (results.csv's `status` column).
Status = Literal["done", "skipped", "failed", "interrupted"]
# A task against its latest result. `missing`: done, but its output file is gone (only the
# gallery, which looks at the files, tells); `pending`: no result yet ("not yet run").
State = Literal["done", "failed", "interrupted", "outdated", "missing", "pending"]
STATES: tuple[State, ...] = ("done", "failed", "interrupted", "outdated", "missing", "pending")
# A sequence's cell takes the first of its frames' states in this order.
WORST_FIRST: tuple[State, ...] = ("failed", "interrupted", "outdated", "missing", "pending", "done")
# Where a state is not said by its own name.
STATE_WORDS: dict[State, str] = {"pending": "not yet run"}
UNFINISHED: frozenset[Status] = frozenset({"failed", "interrupted"})


class TaskId(NamedTuple):
    """The names a task is known by in the results: a row belongs to the task of its id."""

    content: str
    style: str
    variant: str


class Recorded(Protocol):
    """What classification needs of a results row."""

    @property
    def id(self) -> TaskId: ...
    @property
    def status(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def output(self) -> str: ...


class Planned(Protocol):
    """What classification needs of a planned task."""

    @property
    def id(self) -> TaskId: ...
    @property
    def key(self) -> str: ...
    @property
    def relative_output(self) -> str: ...


R = TypeVar("R", bound=Recorded)


def latest_by_id(rows: Iterable[R]) -> dict[TaskId, R]:
    """Each task's latest row of `rows` (in file order: a later row wins)."""
    return {row.id: row for row in rows}


def classify(task: Planned | None, row: Recorded | None) -> State:
    """A task against its latest result: pending without one, outdated when that was made
    with another key (inputs or settings), else the result's status (skipped counts as
    done). The gallery also marks a done task `missing` when its output file is gone."""
    if task is None or row is None:
        return "pending"
    if row.key != task.key:
        return "outdated"
    if row.status == "failed":
        return "failed"
    if row.status == "interrupted":
        return "interrupted"
    return "done"  # done, or skipped: up to date


def recorded_done(task: Planned, row: Recorded | None) -> bool:
    """Whether `row` records `task` made with its key at its output (done or skipped)."""
    return (
        row is not None
        and row.status in ("done", "skipped")
        and row.key == task.key
        and row.output == task.relative_output
    )
