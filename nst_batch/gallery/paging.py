"""How a gallery too large for one page is cut into pages: rectangles of one variant's grid
(`Block`: a run of content rows by a run of style columns), and runs of the comparison's
pairs. The contact sheets (sheet.py) are cut into blocks the same way, to their own limits.

Blocks have fixed sizes (the last of a run is shorter), so a gallery that grows at its end
changes only its last pages, and a rebuild touches only the files whose cells changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A page of the grids shows at most this many content rows, style columns and cells: about
# 500 thumbnails and half a megabyte of HTML, which a browser opens at once. A gallery that
# fits within them stays on one page, `index.html`, as small galleries always were.
PAGE_ROWS = 100
PAGE_COLUMNS = 25
PAGE_CELLS = 500


@dataclass(frozen=True)
class Block:
    """Content rows `rows` by style columns `columns` of the `variant`-th grid."""

    variant: int
    rows: range
    columns: range


def blocks(variants: int, contents: int, styles: int, rows: int, columns: int) -> list[Block]:
    """Every variant's grid cut into blocks of at most `rows` by `columns`: variant by
    variant, then down the rows, then across the columns."""
    assert rows >= 1 and columns >= 1
    return [
        Block(
            variant, range(top, min(top + rows, contents)), range(left, min(left + columns, styles))
        )
        for variant in range(variants)
        for top in range(0, contents, rows)
        for left in range(0, styles, columns)
    ]


def whole(variants: int, contents: int, styles: int) -> list[Block]:
    """A block per variant holding its whole grid: the gallery on one page or sheet."""
    return [Block(variant, range(contents), range(styles)) for variant in range(variants)]


def page_blocks(variants: int, contents: int, styles: int) -> list[Block] | None:
    """The blocks of the gallery's pages; None when it fits on one page (`index.html`)."""
    small = contents <= PAGE_ROWS and styles <= PAGE_COLUMNS
    if small and variants * contents * styles <= PAGE_CELLS:
        return None
    columns = min(styles, PAGE_COLUMNS)
    rows = max(1, min(PAGE_ROWS, PAGE_CELLS // max(columns, 1)))
    return blocks(variants, contents, styles, rows, columns)


def compare_runs(pairs: int, variants: int) -> list[range] | None:
    """The runs of pairs on each page of the comparison (a row per pair, a cell per variant);
    None when they fit on one page (`compare.html`). The variants are never split: a sweep's
    point is to see them side by side."""
    rows = max(1, min(PAGE_ROWS, PAGE_CELLS // max(variants, 1)))
    if pairs <= rows:
        return None
    return [range(top, min(top + rows, pairs)) for top in range(0, pairs, rows)]


def span(names: Sequence[str], run: range) -> str:
    """A run of names as text: 'chelsea', or 'chelsea ... coffee' for more than one."""
    first, last = names[run.start], names[run.stop - 1]
    return first if len(run) == 1 else f"{first} ... {last}"


def numbers(run: range) -> str:
    """A run of rows or columns counted from 1: '7', or '101-200'."""
    return str(run.start + 1) if len(run) == 1 else f"{run.start + 1}-{run.stop}"
