"""The contact sheet: every grid of the gallery as one labelled image, for a quick look
over scp from a cluster without a browser; a gallery too large for one gets numbered
sheets, each a block of one grid within the limits below. Pillow draws them (images.py
reads and writes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from nst_batch.gallery.grid import Cell, Grid, Thumb
from nst_batch.gallery.paging import Block, blocks, numbers
from nst_batch.images import IMAGE_ERRORS
from nst_batch.manifest import Manifest


@dataclass(frozen=True)
class SheetLayout:
    """Geometry of the contact sheet: per variant a heading band, then rows of slots.

    A slot is a `cell` x `cell` picture with a `label` band under it; slots are `gap` apart.
    Row 0 holds the styles, column 0 the content images.
    """

    cell: int = 160
    gap: int = 6
    label: int = 18
    heading: int = 28

    def size(self, contents: int, styles: int, variants: int) -> tuple[int, int]:
        width = self.gap + (styles + 1) * (self.cell + self.gap)
        return width, variants * self.section(contents)

    def section(self, contents: int) -> int:
        return self.heading + (contents + 1) * self.row

    @property
    def row(self) -> int:
        return self.cell + self.label + self.gap

    def slot(self, top: int, row: int, column: int) -> tuple[int, int]:
        """Top-left corner of a slot's picture, for a section starting at `top`."""
        return self.gap + column * (self.cell + self.gap), top + self.heading + row * self.row


# Each contact sheet stays within these, far under JPEG's 65,500 px a side: any viewer opens
# it at once, and one is redrawn in a fraction of a second when one of its cells changes. A
# gallery larger than one sheet gets numbered sheets of whole cells, never smaller cells.
MAX_SHEET_SIDE = 8_000
MAX_SHEET_PIXELS = 24_000_000


def fits(size: tuple[int, int]) -> bool:
    """Whether a sheet of this (width, height) is within the limits."""
    return max(size) <= MAX_SHEET_SIDE and size[0] * size[1] <= MAX_SHEET_PIXELS


def sheet_blocks(
    contents: int, styles: int, variants: int, layout: SheetLayout = SheetLayout()
) -> list[Block] | None:
    """The block each numbered sheet shows; None when the gallery fits on one sheet.

    A sheet holds as many style columns as its width allows, then as many content rows as
    its height and pixel count allow; each repeats the style row and the variant's heading.
    """
    if fits(layout.size(contents, styles, variants)):
        return None
    columns = max(1, min(styles, (MAX_SHEET_SIDE - layout.gap) // (layout.cell + layout.gap) - 1))
    width = layout.size(0, columns, 1)[0]
    height = min(MAX_SHEET_SIDE, MAX_SHEET_PIXELS // width)
    rows = max(1, (height - layout.heading) // layout.row - 1)
    return blocks(variants, contents, styles, rows, columns)


_BACKGROUND = (255, 255, 255)
_EMPTY = (200, 200, 200)
_INK = (34, 34, 34)
_ALARM = (170, 0, 0)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def render_sheet(manifest: Manifest, grids: Sequence[Grid], parts: Sequence[Block]) -> Image.Image:
    """The `parts` of the grids stacked in one RGB image, each under a heading naming its
    variant (and, for a part of a grid, its rows and styles): every grid whole for a gallery
    on one sheet, one block for a numbered sheet."""
    layout = SheetLayout()
    width = layout.size(0, len(parts[0].columns), 1)[0]
    height = sum(layout.section(len(part.rows)) for part in parts)
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big = _font(16)
    top = 0
    for part in parts:
        grid = grids[part.variant]
        title = _fit(draw, _title(manifest, grid, part), big, width - 2 * layout.gap)
        draw.text((layout.gap, top + layout.gap), title, _INK, big)
        for column, j in enumerate(part.columns, start=1):
            header = grid.styles[j]
            _slot(sheet, draw, layout, layout.slot(top, 0, column), header.thumb, header.name)
        for row, i in enumerate(part.rows, start=1):
            header = grid.contents[i]
            name = f"{header.name} ({header.frames} frames)" if header.frames else header.name
            _slot(sheet, draw, layout, layout.slot(top, row, 0), header.thumb, name)
            for column, j in enumerate(part.columns, start=1):
                _cell(sheet, draw, layout, layout.slot(top, row, column), grid.cells[i][j])
        top += layout.section(len(part.rows))
    return sheet


def _title(manifest: Manifest, grid: Grid, part: Block) -> str:
    """'gallery.yaml: style_weight-10', and for a part of the grid 'rows 43-84, styles 1-47'."""
    title = manifest.path.name + (f": {grid.variant.name}" if grid.variant.name else "")
    where = []
    if part.rows != range(len(grid.contents)):
        where.append(f"rows {numbers(part.rows)}")
    if part.columns != range(len(grid.styles)):
        where.append(f"styles {numbers(part.columns)}")
    return title + (f" ({', '.join(where)})" if where else "")


def _cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: SheetLayout,
    corner: tuple[int, int],
    cell: Cell,
) -> None:
    """A task's slot: its thumbnail and loss, or a grey box naming its state. A sequence's
    shows its first frame, labelled with its frame count (and the last frame's loss)."""
    if cell.state == "none":
        return  # not one of the pairs: left blank
    frames = ""
    if cell.frames:
        done = sum(frame.state == "done" for frame in cell.frames)
        count = len(cell.frames)
        frames = f"{count} frames" if done == count else f"{done}/{count} frames"
    if cell.state == "done":
        total = cell.row.total_loss if cell.row else None
        loss = f"loss {total:.3g}" if total is not None else ""
        label = ", ".join(part for part in (frames, loss) if part)
        _slot(sheet, draw, layout, corner, cell.thumb, label, word="no thumbnail")
    else:
        _slot(sheet, draw, layout, corner, None, frames, word=cell.state)


def _slot(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: SheetLayout,
    corner: tuple[int, int],
    thumb: Thumb | None,
    label: str,
    word: str = "unreadable",
) -> None:
    """A picture fitted into its square (or a grey box with `word`), `label` under it."""
    x, y = corner
    box = (x, y, x + layout.cell - 1, y + layout.cell - 1)
    picture = _fitted(thumb.path, layout.cell) if thumb else None
    font = _font(12)
    if picture is None:
        draw.rectangle(box, fill=_EMPTY)
        colour = _ALARM if word in ("failed", "interrupted") else _INK
        _centred(draw, (x + layout.cell / 2, y + layout.cell / 2), word, colour, _font(14))
    else:
        offset = ((layout.cell - picture.width) // 2, (layout.cell - picture.height) // 2)
        sheet.paste(picture, (x + offset[0], y + offset[1]))
    if label:
        text = _fit(draw, label, font, layout.cell)
        _centred(draw, (x + layout.cell / 2, y + layout.cell + layout.label / 2), text, _INK, font)


def _centred(
    draw: ImageDraw.ImageDraw,
    centre: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    font: _Font,
) -> None:
    """Text centred on a point, measured by its box: bitmap fonts know no anchors."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = centre[0] - (right - left) / 2 - left
    y = centre[1] - (bottom - top) / 2 - top
    draw.text((x, y), text, fill=colour, font=font)


def _fitted(path: Path, side: int) -> Image.Image | None:
    """The thumbnail scaled to fit a side x side square, aspect kept (up or down)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except IMAGE_ERRORS:
        return None
    scale = side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS)


@lru_cache(maxsize=8)
def _font(size: int) -> _Font:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: _Font,
    width: int,
) -> str:
    """`text`, cut short with '...' if it is wider than `width` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        short = text[:end].rstrip() + "..."
        if draw.textlength(short, font=font) <= width:
            return short
    return ""
