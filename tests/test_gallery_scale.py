"""Tests of large galleries: numbered contact sheets within limits, pages under `pages/` with
an index, a paginated comparison, a rebuild that touches only what changed, and failures of
one file that leave the others written.

The galleries are made by hand, not by style transfer: tiny distinct content images, an
output of 64 x 48 px and a done result row per task, so 2,000 tasks take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from test_browser import _probe
from test_gallery import PageReader

from nst_batch import layout
from nst_batch.cli import main
from nst_batch.gallery import Failure, GalleryFiles, write_gallery
from nst_batch.gallery.paging import PAGE_ROWS
from nst_batch.gallery.sheet import MAX_SHEET_PIXELS, MAX_SHEET_SIDE
from nst_batch.layout import COMPARE, PAGE, SHEET
from nst_batch.manifest import Manifest, load_manifest
from nst_batch.plan import Task, plan
from nst_batch.results import ResultRow, task_row, write_table

ROWS_PER_SHEET = 42  # with one style: (8,000 px - heading) // row height - the style row


@dataclass(frozen=True)
class Scale:
    """A hand-made gallery: its manifest, tasks and a result row per task."""

    manifest: Manifest
    tasks: list[Task]
    rows: list[ResultRow]

    @property
    def out(self) -> Path:
        return self.manifest.output

    def write(self) -> GalleryFiles:
        return write_gallery(self.manifest, self.tasks, self.rows)


def _colour(index: int) -> tuple[int, int, int]:
    return (index * 37 % 256, index * 91 % 256, index * 53 % 256)


def _scale(folder: Path, contents: int, styles: int = 1, **fields: Any) -> Scale:
    """`contents` x `styles` tasks, every one done with a 64 x 48 output of its own colour."""
    photos, paintings = folder / "photos", folder / "paintings"
    photos.mkdir(parents=True)
    paintings.mkdir()
    for i in range(contents):
        Image.new("RGB", (64, 48), _colour(i)).save(photos / f"c{i:04d}.png")
    for j in range(styles):
        Image.new("RGB", (48, 64), _colour(5000 + j)).save(paintings / f"s{j:02d}.png")
    doc = {
        "output": "out",
        "content": ["photos/"],
        "style": ["paintings/"],
        "params": {"size": 48, "steps": 2},
        **fields,
    }
    (folder / "gallery.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    manifest = load_manifest(folder / "gallery.yaml")
    tasks = plan(manifest)
    return Scale(manifest, tasks, [_finish(task, n) for n, task in enumerate(tasks)])


def _finish(task: Task, colour: int, loss: float = 2.5e5) -> ResultRow:
    """Write the task's output (plainly: these tests are not about durable writes) and its row."""
    task.output.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), _colour(colour)).save(task.output)
    return task_row(task, "done", "", total_loss=loss, steps=2, seconds=0.5)


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of the gallery (not outputs or results): an atomic rewrite
    changes both."""
    stamps = {}
    for path in out.rglob("*"):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and layout.is_reserved(relative) and not layout.is_results_file(relative):
            stamps[relative] = (path.stat().st_ino, path.stat().st_mtime_ns)
    return stamps


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def _check_links(page: Path, out: Path) -> PageReader:
    """Parse `page`; every picture and link in it must be a relative URL to a file under `out`."""
    reader = PageReader(page.read_text(encoding="utf-8"))
    for url in reader.images + reader.links:
        assert "://" not in url and not url.startswith("/"), url
        target = (page.parent / unquote(urldefrag(url).url)).resolve()
        assert target.is_file(), f"{page.name}: {url}"
        assert target.is_relative_to(out.resolve()), url
    return reader


# --- 2,000 content rows -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scale, GalleryFiles]:
    made = _scale(tmp_path_factory.mktemp("big"), 2000)
    return made, made.write()


def test_a_large_gallery_gets_numbered_sheets_within_the_limits(
    big: tuple[Scale, GalleryFiles],
) -> None:
    made, files = big
    assert files.failures == ()
    count = -(-2000 // ROWS_PER_SHEET)
    assert files.sheets == tuple(layout.sheet_path(made.out, n) for n in range(1, count + 1))
    assert files.sheets[0].name == "contact_sheet-001.jpg"
    assert not (made.out / SHEET).exists()
    for sheet in files.sheets:
        with Image.open(sheet) as image:
            assert image.format == "JPEG"
            assert max(image.size) <= MAX_SHEET_SIDE
            assert image.width * image.height <= MAX_SHEET_PIXELS
            image.load()
    with Image.open(files.sheets[-1]) as last:  # the rest of the rows: shorter
        assert last.height < Image.open(files.sheets[0]).height
    assert sorted(p.name for p in layout.numbered_sheets(made.out)) == [
        p.name for p in files.sheets
    ]


def test_a_large_gallery_gets_pages_and_an_index_that_links_them(
    big: tuple[Scale, GalleryFiles],
) -> None:
    made, files = big
    out = made.out
    assert files.page == out / PAGE and files.compare is None
    assert files.pages == tuple(layout.page_path(out, "page", n) for n in range(1, 21))
    index = _check_links(files.page, out)
    assert index.cells == []  # a table of contents, not a grid
    linked = [unquote(url) for url in index.links]
    assert [u for u in linked if u.startswith("pages/")] == [
        f"pages/page-{n:03d}.html" for n in range(1, 21)
    ]
    assert [u for u in linked if u.startswith("contact_sheet")] == [p.name for p in files.sheets]
    text = files.page.read_text(encoding="utf-8")
    assert "2000 tasks: 2000 done." in text
    assert "c0100 ... c0199: 100 done" in text  # page 2: its first and last content

    names: list[str] = []
    for number, page in enumerate(files.pages, start=1):
        reader = _check_links(page, out)
        assert len(reader.cells) == PAGE_ROWS
        assert {cell.state for cell in reader.cells} == {"done"}
        names += [h for h in reader.headers if h.startswith("c")]
        nav = [unquote(url) for url in reader.links if url.endswith(".html")]
        previous = [f"page-{number - 1:03d}.html"] if number > 1 else []
        following = [f"page-{number + 1:03d}.html"] if number < 20 else []
        assert nav == 2 * ["../index.html", *previous, *following]  # above and below the grid
        assert "100 tasks on this page: 100 done." in page.read_text(encoding="utf-8")
    assert names == [f"c{i:04d}" for i in range(2000)]  # every row once, in order


@pytest.mark.usefixtures("chromium")
def test_a_page_loads_every_picture_in_a_browser(
    big: tuple[Scale, GalleryFiles], tmp_path: Path
) -> None:
    made, files = big
    seen = _probe(files.pages[6], tmp_path / "profile")
    (made.out / layout.PAGES / "probe.html").unlink()
    assert seen["images"] == 1 + PAGE_ROWS + PAGE_ROWS  # the style, the contents, the outputs
    assert seen["broken"] == []
    assert seen["loaded"] == seen["images"]
    assert seen["cells"] == PAGE_ROWS


def test_an_up_to_date_rebuild_writes_nothing_and_opens_no_image(
    big: tuple[Scale, GalleryFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    made, files = big
    before = _stamps(made.out)
    assert "thumbs/outputs/c1999__s00.jpg.jpg" in before and ".nst-batch/gallery.json" in before
    opened: list[object] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert made.write() == files
    assert opened == []  # stat calls tell what changed: no image is decoded
    assert _stamps(made.out) == before


# --- what a change rebuilds -------------------------------------------------------------------


@pytest.fixture
def mid(tmp_path: Path) -> Scale:
    """250 rows of one style: pages of rows 1-100, 101-200, 201-250; sheets of 42 rows."""
    return _scale(tmp_path, 250)


def test_one_changed_task_rebuilds_only_its_page_its_sheet_and_its_thumbnail(
    mid: Scale, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = mid.write()
    assert len(first.pages) == 3 and len(first.sheets) == 6
    before = _stamps(mid.out)

    n = 150  # on page 2, and on sheet 4 (rows 127-168)
    task = mid.tasks[n]
    later = task.output.stat().st_mtime_ns + 2_000_000_000
    rows = list(mid.rows)
    rows[n] = _finish(task, 9999, loss=1.25e5)
    os.utime(task.output, ns=(later, later))
    changed = Scale(mid.manifest, mid.tasks, rows)
    opened: list[object] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert changed.write() == first
    monkeypatch.undo()
    # the output, for its thumbnail; then the pictures of one page and one sheet, not all
    assert len(opened) <= 1 + (1 + 100 + 100) + (1 + 42 + 42)
    assert _changed(before, _stamps(mid.out)) == {
        "pages/page-002.html",
        "contact_sheet-004.jpg",
        "thumbs/outputs/c0150__s00.jpg.jpg",
        ".nst-batch/gallery.json",
    }
    assert "total 1.25e+05" in (mid.out / "pages" / "page-002.html").read_text(encoding="utf-8")

    # a task that fails changes the counts too: the index follows
    before = _stamps(mid.out)
    rows[n] = replace(rows[n], status="failed", error="out of memory")
    Scale(mid.manifest, mid.tasks, rows).write()
    assert _changed(before, _stamps(mid.out)) == {
        "index.html",
        "pages/page-002.html",
        "contact_sheet-004.jpg",
        ".nst-batch/gallery.json",
    }
    assert "250 tasks: 249 done, 1 failed." in (mid.out / PAGE).read_text(encoding="utf-8")


def test_a_deleted_page_or_thumbnail_is_made_again(mid: Scale) -> None:
    mid.write()
    (mid.out / "pages" / "page-003.html").unlink()
    (mid.out / "thumbs" / "outputs" / "c0010__s00.jpg.jpg").unlink()
    before = _stamps(mid.out)
    mid.write()
    assert _changed(before, _stamps(mid.out)) == {
        "pages/page-003.html",
        "pages/page-001.html",  # row 11's thumbnail is new
        "contact_sheet-001.jpg",
        "thumbs/outputs/c0010__s00.jpg.jpg",
        ".nst-batch/gallery.json",
    }


def test_a_gallery_that_shrinks_or_grows_leaves_no_stale_sheet_or_page(tmp_path: Path) -> None:
    made = _scale(tmp_path, 250)
    made.write()
    doc = yaml.safe_load(made.manifest.path.read_text())
    small_doc = {**doc, "content": [f"photos/c000{i}.png" for i in range(3)]}
    made.manifest.path.write_text(yaml.safe_dump(small_doc))
    small = load_manifest(made.manifest.path)
    files = write_gallery(small, plan(small), made.rows)
    assert files == GalleryFiles(small.output / PAGE, (small.output / SHEET,))
    assert layout.numbered_sheets(small.output) == []
    assert not (small.output / layout.PAGES).exists()
    record = json.loads(layout.gallery_record(small.output).read_text())
    assert sorted(record["files"]) == [SHEET, PAGE]

    made.manifest.path.write_text(yaml.safe_dump(doc))  # and back: the single sheet goes
    again = made.write()
    assert len(again.sheets) == 6 and not (made.out / SHEET).exists()
    assert len(again.pages) == 3


# --- failures of one file ---------------------------------------------------------------------


def test_a_sheet_that_cannot_be_written_leaves_the_rest_written(mid: Scale) -> None:
    planted = mid.out / "contact_sheet-002.jpg"
    planted.mkdir(parents=True)  # a folder where a sheet goes
    files = mid.write()
    (failure,) = files.failures
    assert failure.what == "contact_sheet-002.jpg"
    assert failure.why.startswith(f"Cannot save '{planted}': Is a directory")
    assert all(page.is_file() for page in [files.page, *files.pages])
    assert all(sheet.is_file() for sheet in files.sheets if sheet != planted)
    # the next run tries again, and says so again
    assert mid.write().failures == files.failures


def test_a_sheet_too_large_for_jpeg_is_reported_with_its_cause(
    mid: Scale, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_tall(*args: object) -> Image.Image:
        return Image.new("RGB", (1, 70_000))

    monkeypatch.setattr("nst_batch.gallery.render_sheet", too_tall)
    files = mid.write()
    assert [f.what for f in files.failures] == [f"contact_sheet-00{n}.jpg" for n in range(1, 7)]
    why = files.failures[0].why
    assert "70000 px" in why and "65,500 px" in why and "broken data stream" not in why
    assert all(page.is_file() for page in [files.page, *files.pages])


def test_a_page_that_cannot_be_written_leaves_the_sheets_written(mid: Scale) -> None:
    (mid.out / "pages" / "page-001.html").mkdir(parents=True)
    files = mid.write()
    assert [f.what for f in files.failures] == ["pages/page-001.html"]
    assert all(sheet.is_file() for sheet in files.sheets)
    assert files.page.is_file() and files.pages[1].is_file()


def test_thumbnails_that_cannot_be_written_cost_only_their_pictures(mid: Scale) -> None:
    (mid.out / "thumbs" / "outputs" / "c0003__s00.jpg.jpg").mkdir(parents=True)
    files = mid.write()
    assert files.failures == (
        Failure(
            "1 thumbnail",
            f"Cannot save '{mid.out / 'thumbs/outputs/c0003__s00.jpg.jpg'}': Is a directory; "
            "check the output path.",
        ),
    )
    page = PageReader((mid.out / "pages" / "page-001.html").read_text(encoding="utf-8"))
    assert "its thumbnail could not be written" in page.cells[3].text
    assert len(page.images) == 1 + 100 + 99


def test_the_gallery_line_names_what_failed(mid: Scale) -> None:
    write_table(mid.rows, layout.results_file(mid.out, None), mid.out)
    (mid.out / "contact_sheet-002.jpg").mkdir()
    result = CliRunner().invoke(main, ["report", str(mid.manifest.path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"gallery: {mid.out / PAGE}; not written: contact_sheet-002.jpg (see the warnings above)"
    )
    assert (
        f"warning: gallery: cannot write contact_sheet-002.jpg: Cannot save "
        f"'{mid.out / 'contact_sheet-002.jpg'}': Is a directory" in result.stderr
    )


# --- a sweep's comparison ---------------------------------------------------------------------


def test_a_large_sweep_paginates_its_comparison(tmp_path: Path) -> None:
    made = _scale(tmp_path, 300, sweep={"style_weight": [5, 10]})
    files = made.write()
    out = made.out
    assert files.compare == out / COMPARE and files.failures == ()
    grid_pages = [p for p in files.pages if p.name.startswith("page-")]
    compare_pages = [p for p in files.pages if p.name.startswith("compare-")]
    assert len(grid_pages) == 2 * 3  # per variant: rows 1-100, 101-200, 201-300
    assert compare_pages == [layout.page_path(out, "compare", n) for n in (1, 2, 3)]

    contents = _check_links(out / COMPARE, out)
    assert [unquote(u) for u in contents.links if u.startswith("pages/")] == [
        f"pages/compare-00{n}.html" for n in (1, 2, 3)
    ]
    for page in compare_pages:
        reader = _check_links(page, out)
        assert len(reader.cells) == 100 * 2  # a row per pair, a cell per variant
        assert "../index.html#variant-2" in reader.links  # a column head: that variant's pages
    index = _check_links(out / PAGE, out)
    assert COMPARE in index.links
    assert 'id="variant-2"' in (out / PAGE).read_text(encoding="utf-8")
    for page in grid_pages:
        assert "../compare.html" in _check_links(page, out).links


# --- names and imports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "reserved"),
    [
        ("pages", True),
        ("pages/page-001.html", True),
        ("Pages/anything.jpg", True),
        ("contact_sheet-001.jpg", True),
        ("CONTACT_SHEET-12.JPG", True),
        ("contact_sheet-001.jpg/x.jpg", True),
        ("contact_sheet-x.jpg", False),
        ("contact_sheets.jpg", False),
        ("x/pages/a.jpg", False),
        (".nst-batch/gallery.json", True),
    ],
)
def test_the_gallerys_names_are_reserved(relative: str, reserved: bool) -> None:
    assert layout.is_reserved(relative) is reserved


def test_names_of_sheets_and_pages(tmp_path: Path) -> None:
    assert layout.sheet_path(tmp_path, None) == tmp_path / "contact_sheet.jpg"
    assert layout.sheet_path(tmp_path, 7) == tmp_path / "contact_sheet-007.jpg"
    assert layout.sheet_path(tmp_path, 1234) == tmp_path / "contact_sheet-1234.jpg"
    assert layout.page_path(tmp_path, "compare", 2) == tmp_path / "pages" / "compare-002.html"
    assert layout.gallery_record(tmp_path) == tmp_path / ".nst-batch" / "gallery.json"
    for name in ("contact_sheet-010.jpg", "contact_sheet-002.jpg", "contact_sheet.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in layout.numbered_sheets(tmp_path)] == [
        "contact_sheet-002.jpg",
        "contact_sheet-010.jpg",
    ]


def test_writing_the_gallery_imports_no_torch(tmp_path: Path) -> None:
    made = _scale(tmp_path, 3)
    write_table(made.rows, layout.results_file(made.out, None), made.out)
    script = (
        "import sys\n"
        "from nst_batch.manifest import load_manifest\n"
        "from nst_batch.plan import plan\n"
        "from nst_batch.results import merge\n"
        "from nst_batch import layout\n"
        "before = 'torch' in sys.modules\n"
        "import nst_batch.gallery\n"
        f"manifest = load_manifest({str(made.manifest.path)!r})\n"
        "rows = merge(layout.results_files(manifest.output))\n"
        "files = nst_batch.gallery.write_gallery(manifest, plan(manifest), rows)\n"
        "assert files.failures == (), files.failures\n"
        "print(before, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    assert after == before  # the gallery added no torch import
