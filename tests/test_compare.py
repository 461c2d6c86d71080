"""The comparison page of a sweep, `compare.html`: each pair's variants side by side under
their swept values, with their losses; links to and from the grids of `index.html`. From
hand-made results, as in test_gallery.py (its 2x2 gallery with an oddly named content)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from conftest import CONTENT, STYLE
from test_gallery import ODD, Made, PageReader, _finish, _row, _task, make_gallery

from nst_batch.gallery import GalleryFiles, write_gallery
from nst_batch.gallery.compare import swept_keys, variant_label
from nst_batch.layout import COMPARE, PAGE, SHEET, is_reserved, stale_temporaries
from nst_batch.manifest import ManifestError, Variant, load_manifest
from nst_batch.plan import plan

SWEEP = {"style_weight": [5, 10]}


class CompareReader(PageReader):
    """PageReader, plus the column heads of the comparison and where they link."""

    def __init__(self, text: str) -> None:
        self.heads: list[str] = []
        self.head_links: list[str] = []
        self._in_head = False
        super().__init__(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "th" and dict(attrs).get("class") == "variant":
            self._in_head = True
            self.heads.append("")
        elif tag == "a" and self._in_head:
            self.head_links.append(dict(attrs)["href"] or "")
        super().handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._in_head = False
        super().handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._in_head:
            self.heads[-1] += data
        super().handle_data(data)


def _compare(out: Path) -> CompareReader:
    return CompareReader((out / COMPARE).read_text(encoding="utf-8"))


def _swept(folder: Path, **fields: Any) -> Made:
    """test_gallery's 2x2 gallery with a sweep of two variants; in the second variant
    (chelsea, starry_night) is done too, with other losses."""
    made = make_gallery(folder, sweep=SWEEP, **fields)
    task = _task(made.tasks, "chelsea", "starry_night", made.manifest.variants[1].name)
    rows = [*made.rows(), _finish(task, [3e6, 2e5, 1.25e5], total_loss=1.25e5)]
    files = write_gallery(made.manifest, made.tasks, rows)
    return Made(made.manifest, made.tasks, made.out, files)


def test_a_sweep_gets_a_comparison_page_beside_the_grids(tmp_path: Path) -> None:
    made = _swept(tmp_path)
    assert made.files == GalleryFiles(made.out / PAGE, (made.out / SHEET,), made.out / COMPARE)
    page = _compare(made.out)
    assert page.heads == ["style_weight 5", "style_weight 10"]
    assert len(page.cells) == 4 * 2  # a row per pair, a column per variant
    # rows in the grid's order: chelsea x starry_night, x the_scream, then odd's
    assert [c.state for c in page.cells] == [
        *("done", "done"),
        *("failed", "pending"),
        *("done", "pending"),
        *("pending", "pending"),
    ]
    assert page.headers == [
        *("chelsea", "starry_night", "chelsea", "the_scream"),
        *(ODD, "starry_night", ODD, "the_scream"),
    ]
    assert page.scripts == 0


def test_each_variant_shows_its_output_and_its_losses(tmp_path: Path) -> None:
    cells = _compare(_swept(tmp_path).out).cells
    first, second = cells[0], cells[1]  # chelsea x starry_night at style_weight 5, 10
    assert [unquote(u) for u in first.links] == ["chelsea__starry_night__style_weight-5.jpg"]
    assert [unquote(u) for u in second.links] == ["chelsea__starry_night__style_weight-10.jpg"]
    assert "total 2.65e+05" in first.text and "style 2.5e+05" in first.text
    assert "total 1.25e+05" in second.text
    assert len(first.polylines) == len(second.polylines) == 1
    assert "not yet run" in cells[3].text  # pending, as on the grid


def test_every_image_and_link_is_a_file_or_a_grid(tmp_path: Path) -> None:
    made = _swept(tmp_path)
    page = _compare(made.out)
    assert len(page.images) == 4 * 2 + 3  # a content and a style per row, 3 done cells
    grid = PageReader((made.out / PAGE).read_text(encoding="utf-8"))
    ids = _section_ids((made.out / PAGE).read_text(encoding="utf-8"))
    for url in page.images + page.links:
        assert "://" not in url and not url.startswith("/")
        file, _, fragment = url.partition("#")
        assert (made.out / unquote(file)).is_file(), url
        if fragment:
            assert file == PAGE and fragment in ids
    assert grid.links.count(COMPARE) == 1 + 2  # the summary, and each variant's grid


def test_the_column_heads_link_to_their_variants_grid(tmp_path: Path) -> None:
    made = _swept(tmp_path)
    page = _compare(made.out)
    assert page.head_links == [f"{PAGE}#variant-1", f"{PAGE}#variant-2"]
    ids = _section_ids((made.out / PAGE).read_text(encoding="utf-8"))
    assert ids == {"variant-1": "style_weight-5", "variant-2": "style_weight-10"}
    assert page.links.count(PAGE) == 1  # and the summary links back to the grids


def _section_ids(text: str) -> dict[str, str]:
    """id -> data-variant of each section of index.html."""

    class Sections(PageReader):
        def __init__(self) -> None:
            self.ids: dict[str, str] = {}
            super().__init__(text)

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "section":
                a = dict(attrs)
                self.ids[a["id"] or ""] = a["data-variant"] or ""
            super().handle_starttag(tag, attrs)

    return Sections().ids


def test_names_errors_and_swept_values_are_escaped(tmp_path: Path) -> None:
    odd_start = 'start <i> & "1".png'
    for name in (odd_start, "plain.png"):
        shutil.copyfile(CONTENT / "rocket.jpg", tmp_path / name)
    made = make_gallery(
        tmp_path,
        params={"size": 64, "steps": 8, "init": "image"},
        sweep={"init_image": [odd_start, "plain.png"]},
    )
    text = (made.out / COMPARE).read_text(encoding="utf-8")
    page = _compare(made.out)
    assert page.heads == [f"init_image {odd_start}", "init_image plain.png"]
    assert ODD in page.headers
    assert "<i>" not in text and ODD not in text and "<b>bold</b>" not in text
    (failed,) = [c for c in page.cells if c.state == "failed"]
    assert "broken <b>bold</b>" in failed.text  # shown as text
    odd_links = [u for u in page.links if u.startswith("odd")]
    assert [unquote(u) for u in odd_links] == [
        f"{ODD}__starry_night__init_image-start_i_1_.png.jpg"
    ]


def test_only_the_keys_that_vary_head_the_columns() -> None:
    variants = [
        Variant("a", {"style_weight": 10, "tv_weight": 1e6, "steps": 50}),
        Variant("b", {"style_weight": 30, "tv_weight": 1e6, "steps": 50}),
        Variant("c", {"style_weight": 30, "tv_weight": 0.0, "steps": 50}),
    ]
    keys = swept_keys(variants)
    assert keys == ["style_weight", "tv_weight"]
    assert [variant_label(v, keys) for v in variants] == [
        "style_weight 10, tv_weight 1e+06",
        "style_weight 30, tv_weight 1e+06",
        "style_weight 30, tv_weight 0",
    ]
    layers = Variant("d", {"style_layers": ["relu1_1", "relu2_1"], "square": True})
    assert variant_label(layers, ["style_layers", "square"]) == (
        "style_layers relu1_1 relu2_1, square true"
    )


def test_without_a_sweep_there_is_no_comparison_and_a_stale_one_goes(tmp_path: Path) -> None:
    made = _swept(tmp_path)
    assert (made.out / COMPARE).is_file()
    doc = yaml.safe_load(made.manifest.path.read_text())
    del doc["sweep"]
    made.manifest.path.write_text(yaml.safe_dump(doc))
    manifest = load_manifest(made.manifest.path)
    files = write_gallery(manifest, plan(manifest), made.rows())
    assert files.compare is None and not (made.out / COMPARE).exists()
    text = files.page.read_text(encoding="utf-8")
    assert COMPARE not in text


def test_pairs_are_compared_and_cells_of_no_pair_left_out(tmp_path: Path) -> None:
    doc = {
        "output": "out",
        "pairs": [
            {"content": str(CONTENT / "chelsea.png"), "style": str(STYLE / "starry_night.jpg")},
            {"content": str(CONTENT / "coffee.png"), "style": str(STYLE / "the_scream.jpg")},
        ],
        "params": {"size": 64, "steps": 8},
        "sweep": SWEEP,
    }
    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump(doc))
    manifest = load_manifest(path)
    tasks = plan(manifest)
    task = _task(tasks, "coffee", "the_scream", "style_weight-10")
    files = write_gallery(manifest, tasks, [_row(task, status="failed", error="boom")])
    grid = PageReader(files.page.read_text(encoding="utf-8"))
    assert [c.state for c in grid.cells] == [
        *("pending", "none", "none", "pending"),  # style_weight 5
        *("pending", "none", "none", "failed"),  # style_weight 10
    ]
    assert "4 tasks: 1 failed, 3 pending." in files.page.read_text(encoding="utf-8")
    page = _compare(manifest.output)
    assert page.headers == ["chelsea", "starry_night", "coffee", "the_scream"]
    assert [c.state for c in page.cells] == ["pending", "pending", "pending", "failed"]


def test_the_comparison_is_nst_batchs_own_file(tmp_path: Path) -> None:
    assert is_reserved(COMPARE) and is_reserved("Compare.html/x.jpg")
    doc = {
        "output": "out",
        "content": [{"path": str(CONTENT / "chelsea.png"), "name": COMPARE}],
        "style": [str(STYLE / "starry_night.jpg")],
        "name": "{content}/{style}",
    }
    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == (
        f"{path}: name: output 'compare.html/starry_night.jpg' would overwrite nst-batch's own "
        "'compare.html' in the output folder; rename the image with 'name:' or change 'name'"
    )


def test_a_stale_temporary_of_the_comparison_is_found(tmp_path: Path) -> None:
    stale = tmp_path / f".{COMPARE}.0123abcd.nst-batch.tmp"
    stale.write_text("half a page")
    assert stale_temporaries(tmp_path, [], everything=True) == [stale]
