"""The comparison page of a sweep: `compare.html`, written beside `index.html` when the
manifest has more than one variant. A row per content x style pair (the listed pairs, or
every one), a column per variant headed by its swept values (`style_weight 10`), each cell
the output with its losses and curve, as on the grids; so choosing a setting is a glance.
The column heads link to the variants' grids on `index.html`, which links back.

Too many pairs for one page (paging.compare_runs) go on pages of `pages/`
(`compare-001.html` ...), and `compare.html` becomes their table of contents.

Rendered from templates/compare.html with the page's helpers, autoescaping on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nst_batch.gallery.grid import Grid
from nst_batch.gallery.page import (
    CURVE_SIZE,
    UP,
    Nav,
    anchor,
    cell_view,
    count_states,
    header_view,
    summary,
    template,
)
from nst_batch.layout import PAGE
from nst_batch.manifest import Manifest, Variant

Position = tuple[int, int]  # a pair's (content, style) indices into the grids


def compare_pairs(grids: Sequence[Grid]) -> list[Position]:
    """The pairs the comparison shows, in grid order: every cell that is a task."""
    first = grids[0]
    return [
        (i, j)
        for i, line in enumerate(first.cells)
        for j, cell in enumerate(line)
        if cell.state != "none"  # not one of the pairs
    ]


def render_compare(
    manifest: Manifest, grids: Sequence[Grid], pairs: Sequence[Position], nav: Nav | None = None
) -> str:
    """The comparison of `pairs` as text, from the grids of every variant (at least two):
    all of it on `compare.html` (`nav` None), or a run of pairs on a page of `pages/`."""
    root = manifest.output
    prefix = UP if nav else ""
    keys = swept_keys(grid.variant for grid in grids)
    first = grids[0]
    rows = [
        {
            "content": header_view(root, first.contents[i], prefix),
            "style": header_view(root, first.styles[j], prefix),
            "cells": [cell_view(root, grid.cells[i][j], prefix=prefix) for grid in grids],
        }
        for i, j in pairs
    ]
    title = f"{manifest.path.name}: nst-batch sweep, side by side"
    return template("compare.html").render(
        title=title + (f", page {nav.number}" if nav else ""),
        scope=" on this page" if nav else "",
        swept=", ".join(keys) or "the variants",
        page=prefix + PAGE,
        nav=nav,
        curve_size=CURVE_SIZE,
        columns=[
            {"label": variant_label(grid.variant, keys), "anchor": anchor(index)}
            for index, grid in enumerate(grids)
        ],
        rows=rows,
    )


def compare_contents_view(
    manifest: Manifest, grids: Sequence[Grid], pages: Sequence[tuple[str, Sequence[Position]]]
) -> dict[str, Any]:
    """What `compare.html` shows when the comparison is on several pages: a link to each of
    its `pages` (name in the output folder, pairs) with its first and last pair and counts.
    Cheap: no file is read."""
    keys = swept_keys(grid.variant for grid in grids)
    first = grids[0]
    entries = []
    for number, (name, pairs) in enumerate(pages, start=1):
        ends = [f"{first.contents[i].name} x {first.styles[j].name}" for i, j in pairs]
        names = ends[0] if len(ends) == 1 else f"{ends[0]} ... {ends[-1]}"
        counts = count_states(grid.cells[i][j] for grid in grids for i, j in pairs)
        entries.append(
            {"href": name, "label": f"page {number}", "detail": f"{names}: {summary(counts)}"}
        )
    count = sum(len(pairs) for _, pairs in pages)
    return {
        "title": f"{manifest.path.name}: nst-batch sweep, side by side",
        "intro": (
            f"{count} {'pair' if count == 1 else 'pairs'} x {len(grids)} variants, side by "
            f"side: {', '.join(keys) or 'the variants'}."
        ),
        "links": [{"href": PAGE, "text": "The grid of each variant"}],
        "sheets": [],
        "groups": [{"heading": "", "anchor": "pairs", "entries": entries}],
    }


def swept_keys(variants: Any) -> list[str]:
    """The sweep's keys that take more than one value, in the manifest's order."""
    values: dict[str, set[str]] = {}
    for variant in variants:
        for key, value in variant.overrides.items():
            values.setdefault(key, set()).add(value_text(key, value))
    return [key for key, seen in values.items() if len(seen) > 1]


def variant_label(variant: Variant, keys: Sequence[str]) -> str:
    """A column head: the swept values, 'style_weight 10, tv_weight 1e+06'."""
    overrides: Mapping[str, Any] = variant.overrides
    shown = [f"{key} {value_text(key, overrides[key])}" for key in keys if key in overrides]
    return ", ".join(shown) or variant.name


def value_text(key: str, value: Any) -> str:
    """A swept value as the manifest wrote it; an init_image by its file name."""
    if key == "init_image" and isinstance(value, str):
        return Path(value).name
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return " ".join(value_text(key, v) for v in value)
    return str(value)
