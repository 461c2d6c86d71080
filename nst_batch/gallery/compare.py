"""The comparison page of a sweep: `compare.html`, written beside `index.html` when the
manifest has more than one variant. A row per content x style pair (the listed pairs, or
every one), a column per variant headed by its swept values (`style_weight 10`), each cell
the output with its losses and curve, as on the grids; so choosing a setting is a glance.
The column heads link to the variants' grids on `index.html`, which links back.

Rendered from templates/compare.html with the page's helpers, autoescaping on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nst_batch.gallery.grid import Grid
from nst_batch.gallery.page import CURVE_SIZE, anchor, cell_view, header_view, template
from nst_batch.layout import PAGE
from nst_batch.manifest import Manifest, Variant


def render_compare(manifest: Manifest, grids: Sequence[Grid]) -> str:
    """The comparison page as text, from the grids of every variant (at least two)."""
    root = manifest.output
    keys = swept_keys(grid.variant for grid in grids)
    rows = []
    first = grids[0]
    for i, content in enumerate(first.contents):
        for j, style in enumerate(first.styles):
            if first.cells[i][j].state == "none":
                continue  # not one of the pairs
            rows.append(
                {
                    "content": header_view(root, content),
                    "style": header_view(root, style),
                    "cells": [cell_view(root, grid.cells[i][j]) for grid in grids],
                }
            )
    return template("compare.html").render(
        title=f"{manifest.path.name}: nst-batch sweep, side by side",
        swept=", ".join(keys) or "the variants",
        page=PAGE,
        curve_size=CURVE_SIZE,
        columns=[
            {"label": variant_label(grid.variant, keys), "anchor": anchor(index)}
            for index, grid in enumerate(grids)
        ],
        rows=rows,
    )


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
