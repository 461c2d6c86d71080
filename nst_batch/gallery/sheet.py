"""The contact sheet: every grid of the gallery as one labelled image, for a quick look
over scp from a cluster without a browser. Pillow draws it (images.py reads and writes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from nst_batch.gallery.grid import Grid, Thumb
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


MAX_SHEET_PIXELS = 40_000_000  # a huge gallery gets smaller cells rather than a huge file
MAX_SHEET_SIDE = 65_000  # JPEG's limit is 65535


def sheet_layout(contents: int, styles: int, variants: int) -> SheetLayout:
    """The default layout, with cells shrunk (down to 32 px) until the sheet fits the limits."""
    layout = SheetLayout()
    while layout.cell > 32:
        width, height = layout.size(contents, styles, variants)
        if width * height <= MAX_SHEET_PIXELS and max(width, height) <= MAX_SHEET_SIDE:
            break
        layout = SheetLayout(cell=max(32, layout.cell * 4 // 5))
    return layout


_BACKGROUND = (255, 255, 255)
_EMPTY = (200, 200, 200)
_INK = (34, 34, 34)
_ALARM = (170, 0, 0)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def render_sheet(manifest: Manifest, grids: Sequence[Grid]) -> Image.Image:
    """Every grid stacked in one RGB image, each under a heading naming its variant."""
    contents, styles = len(manifest.contents), len(manifest.styles)
    layout = sheet_layout(contents, styles, len(grids))
    sheet = Image.new("RGB", layout.size(contents, styles, len(grids)), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big = _font(16)
    for index, grid in enumerate(grids):
        top = index * layout.section(contents)
        title = manifest.path.name + (f": {grid.variant.name}" if grid.variant.name else "")
        width = sheet.width - 2 * layout.gap
        draw.text((layout.gap, top + layout.gap), _fit(draw, title, big, width), _INK, big)
        for column, header in enumerate(grid.styles, start=1):
            _slot(sheet, draw, layout, layout.slot(top, 0, column), header.thumb, header.spec.name)
        for row, (header, cells) in enumerate(zip(grid.contents, grid.cells, strict=True), 1):
            _slot(sheet, draw, layout, layout.slot(top, row, 0), header.thumb, header.spec.name)
            for column, cell in enumerate(cells, start=1):
                corner = layout.slot(top, row, column)
                if cell.state == "none":
                    continue  # not one of the pairs: left blank
                if cell.state == "done":
                    total = cell.row.total_loss if cell.row else None
                    label = f"loss {total:.3g}" if total is not None else ""
                    _slot(sheet, draw, layout, corner, cell.thumb, label)
                else:
                    _slot(sheet, draw, layout, corner, None, "", word=cell.state)
    return sheet


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
