"""The comparison page and a gallery of pairs in a real browser: headless Chromium loads
them from disk with test_browser.py's probe (a script appended to a copy of the page, whose
findings `--dump-dom` prints). Skipped without Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CONTENT, STYLE
from test_browser import _probe
from test_compare import _swept
from test_gallery import _finish, _task

from nst_batch.gallery import write_gallery
from nst_batch.layout import COMPARE, PAGE
from nst_batch.manifest import load_manifest
from nst_batch.plan import plan

pytestmark = pytest.mark.usefixtures("chromium")


def test_every_image_of_the_comparison_loads_and_every_cell_is_there(tmp_path: Path) -> None:
    made = _swept(tmp_path / "gallery")

    seen = _probe(made.out / COMPARE, tmp_path / "profile")

    # per pair a content and a style picture; 3 done cells (2 in the first variant, 1 in the
    # second)
    assert seen["images"] == 4 * 2 + 3
    assert seen["broken"] == []
    assert seen["loaded"] == seen["images"]
    assert seen["cells"] == 4 * 2  # 4 pairs x 2 variants
    assert seen["sections"] == 0  # one table, not a section per variant


def test_a_gallery_of_pairs_loads_with_its_empty_cells(tmp_path: Path) -> None:
    folder = tmp_path / "gallery"
    folder.mkdir()
    doc = {
        "output": "out",
        "pairs": [
            {"content": str(CONTENT / "chelsea.png"), "style": str(STYLE / "starry_night.jpg")},
            {"content": str(CONTENT / "coffee.png"), "style": str(STYLE / "the_scream.jpg")},
        ],
        "params": {"size": 64, "steps": 8},
        "sweep": {"style_weight": [5, 10]},
    }
    (folder / "gallery.yaml").write_text(yaml.safe_dump(doc))
    manifest = load_manifest(folder / "gallery.yaml")
    tasks = plan(manifest)
    done = [_task(tasks, "chelsea", "starry_night", "style_weight-5")]
    rows = [_finish(task) for task in done]
    write_gallery(manifest, tasks, rows)

    grid = _probe(manifest.output / PAGE, tmp_path / "profile")
    compare = _probe(manifest.output / COMPARE, tmp_path / "profile")

    # the grids: 2 variants x (2 styles + 2 contents) + 1 done cell, 2 x 2 x 2 cells
    assert grid["broken"] == [] and grid["loaded"] == grid["images"] == 2 * 4 + 1
    assert grid["cells"] == 2 * 2 * 2 and grid["sections"] == 2
    # the comparison: only the 2 pairs, each in 2 variants
    assert compare["broken"] == [] and compare["loaded"] == compare["images"] == 2 * 2 + 1
    assert compare["cells"] == 2 * 2
