"""The gallery page and contact sheet of an output folder, rebuilt from its results.

`<output>/index.html` shows one grid per variant (a row per content image, a column per
style) with each output's thumbnail, final losses, time, loss curve and state;
`<output>/contact_sheet.jpg` is the same grid as one image. Both are regenerated from the
merged results, so they are right after sharded runs too. The page is static HTML with
relative links into the output folder (thumbnails in `<output>/thumbs/`): the folder can be
copied or served anywhere and the page needs no network and no script.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

from nst_batch.images import ImageError, load_image, save_image, save_text
from nst_batch.layout import (
    PAGE,
    SHEET,
    curve_path,
    display,
    header_thumbnail,
    output_thumbnail,
)
from nst_batch.manifest import ImageSpec, Manifest, Variant
from nst_batch.plan import Task
from nst_batch.results import ResultRow

THUMB_SIZE = 200  # longest side of a thumbnail, px
THUMB_QUALITY = 85
CURVE_SIZE = (180, 40)  # the inline loss curve, px

State = Literal["done", "failed", "interrupted", "outdated", "missing", "pending"]
STATES: tuple[State, ...] = ("done", "failed", "interrupted", "outdated", "missing", "pending")


@dataclass(frozen=True)
class GalleryFiles:
    """What `write_gallery` wrote: the page and the contact sheet."""

    page: Path
    sheet: Path


@dataclass(frozen=True)
class Thumb:
    path: Path  # absolute, inside <output>/thumbs
    size: tuple[int, int]


@dataclass(frozen=True)
class Header:
    """A content or style image at the edge of a grid."""

    spec: ImageSpec
    thumb: Thumb | None  # None: the image cannot be read


@dataclass(frozen=True)
class Cell:
    state: State
    task: Task | None
    row: ResultRow | None
    note: str = ""  # the reason for any state but done
    thumb: Thumb | None = None
    curve: tuple[float, ...] = ()


@dataclass(frozen=True)
class Grid:
    variant: Variant
    contents: tuple[Header, ...]
    styles: tuple[Header, ...]
    cells: tuple[tuple[Cell, ...], ...]  # [content][style]


def write_gallery(
    manifest: Manifest, tasks: Sequence[Task], rows: Iterable[ResultRow]
) -> GalleryFiles:
    """Write `<output>/index.html` and `<output>/contact_sheet.jpg` for these tasks.

    `rows` are merged results (`nst_batch.results.merge`): each task is shown by its latest
    row, matched by (content, style, variant) names. A row made with another key is outdated;
    a task without a row is pending. Thumbnails are remade only when their source is newer.
    Every file is written atomically; ImageError or OSError when the folder refuses a write.
    """
    grids = build_grids(manifest, tasks, rows)
    files = GalleryFiles(manifest.output / PAGE, manifest.output / SHEET)
    root = manifest.output
    save_text(render_page(manifest, grids), files.page, root=root)
    save_image(render_sheet(manifest, grids), files.sheet, quality=THUMB_QUALITY, root=root)
    return files


# -- the grids ----------------------------------------------------------------------------


def build_grids(manifest: Manifest, tasks: Sequence[Task], rows: Iterable[ResultRow]) -> list[Grid]:
    """One grid per variant, in manifest order, with thumbnails made where needed."""
    latest = {(r.content, r.style, r.variant): r for r in rows}
    by_name = {(t.content.name, t.style.name, t.variant.name): t for t in tasks}
    contents = tuple(_header(spec, "content", manifest) for spec in manifest.contents)
    styles = tuple(_header(spec, "style", manifest) for spec in manifest.styles)
    grids = []
    for variant in manifest.variants:
        cells = []
        for content in manifest.contents:
            line = []
            for style in manifest.styles:
                names = (content.name, style.name, variant.name)
                line.append(_cell(by_name.get(names), latest.get(names)))
            cells.append(tuple(line))
        grids.append(Grid(variant, contents, styles, tuple(cells)))
    return grids


def _header(spec: ImageSpec, kind: Literal["content", "style"], manifest: Manifest) -> Header:
    root = manifest.output
    thumb = _thumbnail(
        spec.path,
        header_thumbnail(root, kind, spec.name),
        lambda p: load_image(p, manifest.max_pixels),
        root,
    )
    return Header(spec, thumb)


def _cell(task: Task | None, row: ResultRow | None) -> Cell:
    if task is None or row is None:
        return Cell("pending", task, None, "not yet run")
    if row.key != task.key:
        return Cell("outdated", task, row, "made with other inputs or settings; rerun to redo")
    if row.status in ("failed", "interrupted"):
        return Cell(row.status, task, row, row.error or row.status)
    thumb = _thumbnail(
        task.output, output_thumbnail(task.folder, task.relative_output), _open_output, task.folder
    )
    if thumb is None:
        return Cell("missing", task, row, "the output file is missing or unreadable; rerun")
    return Cell("done", task, row, thumb=thumb, curve=_curve(task))


# What Pillow's decoders raise for a file that is not a complete image, besides ImageError.
_UNREADABLE = (ImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _open_output(path: Path) -> Image.Image:
    with Image.open(path) as image:  # our own output: no limits or colour profiles to handle
        return image.convert("RGB")


def _thumbnail(
    source: Path, thumb: Path, load: Callable[[Path], Image.Image], root: Path
) -> Thumb | None:
    """The thumbnail of `source`, remade only when the source is newer; None if unreadable."""
    try:
        source_time = source.stat().st_mtime_ns
        stale = not thumb.is_file() or thumb.stat().st_mtime_ns < source_time
    except OSError:
        return None
    if stale:
        try:
            image = load(source)
        except _UNREADABLE:
            return None
        image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
        save_image(image, thumb, quality=THUMB_QUALITY, root=root)
    try:
        with Image.open(thumb) as image:
            return Thumb(thumb, image.size)
    except _UNREADABLE:
        return None


def _curve(task: Task) -> tuple[float, ...]:
    """The task's total loss per step, if its curve file was written for this very key."""
    try:
        data = json.loads(curve_path(task.output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    if not isinstance(data, dict) or data.get("key") != task.key:
        return ()  # another version's curve, left by an older run of this output
    values = data.get("total_loss")
    if not isinstance(values, list):
        return ()
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return ()
    return tuple(float(v) for v in values)


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


# -- the page -----------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.15em; margin: 1.5em 0 .5em; }
table.grid { border-collapse: collapse; }
.grid th, .grid td { border: 1px solid #ddd; padding: 6px; vertical-align: top;
  text-align: center; width: 224px; background: #fff; }
.grid th.corner { vertical-align: bottom; color: #777; font-weight: normal; }
.grid img { display: block; margin: 0 auto; max-width: 200px; max-height: 200px; }
.name { margin-top: 4px; overflow-wrap: anywhere; }
.box { width: 200px; height: 120px; margin: 0 auto; display: flex; align-items: center;
  justify-content: center; background: #c8c8c8; color: #444; font-weight: 600; }
.note { margin: 4px 0 0; font-size: 12px; text-align: left; overflow-wrap: anywhere;
  max-height: 9em; overflow: auto; }
.failed .note, .failed .box, .interrupted .box { color: #a00; }
.losses { margin: 2px 0 0; font-size: 12px; color: #555; font-variant-numeric: tabular-nums; }
.term { white-space: nowrap; }
svg.curve { display: block; margin: 4px auto 0; background: #f3f5f8; }
svg.curve polyline { fill: none; stroke: #1565c0; stroke-width: 1.5; }
"""


def render_page(manifest: Manifest, grids: Sequence[Grid]) -> str:
    """The whole page as text. No timestamp: the same results give the same bytes."""
    title = f"{manifest.path.name}: nst-batch gallery"
    counts = {s: sum(c.state == s for g in grids for r in g.cells for c in r) for s in STATES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    sections = "\n".join(_section(manifest.output, grid) for grid in grids)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_text(title)}</h1>\n"
        f'<p class="summary">{sum(counts.values())} tasks: {summary}. '
        f'<a href="{_url(SHEET)}">Contact sheet</a>.</p>\n'
        f"{sections}\n</body>\n</html>\n"
    )


def _section(root: Path, grid: Grid) -> str:
    heading = f"<h2>{_text(grid.variant.name)}</h2>\n" if grid.variant.name else ""
    head = "".join(f'<th class="style">{_header_html(root, h)}</th>' for h in grid.styles)
    body = "".join(
        f'<tr><th class="content">{_header_html(root, header)}</th>'
        + "".join(_cell_html(root, cell) for cell in cells)
        + "</tr>\n"
        for header, cells in zip(grid.contents, grid.cells, strict=True)
    )
    return (
        f'<section class="variant" data-variant="{_text(grid.variant.name)}">\n{heading}'
        f'<table class="grid">\n<thead><tr><th class="corner">content \\ style</th>{head}'
        f"</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n</section>"
    )


def _header_html(root: Path, header: Header) -> str:
    name, file = _text(header.spec.name), display(header.spec.path.name)
    if header.thumb is None:
        picture = '<div class="box">unreadable</div>'
    else:
        picture = _img(root, header.thumb, file)
    return f'{picture}<div class="name" title="{_text(file)}">{name}</div>'


def _cell_html(root: Path, cell: Cell) -> str:
    opening = f'<td class="cell {cell.state}" data-state="{cell.state}">'
    if cell.state != "done" or cell.task is None or cell.thumb is None:
        note = f'<p class="note">{_text(cell.note)}</p>' if cell.note else ""
        return f'{opening}<div class="box">{cell.state}</div>{note}</td>'
    link = _url(cell.task.relative_output)
    picture = _img(root, cell.thumb, cell.task.label)
    return f'{opening}<a href="{link}">{picture}</a>{_svg(cell.curve)}{_losses(cell.row)}</td>'


def _img(root: Path, thumb: Thumb, alt: str) -> str:
    """Shown at the thumbnail size, even when the output is smaller: the grid stays even."""
    src = _url(thumb.path.relative_to(root).as_posix())
    scale = THUMB_SIZE / max(thumb.size)
    width, height = (max(1, round(side * scale)) for side in thumb.size)
    return f'<img src="{src}" width="{width}" height="{height}" alt="{_text(alt)}">'


def _svg(curve: Sequence[float]) -> str:
    if not curve:
        return ""
    width, height = CURVE_SIZE
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in curve_points(curve, width, height))
    scale = "log scale" if any(math.isfinite(v) and v > 0 for v in curve) else "linear scale"
    title = f"total loss over {len(curve)} steps ({scale}): {curve[0]:.3g} to {curve[-1]:.3g}"
    return (
        f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img"><title>{_text(title)}</title><polyline points="{points}"/></svg>'
    )


def _losses(row: ResultRow | None) -> str:
    if row is None:
        return ""
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
    lines = [
        f"total {row.total_loss:.3g}" if row.total_loss is not None else "",
        " · ".join(terms),
        ", ".join(timing),
    ]
    shown = "<br>".join(
        " · ".join(f'<span class="term">{_text(term)}</span>' for term in line.split(" · "))
        for line in lines
        if line
    )
    return f'<p class="losses">{shown}</p>' if shown else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f} s"


def _text(value: str) -> str:
    """Escaped for HTML text and for attribute values in double or single quotes."""
    return html.escape(value, quote=True)


def _url(relative: str) -> str:
    """A relative URL for href/src: percent-encoded (spaces, '#', '?', '%'), then escaped."""
    return html.escape(quote(relative, safe="/"), quote=True)


# -- the contact sheet --------------------------------------------------------------------


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
    except _UNREADABLE:
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
