"""The gallery page: `index.html`, rendered from a jinja2 template (templates/page.html,
its parts shared with compare.html in templates/macros.html) with autoescaping, so every
name and error on it is text, never markup.

Static HTML with relative links into the output folder: the folder can be copied or served
anywhere, and the page needs no network and no script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from nst_batch.gallery.grid import STATES, THUMB_SIZE, Cell, Grid, Header, Thumb
from nst_batch.layout import SHEET, display, snapshot_index
from nst_batch.manifest import Manifest
from nst_batch.results import ResultRow

CURVE_SIZE = (180, 40)  # the inline loss curve, px


@dataclass(frozen=True)
class _Picture:
    src: str  # relative to the output folder
    width: int
    height: int
    alt: str


def render_page(manifest: Manifest, grids: Sequence[Grid], compare: str | None = None) -> str:
    """The whole page as text, linking to the `compare` page if there is one. No timestamp:
    the same results give the same bytes. Cells of no task (`none`) are counted nowhere."""
    title = f"{manifest.path.name}: nst-batch gallery"
    counts = {s: sum(c.state == s for g in grids for r in g.cells for c in r) for s in STATES}
    root = manifest.output
    tasks = [c.task for g in grids for r in g.cells for c in r if c.task is not None]
    steps = snapshot_index(task.output for task in tasks)
    return template("page.html").render(
        title=title,
        total=sum(counts.values()),
        summary=", ".join(f"{n} {s}" for s, n in counts.items() if n),
        sheet=SHEET,
        compare=compare,
        curve_size=CURVE_SIZE,
        grids=[
            {
                "variant": grid.variant.name,
                "anchor": anchor(index),
                "styles": [header_view(root, h) for h in grid.styles],
                "rows": [
                    {
                        "header": header_view(root, h),
                        "cells": [cell_view(root, c, steps) for c in cells],
                    }
                    for h, cells in zip(grid.contents, grid.cells, strict=True)
                ],
            }
            for index, grid in enumerate(grids)
        ],
    )


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


def header_view(root: Path, header: Header) -> dict[str, Any]:
    file = display(header.spec.path.name)
    picture = None if header.thumb is None else _picture(root, header.thumb, file)
    return {"name": header.spec.name, "file": file, "picture": picture}


def cell_view(
    root: Path, cell: Cell, snapshots: dict[Path, list[tuple[int, Path]]] | None = None
) -> dict[str, Any]:
    shown = cell.state == "done" and cell.task is not None and cell.thumb is not None
    steps = _snapshots(root, cell, snapshots or {})
    if not shown:
        return {"state": cell.state, "note": cell.note, "picture": None, "snapshots": steps}
    assert cell.task is not None and cell.thumb is not None
    return {
        "state": cell.state,
        "link": cell.task.relative_output,
        "picture": _picture(root, cell.thumb, cell.task.label),
        "curve": _curve(cell.curve),
        "losses": _losses(cell.row),
        "snapshots": steps,
    }


def _snapshots(
    root: Path, cell: Cell, snapshots: dict[Path, list[tuple[int, Path]]]
) -> list[dict[str, Any]]:
    """The task's progress snapshots (`save_every`), by step, linked from its cell."""
    if cell.task is None:
        return []
    return [
        {"step": step, "link": path.relative_to(root).as_posix()}
        for step, path in snapshots.get(cell.task.output, [])
    ]


def _picture(root: Path, thumb: Thumb, alt: str) -> _Picture:
    """Shown at the thumbnail size, even when the output is smaller: the grid stays even."""
    scale = THUMB_SIZE / max(thumb.size)
    width, height = (max(1, round(side * scale)) for side in thumb.size)
    return _Picture(thumb.path.relative_to(root).as_posix(), width, height, alt)


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
    """Lines of terms under a picture: the total; content, style, tv; time and steps."""
    if row is None:
        return []
    terms = [
        f"{name} {value:.3g}"
        for name, value in (
            ("content", row.content_loss),
            ("style", row.style_loss),
            ("tv", row.tv_loss),
        )
        if value is not None and (name != "tv" or value != 0)
    ]
    timing = [_duration(row.seconds)] if row.seconds is not None else []
    if row.steps is not None:
        timing.append(f"{row.steps} steps")
    total = [f"total {row.total_loss:.3g}"] if row.total_loss is not None else []
    return [line for line in (total, terms, [", ".join(timing)] if timing else []) if line]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f} s"
