"""Tests of the gallery page and contact sheet: hand-made results for each case, and one real run.

The hand-made gallery is 2x2 with solid-colour outputs, so the contact sheet's pixels can be
checked against them: (chelsea, starry_night) and (odd, starry_night) done, (chelsea,
the_scream) failed with an error full of HTML, (odd, the_scream) never run. `odd` is a content
image whose name holds every character that needs escaping or encoding.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import markupsafe
import pytest
import yaml
from click.testing import Result
from conftest import CONTENT, STYLE, invoke, write_manifest_in
from PIL import Image

from nst_batch.gallery import GalleryFiles, write_gallery
from nst_batch.gallery.page import curve_points
from nst_batch.gallery.paging import Block
from nst_batch.gallery.sheet import MAX_SHEET_PIXELS, MAX_SHEET_SIDE, SheetLayout, sheet_blocks
from nst_batch.images import save_image
from nst_batch.layout import PAGE, SHEET, curve_path, gallery_record
from nst_batch.manifest import Manifest, load_manifest
from nst_batch.metadata import KEY_METADATA
from nst_batch.plan import Task, plan
from nst_batch.results import ResultRow, ResultsWriter, merge, read_rows

ODD = "odd <1> & \"q\" 'x' #2?%"  # every character HTML or a URL would misread
ERROR = "Cannot use image '<odd> & \"x\".png': broken <b>bold</b>"
COLOURS = {"chelsea": (200, 40, 40), ODD: (40, 160, 40)}
LAYOUT = SheetLayout()
VOID = frozenset({"img", "br", "meta", "link", "input", "hr"})  # elements without an end tag


# --- reading the page back ------------------------------------------------------------------


@dataclass
class CellSeen:
    state: str
    text: str = ""
    images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    polylines: list[str] = field(default_factory=list)


class PageReader(HTMLParser):
    """What a browser would see: cells, images, links, headings, curves (attributes unescaped)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[CellSeen] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self.headers: list[str] = []  # names under the content and style pictures
        self.sections = 0
        self.scripts = 0
        self._cell: CellSeen | None = None
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "td" and "cell" in a.get("class", "").split():
            self._cell = CellSeen(a["data-state"])
            self.cells.append(self._cell)
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "section":
            self.sections += 1
        elif tag == "script":
            self.scripts += 1
        if self._cell is not None:
            if tag == "img":
                self._cell.images.append(a["src"])
            elif tag == "a":
                self._cell.links.append(a["href"])
            elif tag == "polyline":
                self._cell.polylines.append(a["points"])
        if tag not in VOID:
            self._open.append("name" if a.get("class") == "name" else tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if self._open:
            self._open.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        where = self._open[-1] if self._open else ""
        if where == "h2":
            self.headings.append(data)
        elif where == "name":
            self.headers.append(data)
        if self._cell is not None and where != "title":
            self._cell.text += data

    def states(self) -> list[str]:
        return sorted(cell.state for cell in self.cells)


def _read(out: Path) -> PageReader:
    return PageReader((out / PAGE).read_text(encoding="utf-8"))


def _points(polyline: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in polyline.split())]


# --- a hand-made gallery ----------------------------------------------------------------------


def _manifest(folder: Path, **fields: Any) -> Manifest:
    """The conftest gallery with its contents in `folder`/photos: chelsea and coffee as ODD."""
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONTENT / "chelsea.png", photos / "chelsea.png")
    shutil.copyfile(CONTENT / "coffee.png", photos / f"{ODD}.png")
    return load_manifest(write_manifest_in(folder, content=["photos/"], **fields))


def _finish(task: Task, curve: Sequence[float] | None = None, **row: Any) -> ResultRow:
    """A done task: a solid-colour output carrying its key, its curve, and its row."""
    image = Image.new("RGB", (64, 48), COLOURS[task.content.name])
    save_image(image, task.output, metadata={KEY_METADATA: task.key})
    if curve is not None:
        data = {"key": task.key, "total_loss": list(curve)}
        curve_path(task.output).write_text(json.dumps(data))
    values: dict[str, Any] = {
        "status": "done",
        "content_loss": 1.5e4,
        "style_loss": 2.5e5,
        "tv_loss": 0.0,
        "total_loss": 2.65e5,
        "steps": len(curve or ()),
        "seconds": 12.5,
        **row,
    }
    return _row(task, **values)


def _row(task: Task, **values: Any) -> ResultRow:
    names = {
        "content": task.content.name,
        "style": task.style.name,
        "variant": task.variant.name,
        "output": task.relative_output,
        "key": task.key,
    }
    return ResultRow(**{**names, **values})


def _task(tasks: Sequence[Task], content: str, style: str, variant: str = "") -> Task:
    (found,) = [
        t
        for t in tasks
        if (t.content.name, t.style.name, t.variant.name) == (content, style, variant)
    ]
    return found


def _write_rows(path: Path, rows: Sequence[ResultRow]) -> None:
    with ResultsWriter(path) as writer:
        for row in rows:
            writer.write(row)


@dataclass(frozen=True)
class Made:
    manifest: Manifest
    tasks: list[Task]
    out: Path
    files: GalleryFiles

    def rows(self) -> list[ResultRow]:
        return merge(sorted(self.out.glob("results*.csv")))

    def write(self) -> GalleryFiles:
        return write_gallery(self.manifest, self.tasks, self.rows())


def make_gallery(folder: Path, **fields: Any) -> Made:
    """The 2x2 gallery described above, its rows split over two shards' results files."""
    manifest = _manifest(folder, **fields)
    tasks = plan(manifest)
    out = manifest.output
    variant = manifest.variants[0].name  # with a sweep, the other variants have no results
    done = [
        _finish(_task(tasks, "chelsea", "starry_night", variant), [4e6, 1e6, 2e5, 9e4, 8e4, 7.9e4]),
        _finish(_task(tasks, ODD, "starry_night", variant), [5e6, 3e5, 1e5, 9.5e4, 9e4]),
    ]
    failed = _row(_task(tasks, "chelsea", "the_scream", variant), status="failed", error=ERROR)
    _write_rows(out / "results-shard-1-of-2.csv", done[:1])
    _write_rows(out / "results-shard-2-of-2.csv", [done[1], failed])
    files = write_gallery(manifest, tasks, merge(sorted(out.glob("results*.csv"))))
    return Made(manifest, tasks, out, files)


@pytest.fixture
def made(tmp_path: Path) -> Made:
    return make_gallery(tmp_path)


# --- the page ---------------------------------------------------------------------------------


def test_files_are_in_the_output_folder(made: Made) -> None:
    assert made.files == GalleryFiles(made.out / PAGE, (made.out / SHEET,))
    assert made.files.page.is_file() and made.files.sheets[0].is_file()
    assert not list(made.out.rglob("*.tmp"))


def test_a_cell_per_task_with_its_state(made: Made) -> None:
    page = _read(made.out)
    assert len(page.cells) == 2 * 2
    assert page.states() == ["done", "done", "failed", "pending"]
    assert page.sections == 1 and page.headings == []  # no sweep: one grid, no variant heading
    assert page.scripts == 0
    assert "4 tasks: 2 done, 1 failed, 1 pending." in made.files.page.read_text()
    # rows follow the manifest's content order (the folder's, sorted), columns its styles
    assert page.headers == ["starry_night", "the_scream", "chelsea", ODD]
    pending = [c for c in page.cells if c.state == "pending"]
    assert pending[0].images == [] and "not yet run" in pending[0].text


def test_the_shards_results_are_merged(made: Made) -> None:
    assert sorted(p.name for p in made.out.glob("results*.csv")) == [
        "results-shard-1-of-2.csv",
        "results-shard-2-of-2.csv",
    ]
    done = [c for c in _read(made.out).cells if c.state == "done"]
    assert len(done) == 2  # one from each shard's file
    assert all("total 2.65e+05" in c.text and "12.5 s, " in c.text for c in done)


def test_every_image_and_link_is_a_file_in_the_output_folder(made: Made) -> None:
    page = _read(made.out)
    assert len(page.images) == 2 + 2 + 2  # styles, contents, done cells
    for url in page.images + page.links:
        assert "://" not in url and not url.startswith("/")  # relative: the folder can move
        assert (made.out / unquote(url)).is_file(), url
    assert "thumbs/outputs/" in " ".join(page.images)  # thumbnails, not the full outputs
    done = [c for c in page.cells if c.state == "done"]
    assert sorted(unquote(c.links[0]) for c in done) == sorted(
        ["chelsea__starry_night.jpg", f"{ODD}__starry_night.jpg"]
    )


def test_a_failed_cell_shows_its_error_escaped(made: Made) -> None:
    text = made.files.page.read_text()
    (failed,) = [c for c in _read(made.out).cells if c.state == "failed"]
    assert ERROR in failed.text  # as a browser shows it
    assert str(markupsafe.escape(ERROR)) in text  # escaped as jinja2 escapes
    assert "<b>bold</b>" not in text and "<odd>" not in text
    assert failed.images == [] and failed.polylines == []


def test_names_are_escaped_and_urls_percent_encoded(made: Made) -> None:
    text = made.files.page.read_text()
    page = _read(made.out)
    assert ODD in page.headers
    assert ODD not in text and "<1>" not in text  # never raw in the source
    links = [url for url in page.links if url.startswith("odd")]
    assert links == [
        "odd%20%3C1%3E%20%26%20%22q%22%20%27x%27%20%232%3F%25__starry_night.jpg"
    ]  # '#', '?' and '%' survive as part of the file name
    assert unquote(links[0]) == f"{ODD}__starry_night.jpg"
    odd_images = [url for url in page.images if "odd" in url]
    assert len(odd_images) == 2 and all(" " not in url and "#" not in url for url in odd_images)


def test_a_loss_curve_per_done_cell_with_a_point_per_step(made: Made) -> None:
    lengths = []
    for cell in _read(made.out).cells:
        if cell.state != "done":
            assert cell.polylines == []
            continue
        (polyline,) = cell.polylines
        points = _points(polyline)
        lengths.append(len(points))
        assert all(0 <= x <= 180 and 0 <= y <= 40 for x, y in points)
        assert points[0][1] < points[-1][1]  # the loss falls: the line goes down the box
    assert sorted(lengths) == [5, 6]


def test_a_curve_of_another_key_is_ignored(made: Made) -> None:
    task = _task(made.tasks, "chelsea", "starry_night")
    curve_path(task.output).write_text(json.dumps({"key": "0" * 24, "total_loss": [3.0, 2.0]}))
    made.write()
    curves = [len(_points(c.polylines[0])) for c in _read(made.out).cells if c.polylines]
    assert curves == [5]  # only odd's curve is left


def test_curve_points_on_a_log_scale_with_zero_negative_and_nan() -> None:
    values = [1e4, 1e3, 1e2, 0.0, -1.0, math.nan, math.inf]
    points = curve_points(values, 100, 40)
    assert len(points) == len(values)
    assert [x for x, _ in points] == pytest.approx(
        [0, 100 / 6 * 1, 100 / 6 * 2, 50, 400 / 6, 500 / 6, 100]
    )
    ys = [y for _, y in points]
    assert ys[0] == ys[-1] == 2.0  # the largest value (inf clamped to it) at the top
    assert ys[1] == pytest.approx(20.0)  # a decade down: halfway, on a log scale
    assert ys[2:6] == [38.0] * 4  # zero, negative and NaN sit on the smallest positive value


def test_curve_points_of_flat_and_single_curves() -> None:
    assert curve_points([0.0, 0.0, 0.0], 10, 40) == [(0.0, 20.0), (5.0, 20.0), (10.0, 20.0)]
    assert curve_points([5.0], 10, 40) == [(5.0, 20.0)]
    assert curve_points([-2.0, -4.0], 10, 40) == [(0.0, 2.0), (10.0, 38.0)]  # linear scale


def test_sweep_variants_are_separate_sections(tmp_path: Path) -> None:
    made = make_gallery(tmp_path, sweep={"style_weight": [5, 10]})
    page = _read(made.out)
    assert page.sections == 2
    assert page.headings == ["style_weight-5", "style_weight-10"]
    assert len(page.cells) == 2 * 2 * 2
    assert page.states().count("pending") == 8 - 3  # the other variant has no results at all
    with Image.open(made.files.sheets[0]) as sheet:
        assert sheet.size == (504, 2 * 580)


def test_an_outdated_row_is_not_shown_as_done(made: Made) -> None:
    task = _task(made.tasks, ODD, "the_scream")
    _write_rows(made.out / "results.csv", [_finish(task, [2.0, 1.0], key="f" * 24)])
    made.write()
    cells = _read(made.out).cells
    assert sorted(c.state for c in cells) == ["done", "done", "failed", "outdated"]
    (outdated,) = [c for c in cells if c.state == "outdated"]
    assert outdated.images == [] and outdated.polylines == []


def test_a_skipped_row_shows_the_image_and_the_losses_of_its_done_row(made: Made) -> None:
    chelsea = _task(made.tasks, "chelsea", "starry_night")
    odd = _task(made.tasks, ODD, "starry_night")
    # A later run found chelsea up to date; odd's done row is gone (a hand-edited file).
    _write_rows(made.out / "results.csv", [_row(chelsea, status="skipped")])
    (made.out / "results-shard-2-of-2.csv").unlink()
    _write_rows(made.out / "results-shard-2-of-2.csv", [_row(odd, status="skipped")])
    made.write()
    done = {c.links[0]: c for c in _read(made.out).cells if c.state == "done"}
    assert len(done) == 2
    assert "total 2.65e+05" in done["chelsea__starry_night.jpg"].text  # merge found the done row
    odd_cell = next(c for link, c in done.items() if link.startswith("odd"))
    assert "total" not in odd_cell.text and len(odd_cell.images) == 1  # no losses to show


def test_a_done_row_whose_output_is_gone_is_missing(made: Made) -> None:
    _task(made.tasks, "chelsea", "starry_night").output.unlink()
    made.write()
    page = _read(made.out)
    assert page.states() == ["done", "failed", "missing", "pending"]
    for url in page.images:
        assert (made.out / unquote(url)).is_file()


def test_writing_twice_changes_nothing_and_thumbnails_follow_their_outputs(made: Made) -> None:
    thumbs = {p: p.stat().st_mtime_ns for p in (made.out / "thumbs").rglob("*.jpg")}
    assert len(thumbs) == 2 + 2 + 2
    page, sheet = made.files.page.read_bytes(), made.files.sheets[0].read_bytes()

    assert made.write() == made.files
    assert made.files.page.read_bytes() == page
    assert made.files.sheets[0].read_bytes() == sheet
    assert {p: p.stat().st_mtime_ns for p in thumbs} == thumbs  # not remade

    output = _task(made.tasks, "chelsea", "starry_night").output
    later = output.stat().st_mtime_ns + 5_000_000_000
    os.utime(output, ns=(later, later))
    made.write()
    remade = [p.name for p in thumbs if p.stat().st_mtime_ns != thumbs[p]]
    assert remade == ["chelsea__starry_night.jpg.jpg"]


# --- the contact sheet ------------------------------------------------------------------------


def _centre(layout: SheetLayout, row: int, column: int, top: int = 0) -> tuple[int, int]:
    x, y = layout.slot(top, row, column)
    return x + layout.cell // 2, y + layout.cell // 2


def _near(pixel: Sequence[int], colour: Sequence[int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_contact_sheet_is_a_jpeg_of_the_grid(made: Made) -> None:
    with Image.open(made.files.sheets[0]) as sheet:
        assert sheet.format == "JPEG"
        # one heading band, then a row of styles and a row per content; a column each + labels
        width = LAYOUT.gap + 3 * (LAYOUT.cell + LAYOUT.gap)
        height = LAYOUT.heading + 3 * (LAYOUT.cell + LAYOUT.label + LAYOUT.gap)
        assert sheet.size == (width, height) == (504, 580)
        rgb = sheet.convert("RGB")
    # row 1 chelsea, row 2 odd; column 1 starry_night, column 2 the_scream
    assert _near(rgb.getpixel(_centre(LAYOUT, 1, 1)), COLOURS["chelsea"])
    assert _near(rgb.getpixel(_centre(LAYOUT, 2, 1)), COLOURS[ODD])
    for row, column in ((1, 2), (2, 2)):  # failed and pending: grey boxes
        x, y = LAYOUT.slot(0, row, column)
        assert _near(rgb.getpixel((x + 8, y + 8)), (200, 200, 200))
    assert _near(rgb.getpixel((LAYOUT.gap + 8, LAYOUT.heading + 8)), (255, 255, 255))  # corner


def test_a_huge_gallery_gets_numbered_sheets_of_whole_cells_within_limits() -> None:
    assert sheet_blocks(3, 3, 1) is None  # one sheet
    blocks = sheet_blocks(60, 100, 5)
    assert blocks is not None
    for block in blocks:  # each a block of one variant's grid, at the full cell size
        width, height = LAYOUT.size(len(block.rows), len(block.columns), 1)
        assert max(width, height) <= MAX_SHEET_SIDE and width * height <= MAX_SHEET_PIXELS
    cells = [(b.variant, i, j) for b in blocks for i in b.rows for j in b.columns]
    assert sorted(cells) == [(v, i, j) for v in range(5) for i in range(60) for j in range(100)]
    # 100 styles: the columns are split too, and every sheet is as wide as it may be
    assert blocks[0] == Block(0, range(15), range(47))
    assert [len(b.columns) for b in blocks[:3]] == [47, 47, 6]


# --- through the command line -----------------------------------------------------------------


def test_report_writes_the_gallery(made: Made) -> None:
    made.files.page.unlink()
    made.files.sheets[0].unlink()
    result = invoke("report", made.manifest.path)
    assert result.exit_code == 1, result.output  # the gallery holds a failed task
    assert result.stdout.splitlines()[-1] == f"gallery: {made.files.page}"
    assert _read(made.out).states() == ["done", "done", "failed", "pending"]
    assert made.files.sheets[0].is_file()


NESTED = "[" * 100_000 + "]" * 100_000  # deeper than json can parse: a RecursionError


@pytest.mark.parametrize(
    "text",
    [
        NESTED,
        '{"version": 1, "files": {"index.html": {"fingerprint": ' + NESTED + "}}}",
        '{"version": 1, "files": {"index.html": {"fingerprint": "x", "stamp": [1, 2',
        '{"version": 1, "files": [1, 2]}',
        '{"version": ' + "9" * 100_000 + "}",  # more digits than int() takes
    ],
    ids=["nested", "nested_inside", "torn", "foreign", "huge_number"],
)
def test_report_rebuilds_a_gallery_record_it_cannot_use(made: Made, text: str) -> None:
    record = gallery_record(made.out)
    record.write_text(text)
    made.files.page.unlink()
    result = invoke("report", made.manifest.path)
    assert result.exit_code == 1, result.output  # the gallery holds a failed task, as before
    assert "Traceback" not in result.output
    assert result.stdout.splitlines()[-1] == f"gallery: {made.files.page}"
    assert _read(made.out).states() == ["done", "done", "failed", "pending"]
    assert json.loads(record.read_text())["version"] == 1  # rebuilt


def test_report_shows_no_curve_for_a_deeply_nested_curve_file(made: Made) -> None:
    task = _task(made.tasks, "chelsea", "starry_night")
    curve_path(task.output).write_text(NESTED)
    result = invoke("report", made.manifest.path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    curves = [len(_points(c.polylines[0])) for c in _read(made.out).cells if c.polylines]
    assert curves == [5]  # only odd's curve is left


def test_a_shard_run_writes_the_whole_gallery(made: Made) -> None:
    for task in made.tasks:  # every output up to date: the shard skips its two
        _finish(task)
    result = invoke(made.manifest.path, "--shard", "1/2")
    assert result.exit_code == 0, result.output
    assert "2 tasks in shard 1/2: 0 done, 2 skipped" in result.stdout
    assert result.stdout.splitlines()[-1] == f"gallery: {made.files.page}"
    page = _read(made.out)
    assert len(page.cells) == 4  # the whole plan, not only the shard's share
    assert page.states() == ["done", "done", "failed", "pending"]


def test_outputs_in_folders(tmp_path: Path) -> None:
    made = make_gallery(tmp_path, name="{style}/{content}")
    page = _read(made.out)
    links = sorted(unquote(url) for url in page.links if url != SHEET)
    assert links == ["starry_night/chelsea.jpg", f"starry_night/{ODD}.jpg"]
    for url in page.images + page.links:
        assert (made.out / unquote(url)).is_file(), url


def test_a_gallery_that_cannot_be_written_is_only_a_warning(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    for task in made.tasks:  # every output up to date: the run below skips them all
        _finish(task)

    def refuse(*args: object) -> GalleryFiles:
        raise PermissionError(13, "Permission denied", str(made.files.page))

    monkeypatch.setattr("nst_batch.gallery.write_gallery", refuse)
    for args in (["report"], []):
        result = invoke(*args, made.manifest.path)
        assert result.exit_code == (1 if args else 0), result.output  # report: a failed task
        assert f"warning: cannot write the gallery in {made.out}: " in result.stderr
        assert "Permission denied" in result.stderr
        assert result.stdout.splitlines()[-1] == (
            f"gallery: {made.files.page} not written (see the warning above)"
        )


# --- a real run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    manifest: Path
    out: Path
    result: Result


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A real 2x2 run (64 px, 4 steps) whose first content image is not an image at all."""
    root = tmp_path_factory.mktemp("real")
    manifest = _manifest(root, params={"steps": 4}).path
    (root / "photos" / "chelsea.png").unlink()
    (root / "photos" / "bad.png").write_text("not an image\n")
    return Run(manifest, root / "out", invoke(manifest, "-q"))


@pytest.mark.slow
def test_a_real_run_writes_the_gallery(real: Run) -> None:
    assert real.result.exit_code == 1, real.result.output  # the bad image's tasks failed
    assert real.result.stderr.splitlines()[-1] == f"gallery: {real.out / PAGE}"  # -q: stderr
    page = _read(real.out)
    assert page.states() == ["done", "done", "failed", "failed"]
    assert page.headers == ["starry_night", "the_scream", "bad", ODD]
    assert len(page.images) == 2 + 1 + 2  # bad.png has no thumbnail, only a box
    for url in page.images + page.links:
        assert (real.out / unquote(url)).is_file(), url
    rows = {(r.content, r.style): r for r in read_rows(real.out / "results.csv")}
    for cell in page.cells:
        if cell.state == "failed":
            assert "not an image" in cell.text
            assert str(real.manifest.parent / "photos" / "bad.png") in cell.text
        else:
            (polyline,) = cell.polylines
            assert len(_points(polyline)) == 4  # a point per step
            row = rows[(ODD, "starry_night" if "starry" in cell.links[0] else "the_scream")]
            assert f"total {row.total_loss:.3g}" in cell.text
    with Image.open(real.out / SHEET) as sheet:
        assert sheet.format == "JPEG" and sheet.size == (504, 580)


@pytest.mark.slow
def test_report_after_a_real_run_rewrites_the_same_gallery(real: Run, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(real.manifest.parent, root, copy_function=shutil.copy2)
    manifest, out = root / "gallery.yaml", root / "out"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    report = invoke("report", manifest)
    assert report.exit_code == 1, report.output  # the real run has failed tasks
    # the page names only relative files, so a copy's page is the original's
    assert (out / PAGE).read_bytes() == before[out / PAGE]
    assert (out / SHEET).read_bytes() == before[out / SHEET]

    # a third style in the manifest: a column of cells no run has done yet
    doc = yaml.safe_load(manifest.read_text())
    doc["style"].append(str(STYLE / "shipwreck.jpg"))
    manifest.write_text(yaml.safe_dump(doc))
    report = invoke("report", manifest)
    assert report.exit_code == 1, report.output
    page = _read(out)
    assert page.states() == ["done", "done", "failed", "failed", "pending", "pending"]
    with Image.open(out / SHEET) as sheet:
        assert sheet.size == (LAYOUT.gap + 4 * (LAYOUT.cell + LAYOUT.gap), 580)
