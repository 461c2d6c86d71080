"""The gallery's model: a grid per variant of content x style cells, each task classified
against its latest result (done, failed, interrupted, outdated, missing, pending), with the
thumbnails and loss curves the page and the contact sheet show. With `pairs:` a cell that is
not one of the pairs is `none`: no task, shown empty and counted nowhere.

A sequence is one row, and its cell in a style is the chain of its frames' tasks: in the
worst of their states, with the last frame's result, the first frame's thumbnail and the
chain's animation if there is one (animation.py); its frames are counted one by one.

Each task is classified by `task.classify`, as `report` counts it.

Building the model decodes no image but the source of a stale thumbnail: a thumbnail is
remade only when its source is newer (two stat calls), and every file a page shows is known
by its `Stamp`, so that a rerun can tell what changed without opening anything.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nst_batch.filecache import Stamp
from nst_batch.filecache import stamp as file_stamp
from nst_batch.images import IMAGE_ERRORS, ImageError, load_image, open_output, save_image, shrunk
from nst_batch.layout import curve_path, header_thumbnail, output_thumbnail
from nst_batch.manifest import ImageSpec, Manifest, Variant
from nst_batch.plan import Task
from nst_batch.results import ResultRow
from nst_batch.task import WORST_FIRST, State, TaskId, classify, latest_by_id

if TYPE_CHECKING:
    from PIL import Image

THUMB_SIZE = 200  # longest side of a thumbnail, px
THUMB_QUALITY = 85

# A cell's state: its task's, or `none` (no such pair: no task, counted nowhere).
CellState = State | Literal["none"]
OUTDATED = "made with other inputs or settings; rerun to redo"
MISSING = "the output file is missing or unreadable; rerun"


def stamp(path: Path) -> Stamp | None:
    """The stamp of the file at `path` (a rewrite through the atomic writer is a new inode,
    so an unchanged stamp is an unchanged file); None when there is no file there."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return file_stamp(info)


@dataclass(frozen=True)
class Thumb:
    path: Path  # absolute, inside <output>/thumbs
    stamp: Stamp


@dataclass(frozen=True)
class Header:
    """A content or style image at the edge of a grid; for a sequence's row, its first frame."""

    spec: ImageSpec
    thumb: Thumb | None  # None: the image cannot be read

    @property
    def name(self) -> str:
        """The row's or column's name: the sequence's for a sequence, else the image's."""
        return self.spec.name if self.spec.sequence is None else self.spec.sequence.name

    @property
    def frames(self) -> int:
        """How many frames the row's sequence has; 0 for a still image."""
        return 0 if self.spec.sequence is None else self.spec.sequence.frames


@dataclass(frozen=True)
class Cell:
    """A task's cell, or a sequence's: then `task`, `row` and `curve` are its last frame's,
    `thumb` its first frame's, and `frames` the cells of every frame (without thumbnails)."""

    state: CellState
    task: Task | None
    row: ResultRow | None
    note: str = ""  # the reason for any state but done
    thumb: Thumb | None = None  # None for a done cell: its thumbnail could not be written
    curve: Stamp | None = None  # of the loss curve file; `read_curve` reads it
    frames: tuple[Cell, ...] = ()  # a sequence's frames, in order; () for a still
    animation: Thumb | None = None  # a sequence's animation, when there is one


@dataclass(frozen=True)
class Grid:
    variant: Variant
    contents: tuple[Header, ...]
    styles: tuple[Header, ...]
    cells: tuple[tuple[Cell, ...], ...]  # [content][style]


def build_grids(
    manifest: Manifest,
    tasks: Sequence[Task],
    rows: Iterable[ResultRow],
    unwritten: list[str],
    animations: Mapping[str, Thumb] | None = None,
) -> list[Grid]:
    """One grid per variant, in manifest order, with thumbnails made where needed: a row per
    still content image and per sequence; `animations` are the sequences' animations there
    are, by chain (animation.py).

    A thumbnail that cannot be written costs its picture, not the gallery: the cell or header
    shows none, and the reason (naming the file) is appended to `unwritten`.
    """
    latest = latest_by_id(rows)
    by_id = {t.id: t for t in tasks}
    lines = content_rows(manifest.contents)
    contents = tuple(_header(line[0], "content", manifest, unwritten) for line in lines)
    styles = tuple(_header(spec, "style", manifest, unwritten) for spec in manifest.styles)
    grids = []
    for variant in manifest.variants:
        cells = []
        for frames in lines:
            line = []
            for style in manifest.styles:
                if not manifest.has_pair(frames[0], style):
                    line.append(Cell("none", None, None))
                    continue
                ids = [TaskId(spec.name, style.name, variant.name) for spec in frames]
                if frames[0].sequence is None:
                    line.append(_cell(by_id.get(ids[0]), latest.get(ids[0]), unwritten))
                    continue
                chain = [(by_id.get(i), latest.get(i)) for i in ids]
                line.append(_sequence_cell(chain, animations or {}, unwritten))
            cells.append(tuple(line))
        grids.append(Grid(variant, contents, styles, tuple(cells)))
    return grids


def content_rows(contents: Sequence[ImageSpec]) -> list[tuple[ImageSpec, ...]]:
    """The grids' rows: each still content image alone, each sequence's frames together (the
    manifest lists them one after another, from frame 0)."""
    rows: list[list[ImageSpec]] = []
    for spec in contents:
        sequence = spec.sequence
        if sequence is not None and spec.frame > 0 and rows and rows[-1][0].sequence == sequence:
            rows[-1].append(spec)
        else:
            rows.append([spec])
    return [tuple(row) for row in rows]


def _header(
    spec: ImageSpec, kind: Literal["content", "style"], manifest: Manifest, unwritten: list[str]
) -> Header:
    root = manifest.output
    try:
        thumb = _thumbnail(
            spec.path,
            header_thumbnail(root, kind, spec.name),
            lambda p: load_image(p, manifest.max_pixels),
            root,
        )
    except ImageError as exc:
        unwritten.append(str(exc))
        thumb = None
    return Header(spec, thumb)


def _unfinished(task: Task | None, row: ResultRow | None) -> Cell | None:
    """The cell of a task that is not done (pending, outdated, failed, interrupted); None
    for a done one."""
    now = classify(task, row)
    if now == "pending":
        return Cell(now, task, None, "not yet run")
    if now == "outdated":
        return Cell(now, task, row, OUTDATED)
    if now != "done":
        assert row is not None
        return Cell(now, task, row, row.error or row.status)
    return None


def _cell(task: Task | None, row: ResultRow | None, unwritten: list[str]) -> Cell:
    unfinished = _unfinished(task, row)
    if unfinished is not None:
        return unfinished
    assert task is not None and row is not None
    curve = stamp(curve_path(task.output))
    try:
        thumb = _output_thumbnail(task)
    except ImageError as exc:
        unwritten.append(str(exc))
        return Cell("done", task, row, "its thumbnail could not be written", curve=curve)
    if thumb is None:
        return Cell("missing", task, row, MISSING)
    return Cell("done", task, row, thumb=thumb, curve=curve)


def _output_thumbnail(task: Task) -> Thumb | None:
    path = output_thumbnail(task.folder, task.relative_output)
    return _thumbnail(task.output, path, open_output, task.folder)


def _frame_cell(task: Task | None, row: ResultRow | None) -> Cell:
    """A sequence frame's cell: as a task's, without a thumbnail (one stat for a done one)."""
    unfinished = _unfinished(task, row)
    if unfinished is not None:
        return unfinished
    assert task is not None
    if stamp(task.output) is None:
        return Cell("missing", task, row, MISSING)
    return Cell("done", task, row)


def _sequence_cell(
    chain: Sequence[tuple[Task | None, ResultRow | None]],
    animations: Mapping[str, Thumb],
    unwritten: list[str],
) -> Cell:
    """A sequence's cell in one style and variant, from its frames' (task, latest row): the
    worst of their states, the last frame's row and curve, the first frame's thumbnail once
    every frame is done, and the chain's animation."""
    frames = tuple(_frame_cell(task, row) for task, row in chain)
    now = min((frame.state for frame in frames), key=WORST_FIRST.index)
    first, last = frames[0], frames[-1]
    task = last.task
    animation = animations.get(task.chain) if task is not None else None
    if now != "done":
        return Cell(now, task, last.row, _sequence_note(frames, now), frames=frames)
    assert task is not None and first.task is not None
    curve = stamp(curve_path(task.output))
    try:
        thumb = _output_thumbnail(first.task)
    except ImageError as exc:
        unwritten.append(str(exc))
        thumb = None
    return Cell(now, task, last.row, "", thumb, curve, frames, animation)


def _sequence_note(frames: Sequence[Cell], now: CellState) -> str:
    """'18 of 24 frames done', and the first frame in the worst state with its reason."""
    done = sum(frame.state == "done" for frame in frames)
    note = f"{done} of {len(frames)} frames done"
    if now == "pending":
        return note
    worst = next(frame for frame in frames if frame.state == now)
    name = worst.task.content.path.stem if worst.task is not None else "a frame"
    return f"{note}; {name} {now}: {worst.note}"


def _thumbnail(
    source: Path, thumb: Path, load: Callable[[Path], Image.Image], root: Path
) -> Thumb | None:
    """The thumbnail of `source`, remade only when the source is newer (stat calls decide);
    None if the source is missing or unreadable, ImageError if the thumbnail cannot be written.
    """
    source_stamp = stamp(source)
    if source_stamp is None:
        return None
    thumb_stamp = stamp(thumb)
    if thumb_stamp is None or thumb_stamp[1] < source_stamp[1]:  # by modification time
        try:
            image = load(source)
        except IMAGE_ERRORS:
            return None
        save_image(shrunk(image, THUMB_SIZE), thumb, quality=THUMB_QUALITY, root=root)
        thumb_stamp = stamp(thumb)
        if thumb_stamp is None:  # replaced by something else at once: not ours to show
            return None
    return Thumb(thumb, thumb_stamp)


def read_curve(task: Task) -> tuple[float, ...]:
    """The task's total loss per step, if its curve file was written for this very key."""
    try:
        data = json.loads(curve_path(task.output).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested deep
        return ()
    if not isinstance(data, dict) or data.get("key") != task.key:
        return ()  # another version's curve, left by an older run of this output
    values = data.get("total_loss")
    if not isinstance(values, list):
        return ()
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return ()
    return tuple(float(v) for v in values)
