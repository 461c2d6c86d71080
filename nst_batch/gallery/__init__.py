"""The gallery of an output folder, rebuilt from its results: `index.html` (page.py), one
grid per variant with a row per content image and a column per style, each output's
thumbnail, final losses, time, loss curve and state; with a sweep, `compare.html`
(compare.py), each pair's variants side by side; and `contact_sheet.jpg` (sheet.py), the
grids as one image. All come from the merged results, so they are right after sharded runs
too; the grids themselves are grid.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_batch.gallery.compare import render_compare
from nst_batch.gallery.grid import THUMB_QUALITY, build_grids
from nst_batch.gallery.page import render_page
from nst_batch.gallery.sheet import render_sheet
from nst_batch.images import save_image, save_text
from nst_batch.layout import COMPARE, PAGE, SHEET
from nst_batch.manifest import Manifest
from nst_batch.plan import Task
from nst_batch.results import ResultRow


@dataclass(frozen=True)
class GalleryFiles:
    """What `write_gallery` wrote: the page, the contact sheet and, with more than one
    variant, the comparison page."""

    page: Path
    sheet: Path
    compare: Path | None = None


def write_gallery(
    manifest: Manifest, tasks: Sequence[Task], rows: Iterable[ResultRow]
) -> GalleryFiles:
    """Write `<output>/index.html` and `<output>/contact_sheet.jpg` for these tasks, and with
    more than one variant `<output>/compare.html` (else remove one an earlier sweep left).

    `rows` are merged results (`nst_batch.results.merge`): each task is shown by its latest
    row, matched by (content, style, variant) names. A row made with another key is outdated;
    a task without a row is pending. Thumbnails are remade only when their source is newer.
    Every file is written atomically; ImageError or OSError when the folder refuses a write.
    """
    grids = build_grids(manifest, tasks, rows)
    root = manifest.output
    compare = root / COMPARE if len(grids) > 1 else None
    files = GalleryFiles(root / PAGE, root / SHEET, compare)
    if compare is not None:
        save_text(render_compare(manifest, grids), compare, root=root)
    else:
        (root / COMPARE).unlink(missing_ok=True)  # a link is removed, never followed
    save_text(render_page(manifest, grids, COMPARE if compare else None), files.page, root=root)
    save_image(render_sheet(manifest, grids), files.sheet, quality=THUMB_QUALITY, root=root)
    return files
