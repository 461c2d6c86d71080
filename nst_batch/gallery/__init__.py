"""The gallery of an output folder, rebuilt from its results: `index.html` (page.py), one
grid per variant with a row per content image (or sequence) and a column per style, each
output's thumbnail, final losses, time, loss curve and state; with a sweep, `compare.html`
(compare.py), each pair's variants side by side; and `contact_sheet.jpg` (sheet.py), the
grids as one image. All come from the merged results, so they are right after sharded runs
too; the grids themselves are grid.py's.

A gallery too large for one page or sheet is cut into pages under `pages/` (with
`index.html` and `compare.html` as their tables of contents) and numbered contact sheets
(paging.py, sheet.py). A sequence is one row, and each of its chains (its frames in one
style and variant) one cell, which shows the chain's animation: each chain gets one once
its frames are all done (animation.py). Every file is built on its own: one that cannot be
written is reported with its cause and the others are still written. A file whose inputs
did not change since it was written (record.py, and for an animation its frames' stamps
and its own metadata) is not written again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nst_batch import filecache
from nst_batch.filecache import FileCache
from nst_batch.gallery.animation import update_animations
from nst_batch.gallery.compare import (
    Position,
    compare_contents_view,
    compare_pairs,
    render_compare,
    swept_keys,
    variant_label,
)
from nst_batch.gallery.grid import THUMB_QUALITY, Grid, build_grids
from nst_batch.gallery.page import Live, Nav, contents_view, render_page, template
from nst_batch.gallery.paging import Block, compare_runs, page_blocks, whole
from nst_batch.gallery.record import Print, Record, cell_print, fingerprint, header_print
from nst_batch.gallery.sheet import render_sheet, sheet_blocks
from nst_batch.images import IMAGE_ERRORS, ImageError, save_image, save_text
from nst_batch.layout import (
    COMPARE,
    PAGE,
    PAGES,
    PageKind,
    UnsafeWrite,
    gallery_pages,
    gallery_record,
    numbered_sheets,
    page_path,
    relative_to,
    remove_empty_folder,
    remove_file,
    sheet_path,
    snapshot_index,
)
from nst_batch.manifest import Manifest
from nst_batch.plan import Task
from nst_batch.results import ResultRow

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Failure", "GalleryFiles", "Live", "write_gallery"]


@dataclass(frozen=True)
class Failure:
    """A part of the gallery that could not be written, and why (naming the file)."""

    what: str  # a file relative to the output folder, or 'N thumbnails'
    why: str


@dataclass(frozen=True)
class GalleryFiles:
    """The gallery's files: the page (the entry point), the contact sheets and, with more
    than one variant, the comparison page; the pages under `pages/` when it is too large
    for one page; and what could not be written."""

    page: Path
    sheets: tuple[Path, ...]
    compare: Path | None = None
    pages: tuple[Path, ...] = ()
    failures: tuple[Failure, ...] = ()


def write_gallery(
    manifest: Manifest,
    tasks: Sequence[Task],
    rows: Iterable[ResultRow],
    files: FileCache | None = None,
    live: Live | None = None,
) -> GalleryFiles:
    """Write the gallery of these tasks into the output folder: `index.html` and the contact
    sheet(s), with more than one variant `compare.html`, for a large gallery the pages under
    `pages/`, and the sequences' animations; remove those an earlier, other gallery left and
    these do not replace.

    `rows` are merged results (`nst_batch.results.merge`): each task is shown by its latest
    row, matched by (content, style, variant) names. A row made with another key is outdated;
    a task without a row is pending. An animation is made of outputs on disk that record
    their tasks' keys, as `files` (the output folder's file cache when None) knows them.
    Thumbnails are remade only when their source is newer; pages and sheets only when what
    they show changed. Every file is written atomically, on its own: what cannot be written
    is in the result's `failures`, never raised. `live`: a run is going on; `index.html` says
    so and reloads itself in the browser (a gallery written without it stops that).
    """
    root = manifest.output
    unwritten: list[str] = []
    writer = _Writer(root, Record.load(root))
    animations = update_animations(tasks, _on_disk(root, files), writer.failed)
    grids = build_grids(manifest, tasks, rows, unwritten, animations)
    if unwritten:
        more = f" (and {len(unwritten) - 1} more)" if len(unwritten) > 1 else ""
        plural = "s" * (len(unwritten) != 1)
        writer.failures.append(Failure(f"{len(unwritten)} thumbnail{plural}", unwritten[0] + more))
    gallery = _Gallery(manifest, grids)
    sheets = _sheets(gallery)
    compare = root / COMPARE if len(grids) > 1 else None
    pages = _write_pages(writer, gallery, [p for p, _ in sheets], compare, live)
    compare_pages = _write_compare(writer, gallery) if compare else []
    for path, parts in sheets:
        writer.sheet(
            path, gallery.sheet_print(parts), partial(render_sheet, manifest, grids, parts)
        )
    wanted = [root / PAGE, *(p for p, _ in sheets), *pages, *compare_pages]
    if compare is not None:
        wanted.append(compare)
    _remove_stale(writer, wanted)
    writer.save()
    return GalleryFiles(
        root / PAGE,
        tuple(p for p, _ in sheets),
        compare,
        tuple(pages + compare_pages),
        tuple(writer.failures),
    )


def _on_disk(root: Path, files: FileCache | None) -> Callable[[Task], bool]:
    """Whether a task's output is on disk and records its key; the file cache is loaded on
    the first question (a gallery without sequences asks none)."""
    known: list[FileCache] = [] if files is None else [files]

    def done(task: Task) -> bool:
        if not known:
            known.append(filecache.load(root, None))
        return known[0].output_key(task.output, task.relative_output) == task.key

    return done


@dataclass
class _Writer:
    """Writes each file of the gallery unless the record has it up to date; notes failures."""

    root: Path
    record: Record
    failures: list[Failure] = field(default_factory=list)

    def page(self, path: Path, key: str, render: Callable[[], str]) -> None:
        """Write the page `render()` gives at `path`, unless it is up to date with `key`."""
        self._write(path, key, lambda: save_text(render(), path, root=self.root))

    def sheet(self, path: Path, key: str, render: Callable[[], Image.Image]) -> None:
        """Write the contact sheet `render()` draws at `path`, unless up to date with `key`."""
        self._write(
            path, key, lambda: save_image(render(), path, quality=THUMB_QUALITY, root=self.root)
        )

    def _write(self, path: Path, key: str, make: Callable[[], None]) -> None:
        if self.record.fresh(path, key):
            return
        try:
            make()
        except (*IMAGE_ERRORS, UnsafeWrite) as exc:
            self.record.forget(path)
            self.failed(path, exc)
            return
        self.record.wrote(path, key)

    def remove(self, path: Path) -> None:
        """Remove a file an earlier gallery wrote and this one does not (never through a link)."""
        try:
            remove_file(path, self.root)
        except OSError as exc:
            self.failed(path, exc, "cannot remove it: ")

    def failed(self, path: Path, exc: BaseException, doing: str = "") -> None:
        what = relative_to(self.root, path) or str(path)
        self.failures.append(Failure(what, doing + _why(exc)))

    def save(self) -> None:
        """Save the record, if it changed."""
        try:
            self.record.save()
        except (OSError, UnsafeWrite) as exc:
            self.failed(gallery_record(self.root), exc)


def _why(exc: BaseException) -> str:
    """The cause of a failure in one line: our own messages name the file and the reason; an
    OS error gets its reason and file; anything else its type, so that no text of Pillow's
    stands alone."""
    if isinstance(exc, ImageError | UnsafeWrite):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"


class _Gallery:
    """The grids with the prints of their cells and headers, computed once (linear in the
    cells, from stat calls already made): the inputs of every page's and sheet's fingerprint."""

    def __init__(self, manifest: Manifest, grids: list[Grid]) -> None:
        self.manifest = manifest
        self.grids = grids
        self.root = manifest.output
        tasks = [c.task.output for g in grids for line in g.cells for c in line if c.task]
        self.snapshots = snapshot_index(tasks)
        first = grids[0]
        self.contents = [header_print(h) for h in first.contents]
        self.styles = [header_print(h) for h in first.styles]
        self.cells = [
            [[cell_print(c, self.snapshots) for c in line] for line in grid.cells] for grid in grids
        ]
        keys = swept_keys(g.variant for g in grids)
        self.variants = [(g.variant.name, variant_label(g.variant, keys)) for g in grids]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(variants, contents, styles)."""
        return len(self.grids), len(self.contents), len(self.styles)

    def block_print(self, part: Block) -> Print:
        """What a block of a grid shows."""
        return (
            self.manifest.path.name,
            self.shape,
            self.variants[part.variant],
            (part.rows.start, part.rows.stop, part.columns.start, part.columns.stop),
            [self.contents[i] for i in part.rows],
            [self.styles[j] for j in part.columns],
            [self.cells[part.variant][i][j] for i in part.rows for j in part.columns],
        )

    def pairs_print(self, pairs: Sequence[Position]) -> Print:
        """What a run of the comparison's pairs shows."""
        return (
            self.manifest.path.name,
            self.variants,
            [
                (self.contents[i], self.styles[j], [cells[i][j] for cells in self.cells])
                for i, j in pairs
            ],
        )

    def sheet_print(self, parts: Sequence[Block]) -> str:
        """The fingerprint of a contact sheet of these parts."""
        return fingerprint("sheet", [self.block_print(part) for part in parts])


def _sheets(gallery: _Gallery) -> list[tuple[Path, list[Block]]]:
    """Each contact sheet and the parts of the grids it shows: one sheet of every grid whole,
    or numbered sheets of a block each."""
    variants, contents, styles = gallery.shape
    root = gallery.root
    blocks = sheet_blocks(contents, styles, variants)
    if blocks is None:
        return [(sheet_path(root, None), whole(variants, contents, styles))]
    return [(sheet_path(root, n), [block]) for n, block in enumerate(blocks, start=1)]


def _write_pages(
    writer: _Writer,
    gallery: _Gallery,
    sheets: Sequence[Path],
    compare: Path | None,
    live: Live | None = None,
) -> list[Path]:
    """Write `index.html`: the whole gallery, or the table of contents of its pages under
    `pages/`, which are written too; the pages written (none for one page)."""
    root, manifest, grids = gallery.root, gallery.manifest, gallery.grids
    sheet_names = [path.name for path in sheets]
    compare_name = compare.name if compare else None
    blocks = page_blocks(*gallery.shape)
    if blocks is None:
        parts = whole(*gallery.shape)
        key = fingerprint(
            "index", sheet_names, compare_name, [gallery.block_print(p) for p in parts], live
        )
        snapshots = gallery.snapshots
        render = partial(
            render_page, manifest, grids, parts, snapshots, sheet_names, compare_name, live=live
        )
        writer.page(root / PAGE, key, render)
        return []
    paths = _numbered(root, "page", len(blocks))
    for number, (path, block) in enumerate(zip(paths, blocks, strict=True)):
        nav = _nav(paths, number, PAGE)
        key = fingerprint("page", nav, compare_name, gallery.block_print(block))
        render = partial(
            render_page, manifest, grids, [block], gallery.snapshots, (), compare_name, nav
        )
        writer.page(path, key, render)
    names = [path.relative_to(root).as_posix() for path in paths]
    pages = list(zip(names, blocks, strict=True))
    view = {**contents_view(manifest, grids, pages, sheet_names, compare_name), "live": live}
    writer.page(root / PAGE, fingerprint("contents", view), partial(_contents, view))
    return paths


def _write_compare(writer: _Writer, gallery: _Gallery) -> list[Path]:
    """Write `compare.html`: the whole comparison, or the table of contents of its pages
    under `pages/`, which are written too; the pages written (none for one page)."""
    root, manifest, grids = gallery.root, gallery.manifest, gallery.grids
    pairs = compare_pairs(grids)
    runs = compare_runs(len(pairs), len(grids))
    if runs is None:
        key = fingerprint("compare", gallery.pairs_print(pairs))
        writer.page(root / COMPARE, key, partial(render_compare, manifest, grids, pairs))
        return []
    paths = _numbered(root, "compare", len(runs))
    chosen = [pairs[run.start : run.stop] for run in runs]
    for number, (path, some) in enumerate(zip(paths, chosen, strict=True)):
        nav = _nav(paths, number, COMPARE)
        key = fingerprint("compare-page", nav, gallery.pairs_print(some))
        writer.page(path, key, partial(render_compare, manifest, grids, some, nav))
    names = [path.relative_to(root).as_posix() for path in paths]
    view = compare_contents_view(manifest, grids, list(zip(names, chosen, strict=True)))
    writer.page(root / COMPARE, fingerprint("contents", view), partial(_contents, view))
    return paths


def _contents(view: dict[str, Any]) -> str:
    """A table of contents (`index.html` or `compare.html` of a gallery on several pages)."""
    return template("contents.html").render(**view)


def _numbered(root: Path, kind: PageKind, count: int) -> list[Path]:
    return [page_path(root, kind, number) for number in range(1, count + 1)]


def _nav(paths: Sequence[Path], index: int, entry: str) -> Nav:
    """The links of the index-th (from 0) of `paths` (in `pages/`) to its neighbours and to
    the `entry` page in the output folder."""
    previous = paths[index - 1].name if index > 0 else None
    following = paths[index + 1].name if index + 1 < len(paths) else None
    return Nav(index + 1, previous, following, f"../{entry}")


def _remove_stale(writer: _Writer, wanted: Sequence[Path]) -> None:
    """Remove the gallery files of an earlier, other gallery: numbered sheets beyond these,
    the single sheet of a gallery now split (or the numbered ones of one now whole), pages
    beyond these, and `compare.html` without a sweep; then forget them in the record."""
    root = writer.root
    keep = set(wanted)
    ours = [*numbered_sheets(root), sheet_path(root, None), root / COMPARE, *gallery_pages(root)]
    for path in ours:
        if path not in keep:
            writer.remove(path)
    if not any(path.parent == root / PAGES for path in wanted):
        remove_empty_folder(root / PAGES, root)
    writer.record.keep(wanted)
