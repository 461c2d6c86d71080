"""The results CSV of a gallery run: one row per task attempt, appended as each finishes,
and a `skipped` row for an up-to-date task only where the results do not record it yet.

Every row is one physical line (newlines in the error text become spaces), written, flushed
and fsync'd as its task finishes (the `skipped` rows of a run together), so a killed run
leaves complete rows plus at most one torn line, which the reader skips. Shards write
separate files; `merge` reduces them to one row per task.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from nst_batch.layout import open_in_folder, write_atomically
from nst_batch.task import Status, TaskId, latest_by_id, recorded_done

if TYPE_CHECKING:
    from nst_batch.plan import Task

STATUSES: tuple[str, ...] = get_args(Status)


@dataclass(frozen=True)
class ResultRow:
    content: str  # content image name (stem)
    style: str  # style name
    variant: str  # '' when the manifest has no sweep
    output: str  # output path relative to the output folder
    status: Status
    content_loss: float | None = None
    style_loss: float | None = None
    tv_loss: float | None = None
    temporal_loss: float | None = None  # a sequence frame's hold on the frame before
    total_loss: float | None = None
    steps: int | None = None
    stopped: str = ""  # why a done task stopped: budget, tolerance, warm or converged
    start: str = ""  # where a done task started: content, noise, style, image or previous
    resumed_from: int | None = None  # the step a task resumed from a checkpoint went on from
    seconds: float | None = None
    device: str = ""  # e.g. 'cpu', 'cuda:0'
    precision: str = ""  # the VGG19 arithmetic its key holds (`auto` resolved: precision.py)
    worker: str = ""  # e.g. 'cpu#0', 'cuda:1#1' (device plus worker index)
    key: str = ""  # the task key (hex hash)
    error: str = ""  # one-line reason for failed/interrupted
    finished_at: str = ""  # ISO-8601 UTC timestamp, filled by the writer if empty
    run: str = ""  # the run that wrote the row (see new_run_id), filled by the writer if empty
    shard: str = ""  # e.g. '1/4', '' when unsharded

    @property
    def id(self) -> TaskId:
        return TaskId(self.content, self.style, self.variant)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        # Also how the reader rejects a line torn inside the shard, the last column.
        index, slash, count = self.shard.partition("/")
        if self.shard and not (slash and index.isdigit() and count.isdigit()):
            raise ValueError(f"shard must look like '1/4', not {self.shard!r}")


def task_row(task: Task, status: Status, shard: str, **outcome: Any) -> ResultRow:
    """A row naming `task` (its names, output and key), with the given outcome fields."""
    return ResultRow(
        content=task.content.name,
        style=task.style.name,
        variant=task.variant.name,
        output=task.relative_output,
        status=status,
        key=task.key,
        shard=shard,
        precision=task.params.precision,
        **outcome,
    )


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
_REQUIRED = frozenset(
    f.name for f in fields(ResultRow) if f.default is MISSING and f.default_factory is MISSING
)
_FLOATS = frozenset(
    {"content_loss", "style_loss", "tv_loss", "temporal_loss", "total_loss", "seconds"}
)
_INTS = frozenset({"steps", "resumed_from"})
_EPOCH = datetime.min.replace(tzinfo=UTC)
# A cell starting with one of these is a formula to a spreadsheet (CSV injection): such cells
# are written with a leading apostrophe, as spreadsheet tools expect, and read back without.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ResultsError(Exception):
    """A results file is not one of ours; str() names it and what to do. It is left as it is."""


def _neutralize(text: str) -> str:
    """'=1+1' -> "'=1+1"; also "'=x" -> "''=x", so that reading back is exact."""
    return "'" + text if text.lstrip("'").startswith(_FORMULA_STARTS) else text


def _restore(text: str) -> str:
    escaped = text.startswith("'") and text.lstrip("'").startswith(_FORMULA_STARTS)
    return text[1:] if escaped else text


def _now() -> str:
    # Fixed width, so timestamps also sort correctly as plain strings.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cells(row: ResultRow, columns: Sequence[str]) -> list[str]:
    out: dict[str, str] = {}
    for name in COLUMNS:
        value = getattr(row, name)
        if value is None:
            text = ""
        elif name in _FLOATS:
            text = repr(float(value))  # float() also unwraps numpy/torch scalars
        elif name in _INTS:
            text = str(int(value))
        else:
            text = str(value)
            if name == "error":
                text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
            elif "\n" in text or "\r" in text:
                # The reader splits on line ends to survive torn lines, so a row must be one line.
                raise ValueError(f"{name} contains a line break: {text!r}")
            text = _neutralize(text)
        out[name] = text
    return [out.get(c, "") for c in columns]


def _line(cells: Iterable[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    # A path from a file name that is not UTF-8 (in an error text) is written escaped.
    return buf.getvalue().encode("utf-8", "backslashreplace")


def _split(line: bytes) -> list[str]:
    """The cells of one line; ValueError if it is not valid UTF-8 and CSV (e.g. torn)."""
    text = line.removesuffix(b"\r").decode("utf-8").removeprefix("\ufeff")
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error as e:
        raise ValueError(str(e)) from e


def _timestamp(text: str) -> datetime:
    if not text:
        return _EPOCH
    stamp = datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _parse(header: Sequence[str], cells: Sequence[str]) -> ResultRow:
    if len(cells) != len(header):
        raise ValueError("wrong number of cells")
    values: dict[str, object] = {}
    for name, cell in zip(header, cells, strict=True):
        if name in _FLOATS:
            values[name] = float(cell) if cell else None
        elif name in _INTS:
            values[name] = int(cell) if cell else None
        elif name in COLUMNS:
            values[name] = _restore(cell)
    row = ResultRow(**values)  # type: ignore[arg-type]  # TypeError if a required column is missing
    _timestamp(row.finished_at)  # a bad timestamp would break merge's ordering
    return row


class ResultsWriter:
    """Appends rows to one CSV file, one row per task attempt, each flushed and fsync'd.

    Writes the header only when the file is new or empty. If the file ends in a torn line from
    a killed run, a newline is written first so the next row starts on its own line. A file with
    another version's header keeps it: rows are written in its columns (unknown ones left empty).
    """

    def __init__(
        self, path: str | os.PathLike[str], root: Path | None = None, run: str = ""
    ) -> None:
        self.path, self.run = Path(path), run
        self._columns: tuple[str, ...] = COLUMNS
        self._file: io.BufferedRandom | None = None
        root = self.path.parent if root is None else root
        _upgrade(self.path, root)
        fd = open_in_folder(self.path, root, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        f = open(fd, "a+b")  # noqa: SIM115  # closed by close()
        try:
            f.seek(0)
            first = f.readline()
            if first and _torn_header(first):
                # Only a header torn while the file was created; nothing worth keeping.
                f.truncate(0)
                first = b""
            if first:
                self._columns = _header(self.path, first)
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            else:
                f.write(_line(COLUMNS))
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            raise
        self._file = f

    def write(self, row: ResultRow) -> None:
        self.write_all([row])

    def write_all(self, rows: Sequence[ResultRow]) -> None:
        """Append rows with one write and one sync: many `skipped` rows (a results file
        deleted under a gallery of 10,000) cost one fsync, not one each. A kill still
        leaves complete rows and at most one torn line."""
        if self._file is None:
            raise ValueError(f"ResultsWriter for {self.path} is closed")
        if not rows:
            return
        stamp, run = _now(), self.run
        lines = [
            _line(
                _cells(
                    replace(row, finished_at=row.finished_at or stamp, run=row.run or run),
                    self._columns,
                )
            )
            for row in rows
        ]
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _header(path: Path, line: bytes) -> tuple[str, ...]:
    """The columns of a results file's first line; ResultsError if it is not ours."""
    try:
        columns = tuple(_split(line))
    except ValueError:  # not UTF-8 (say UTF-16) or not CSV
        columns = ()
    if not _REQUIRED.issubset(columns):
        raise ResultsError(
            f"{path} is not a results file of nst-batch (its first line is not our header: "
            f"{line[:60]!r}); it was left as it is: move or rename it, or choose another 'output'"
        )
    return columns


def _upgrade(path: Path, root: Path) -> None:
    """Rewrite a results file of an earlier version, whose header lacks columns added since
    (say `run`), in today's columns, so that new rows keep every column. Its rows are kept
    (a torn or corrupt line, which no reader takes, is left out); the writer holds the lock."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return
    if not first.endswith(b"\n") or _torn_header(first):
        return
    columns = _header(path, first)
    if columns != COLUMNS and set(columns) < set(COLUMNS):
        write_table(read_rows(path), path, root)


def new_run_id() -> str:
    """A run's id for its results rows: its UTC start time and 24 random bits, e.g.
    '20261207T031500Z-3fa2c1': sortable by time, and unique across the shards of an array."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _torn_header(first: bytes) -> bool:
    """A first line without its end that begins our header: left by a run killed at once."""
    return not first.endswith(b"\n") and _line(COLUMNS).startswith(first)


def check_file(path: Path) -> None:
    """ResultsError unless `path` is missing, empty, torn at its header, or ours."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
            if first and not _torn_header(first):
                _header(path, first)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise ResultsError(
            f"{path} is a folder, where nst-batch keeps its results file; move it away"
        ) from None


def read_rows(path: str | os.PathLike[str]) -> list[ResultRow]:
    """All complete rows of one file, in file order; [] for a missing or empty file.

    Skips blank lines and lines that do not parse (a torn line: too few cells, a number cut
    mid-way, ...). Columns unknown to this version are ignored; missing ones take defaults.
    ResultsError for a file that is not ours (another header, encoding or delimiter).
    """
    path = Path(path)
    check_file(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if len(lines) < 2:
        return []  # empty, or a header torn while the file was created (checked above)
    header = list(_header(path, lines[0]))
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            rows.append(_parse(header, _split(line)))
        except (ValueError, TypeError):
            continue
    return rows


def merge(paths: Iterable[str | os.PathLike[str]]) -> list[ResultRow]:
    """One row per (content, style, variant): its last attempt, sorted by (style, content, variant).

    'Last' is by finished_at, then by the order of `paths`, then by line. A last attempt that
    was 'skipped' yields instead the latest earlier 'done' row with the same (non-empty) key
    and output, since the skip means that result is still valid and it carries the losses.
    """
    attempts: dict[TaskId, list[tuple[datetime, int, int, ResultRow]]] = {}
    for file_index, path in enumerate(paths):
        for line_index, row in enumerate(read_rows(path)):
            order = (_timestamp(row.finished_at), file_index, line_index, row)
            attempts.setdefault(row.id, []).append(order)
    merged = []
    for task in attempts.values():
        task.sort(key=lambda a: a[:3])
        last = task[-1][3]
        if last.status == "skipped" and last.key:
            done = [
                r
                for *_, r in task
                if r.status == "done" and r.key == last.key and r.output == last.output
            ]
            if done:
                last = done[-1]
        merged.append(last)
    return sorted(merged, key=lambda r: (r.style, r.content, r.variant))


def unrecorded(tasks: Iterable[Task], rows: Iterable[ResultRow]) -> list[Task]:
    """The up-to-date `tasks` that a run gives a `skipped` row: those whose latest merged
    row (`merge`) does not record them done (or skipped) with their key and output, as when
    the results file was deleted or the output came from elsewhere. A rerun with nothing
    to do thus appends nothing; the done row it would point to stays the latest."""
    latest = latest_by_id(rows)
    return [task for task in tasks if not recorded_done(task, latest.get(task.id))]


def write_table(
    rows: Iterable[ResultRow], path: str | os.PathLike[str], root: Path | None = None
) -> None:
    """Write a complete CSV (header + rows) atomically, through `layout.write_atomically`."""
    path = Path(path)
    data = b"".join([_line(COLUMNS), *(_line(_cells(r, COLUMNS)) for r in rows)])
    write_atomically(path, data, path.parent if root is None else root)
