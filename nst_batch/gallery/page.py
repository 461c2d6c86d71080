"""The gallery's pages, rendered from jinja2 templates (templates/, their parts shared with
compare.html in templates/macros.html) with autoescaping, so every name and error on them is
text, never markup.

A gallery that fits on one page has it all on `index.html` (page.html). A larger one is cut
into blocks (paging.py), each a page of `pages/` (page.html again, with links to the previous
and next page and to the index), and `index.html` becomes its table of contents
(contents.html): the counts, the contact sheets and a link to every page.

Static HTML with relative links into the output folder: the folder can be copied or served
anywhere, and the pages need no network and no script. A page in `pages/` reaches the output
folder through '../'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from nst_batch.gallery.grid import THUMB_SIZE, Cell, Grid, Header, Thumb, read_curve
from nst_batch.gallery.paging import Block, numbers, span
from nst_batch.images import oriented_size
from nst_batch.layout import display
from nst_batch.manifest import Manifest
from nst_batch.results import ResultRow
from nst_batch.task import STATES, State

CURVE_SIZE = (180, 40)  # the inline loss curve, px
UP = "../"  # from a page in pages/ to the output folder

Snapshots = Mapping[Path, list[tuple[int, Path]]]  # layout.snapshot_index: output -> (step, path)


@dataclass(frozen=True)
class _Picture:
    src: str  # relative to the page's folder
    width: int
    height: int
    alt: str
    video: str | None = None  # a video to play in its place, `src` its poster


@dataclass(frozen=True)
class Nav:
    """The links of a page in `pages/`, relative to that folder."""

    number: int  # from 1
    previous: str | None
    next: str | None
    index: str = UP + "index.html"


@dataclass(frozen=True)
class Live:
    """A run in progress, as `index.html` shows it while the run goes on: how many of its
    tasks are done, which are running, the time left, and how often the page reloads."""

    done: int
    total: int
    running: tuple[str, ...]  # the labels of the tasks in flight
    left: str  # '4m10s', or '' before the first task is done
    refresh: int = 15  # seconds between reloads in the browser


def render_page(
    manifest: Manifest,
    grids: Sequence[Grid],
    parts: Sequence[Block],
    snapshots: Snapshots,
    sheets: Sequence[str] = (),
    compare: str | None = None,
    nav: Nav | None = None,
    live: Live | None = None,
) -> str:
    """A page of the gallery as text: every grid whole on `index.html` (`nav` None), or one
    block on a page of `pages/`. It links to the contact `sheets` and the `compare` page
    (names in the output folder) if there are any. No timestamp: the same results give the
    same bytes. Cells of no task (`none`) are counted nowhere."""
    prefix = UP if nav else ""
    root = manifest.output
    counts = count_states(_cells(grids, parts))
    title = f"{manifest.path.name}: nst-batch gallery" + (f", page {nav.number}" if nav else "")
    return template("page.html").render(
        title=title,
        total=sum(counts.values()),
        scope=" on this page" if nav else "",
        summary=summary(counts),
        sheets=[prefix + sheet for sheet in sheets],
        compare=prefix + compare if compare else None,
        nav=nav,
        curve_size=CURVE_SIZE,
        grids=[_section(root, grids[part.variant], part, snapshots, prefix) for part in parts],
        live=live,
    )


def _section(
    root: Path, grid: Grid, part: Block, snapshots: Snapshots, prefix: str
) -> dict[str, Any]:
    """The view of a block of one grid: its variant, where it sits in the grid, its rows."""
    where = []
    if part.rows != range(len(grid.contents)):
        where.append(f"content rows {numbers(part.rows)}")
    if part.columns != range(len(grid.styles)):
        where.append(f"styles {numbers(part.columns)}")
    return {
        "variant": grid.variant.name,
        "anchor": anchor(part.variant),
        "where": ", ".join(where),
        "styles": [header_view(root, grid.styles[j], prefix) for j in part.columns],
        "rows": [
            {
                "header": header_view(root, grid.contents[i], prefix),
                "cells": [
                    cell_view(root, grid.cells[i][j], snapshots, prefix) for j in part.columns
                ],
            }
            for i in part.rows
        ],
    }


def contents_view(
    manifest: Manifest,
    grids: Sequence[Grid],
    pages: Sequence[tuple[str, Block]],
    sheets: Sequence[str],
    compare: str | None,
) -> dict[str, Any]:
    """What `index.html` shows when the gallery is on several pages: the counts, the contact
    sheets, the comparison, and per variant a link to each of its `pages` (name in the
    output folder, block) with the names and counts of its cells. Cheap: no file is read."""
    counts = count_states(_cells(grids, [block for _, block in pages]))
    intro = f"{sum(counts.values())} tasks: {summary(counts)}."
    links = [{"href": compare, "text": "The variants side by side"}] if compare else []
    groups = []
    for index, grid in enumerate(grids):
        contents = [h.name for h in grid.contents]
        styles = [h.name for h in grid.styles]
        entries = []
        for number, (name, block) in enumerate(pages, start=1):
            if block.variant != index:
                continue
            names = span(contents, block.rows)
            if block.columns != range(len(styles)):
                names += f" x {span(styles, block.columns)}"
            found = summary(count_states(_cells(grids, [block]))) or "no tasks"
            entries.append({"href": name, "label": f"page {number}", "detail": f"{names}: {found}"})
        groups.append({"heading": grid.variant.name, "anchor": anchor(index), "entries": entries})
    return {
        "title": f"{manifest.path.name}: nst-batch gallery",
        "intro": intro,
        "links": links,
        "sheets": list(sheets),
        "groups": groups,
    }


def count_states(cells: Iterable[Cell]) -> dict[State, int]:
    """How many tasks of the cells are in each state: a sequence's cell counts each of its
    frames (cells of no task are not counted)."""
    counts = dict.fromkeys(STATES, 0)
    for cell in cells:
        for task in cell.frames or (cell,):
            if task.state in counts:
                counts[task.state] += 1
    return counts


def summary(counts: Mapping[State, int]) -> str:
    """'2 done, 1 failed, 1 pending': the states that occur, in their order."""
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _cells(grids: Sequence[Grid], parts: Iterable[Block]) -> Iterable[Cell]:
    for part in parts:
        cells = grids[part.variant].cells
        for i in part.rows:
            for j in part.columns:
                yield cells[i][j]


def anchor(index: int) -> str:
    """The id of the index-th (from 0) variant's section on the page, for links to it."""
    return f"variant-{index + 1}"


@cache
def template(name: str) -> jinja2.Template:
    """A template of templates/, with autoescaping on and the `url` filter."""
    templates = resources.files("nst_batch.gallery").joinpath("templates")
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda file: templates.joinpath(file).read_text("utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    # A relative URL for href/src: percent-encoded (spaces, '#', '?', '%'), then escaped.
    environment.filters["url"] = lambda relative: quote(relative, safe="/")
    return environment.get_template(name)


def header_view(root: Path, header: Header, prefix: str = "") -> dict[str, Any]:
    """A content or style image at a grid's edge, or a sequence's first frame and frame count;
    links start with `prefix` (the way from the page's folder to the output folder)."""
    path = header.spec.path
    file = display(path.name if not header.frames else f"{path.parent.name}/")
    picture = None if header.thumb is None else _picture(root, header.thumb, file, prefix)
    return {"name": header.name, "file": file, "frames": header.frames, "picture": picture}


def cell_view(
    root: Path, cell: Cell, snapshots: Snapshots | None = None, prefix: str = ""
) -> dict[str, Any]:
    """A task's cell: its thumbnail linking to the output, curve and losses, or its state and
    why; links start with `prefix`. Reads the thumbnail's header and the curve file.

    A sequence's done cell shows its animation (the first frame's thumbnail while there is
    none; a video plays, muted, with that thumbnail as its poster) linking to it (or to the
    first frame), and its last frame's curve and losses."""
    steps = [] if cell.frames else _snapshots(root, cell, snapshots or {}, prefix)
    shown = cell.animation or cell.thumb
    playing = cell.animation is not None and cell.animation.path.suffix in (".mp4", ".webm")
    if playing:
        shown = cell.thumb  # the first frame: the video's size, and its poster
    picture = None
    if cell.state == "done" and cell.task is not None and shown is not None:
        picture = _picture(root, shown, _label(cell), prefix)
    if picture is not None and playing:
        assert cell.animation is not None
        src = prefix + cell.animation.path.relative_to(root).as_posix()
        picture = replace(picture, video=src)
    if picture is None:
        return {
            "state": cell.state,
            "note": cell.note,
            "picture": None,
            "caption": "",
            "snapshots": steps,
        }
    assert cell.task is not None
    return {
        "state": cell.state,
        "link": prefix + _link(root, cell),
        "picture": picture,
        "caption": _caption(cell),
        "curve": _curve(read_curve(cell.task) if cell.curve else ()),
        "losses": _losses(cell.row),
        "snapshots": steps,
    }


def _label(cell: Cell) -> str:
    """What a cell's picture shows: 'chelsea x starry_night', 'coffee x starry_night'."""
    task = cell.task
    assert task is not None
    if not cell.frames or task.content.sequence is None:
        return task.label
    variant = f" [{task.variant.name}]" if task.variant.name else ""
    return f"{task.content.sequence.name} x {task.style.name}{variant}"


def _link(root: Path, cell: Cell) -> str:
    """Where a cell's picture leads, relative to the output folder: the output, or a
    sequence's animation (its first frame's output while there is none)."""
    if cell.animation is not None:
        return cell.animation.path.relative_to(root).as_posix()
    first = cell.frames[0].task if cell.frames else cell.task
    assert first is not None
    return first.relative_output


def _caption(cell: Cell) -> str:
    """A line above a sequence's losses saying what its picture and numbers are."""
    if not cell.frames:
        return ""
    count = len(cell.frames)
    shown = f"animation of {count} frames" if cell.animation else f"first of {count} frames"
    return f"{shown}; losses of the last frame"


def _snapshots(root: Path, cell: Cell, snapshots: Snapshots, prefix: str) -> list[dict[str, Any]]:
    """The task's progress snapshots (`save_every`), by step, linked from its cell."""
    if cell.task is None:
        return []
    return [
        {"step": step, "link": prefix + path.relative_to(root).as_posix()}
        for step, path in snapshots.get(cell.task.output, [])
    ]


def _picture(root: Path, thumb: Thumb, alt: str, prefix: str) -> _Picture | None:
    """Shown at the thumbnail size, even when the output is smaller: the grid stays even.
    None when the thumbnail cannot be read any more."""
    size = oriented_size(thumb.path)
    if size is None:
        return None
    scale = THUMB_SIZE / max(size)
    width, height = (max(1, round(side * scale)) for side in size)
    return _Picture(prefix + thumb.path.relative_to(root).as_posix(), width, height, alt)


def _curve(curve: Sequence[float]) -> dict[str, str] | None:
    if not curve:
        return None
    width, height = CURVE_SIZE
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in curve_points(curve, width, height))
    scale = "log scale" if any(math.isfinite(v) and v > 0 for v in curve) else "linear scale"
    title = f"total loss over {len(curve)} steps ({scale}): {curve[0]:.3g} to {curve[-1]:.3g}"
    return {"points": points, "title": title}


def curve_points(values: Sequence[float], width: float, height: float) -> list[tuple[float, float]]:
    """(x, y) per value in a width x height box, y down: log scale if any value is positive.

    Losses fall by orders of magnitude, so a linear scale shows only the first steps. Values
    the log cannot take (zero, negative, NaN) sit on the lowest positive one; infinities on the
    range's ends. Every value gets a point.
    """
    positive = [v for v in values if math.isfinite(v) and v > 0]
    finite = positive or [v for v in values if math.isfinite(v)] or [0.0]
    low, high = min(finite), max(finite)
    levels = [low if math.isnan(v) else min(max(v, low), high) for v in values]
    if positive:
        levels = [math.log10(v) for v in levels]
        low, high = math.log10(low), math.log10(high)
    pad = 2.0
    span = high - low
    last = max(len(values) - 1, 1)
    points = []
    for i, level in enumerate(levels):
        x = width / 2 if len(values) == 1 else i * width / last
        y = height / 2 if span == 0 else pad + (high - level) / span * (height - 2 * pad)
        points.append((x, y))
    return points


def _losses(row: ResultRow | None) -> list[list[str]]:
    """Lines of terms under a picture: the total; content, style, tv, temporal; time and
    steps."""
    if row is None:
        return []
    terms = [
        f"{name} {value:.3g}"
        for name, value in (
            ("content", row.content_loss),
            ("style", row.style_loss),
            ("tv", row.tv_loss),
            ("temporal", row.temporal_loss),
        )
        if value is not None and (name not in ("tv", "temporal") or value != 0)
    ]
    timing = [_duration(row.seconds)] if row.seconds is not None else []
    if row.steps is not None:
        timing.append(f"{row.steps} steps")
    total = [f"total {row.total_loss:.3g}"] if row.total_loss is not None else []
    return [line for line in (total, terms, [", ".join(timing)] if timing else []) if line]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f} s"
