"""Explicit pairs: `pairs:` lists the content x style combinations to make instead of the
cross product. Manifest validation (with its messages), planning, `--set`, and one real run
of 2 pairs of a 2x2 grid whose page shows the 2 other cells empty."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTENT, STYLE, invoke, write_manifest_in
from PIL import Image
from test_gallery import LAYOUT, PageReader

from nst_batch.layout import COMPARE, PAGE, SHEET
from nst_batch.manifest import ManifestError, load_manifest
from nst_batch.plan import plan
from nst_batch.results import read_rows

CHELSEA = str(CONTENT / "chelsea.png")
COFFEE = str(CONTENT / "coffee.png")
STARRY = str(STYLE / "starry_night.jpg")
SCREAM = str(STYLE / "the_scream.jpg")
# Two pairs of the 2x2 grid chelsea, coffee x starry_night, the_scream: its diagonal.
DIAGONAL = [{"content": CHELSEA, "style": STARRY}, {"content": COFFEE, "style": SCREAM}]


def _pairs(folder: Path, **fields: Any) -> Path:
    """conftest's manifest with the DIAGONAL pairs in place of its content and style."""
    return write_manifest_in(
        folder, **{"content": None, "style": None, "pairs": DIAGONAL, **fields}
    )


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, overrides)
    return str(info.value)


def _tasks(path: Path, overrides: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    return sorted(
        (t.content.name, t.style.name, t.variant.name) for t in plan(load_manifest(path, overrides))
    )


# --- planning ---------------------------------------------------------------------------------


def test_the_plan_is_exactly_the_listed_pairs(tmp_path: Path) -> None:
    path = _pairs(tmp_path)
    manifest = load_manifest(path)
    assert [c.name for c in manifest.contents] == ["chelsea", "coffee"]  # as they appear
    assert [s.name for s in manifest.styles] == ["starry_night", "the_scream"]
    assert _tasks(path) == [("chelsea", "starry_night", ""), ("coffee", "the_scream", "")]
    assert [t.relative_output for t in plan(manifest)] == [
        "chelsea__starry_night.jpg",
        "coffee__the_scream.jpg",
    ]
    content, style = manifest.contents[0], manifest.styles[1]
    assert manifest.has_pair(manifest.contents[0], manifest.styles[0])
    assert not manifest.has_pair(content, style)


def test_a_sweep_multiplies_each_pair(tmp_path: Path) -> None:
    path = _pairs(tmp_path, sweep={"style_weight": [10, 30]})
    assert _tasks(path) == [
        ("chelsea", "starry_night", "style_weight-10"),
        ("chelsea", "starry_night", "style_weight-30"),
        ("coffee", "the_scream", "style_weight-10"),
        ("coffee", "the_scream", "style_weight-30"),
    ]
    outputs = sorted(t.relative_output for t in plan(load_manifest(path)))
    assert outputs[0] == "chelsea__starry_night__style_weight-10.jpg"


def test_one_image_in_several_pairs_is_one_row_or_column(tmp_path: Path) -> None:
    pairs = [
        {"content": CHELSEA, "style": STARRY},
        {"content": CHELSEA, "style": SCREAM},
        {"content": COFFEE, "style": STARRY},
    ]
    manifest = load_manifest(_pairs(tmp_path, pairs=pairs))
    assert [c.name for c in manifest.contents] == ["chelsea", "coffee"]
    assert [s.name for s in manifest.styles] == ["starry_night", "the_scream"]
    assert len(plan(manifest)) == 3


def test_settings_merge_preset_params_content_style_pair_sweep(tmp_path: Path) -> None:
    """preset < params < content entry < style entry < pair < sweep: each level sets one key
    and overrides the one below it."""
    pairs = [
        {
            "content": {"path": CHELSEA, "params": {"steps": 3, "content_weight": 2}},
            "style": {"path": STARRY, "params": {"content_weight": 3, "tv_weight": 4}},
            "params": {"tv_weight": 5, "style_weight": 6},
        },
        {"content": COFFEE, "style": SCREAM},
    ]
    path = _pairs(
        tmp_path,
        pairs=pairs,
        preset="pytorch-tutorial",
        params={"size": 64, "square": False, "steps": 2},
        sweep={"style_weight": [7]},
    )
    params = {t.content.name: t.params for t in plan(load_manifest(path))}
    chelsea, coffee = params["chelsea"], params["coffee"]
    assert chelsea.steps == 3  # the content entry over params
    assert chelsea.content_weight == 3  # the style entry over the content entry
    assert chelsea.tv_weight == 5  # the pair over the style entry
    assert chelsea.style_weight == 7  # the sweep over the pair
    assert not chelsea.square and chelsea.content_layers == ("conv2_2",)  # params; preset's conv_4
    assert (coffee.steps, coffee.content_weight, coffee.tv_weight) == (2, 1, 0)


def test_a_pair_takes_a_blend_and_named_entries(tmp_path: Path) -> None:
    pairs = [
        {"content": {"path": CHELSEA, "name": "cat"}, "style": STARRY},
        {"content": COFFEE, "style": {"path": [STARRY, SCREAM], "weights": [3, 1]}},
    ]
    manifest = load_manifest(_pairs(tmp_path, pairs=pairs))
    assert [c.name for c in manifest.contents] == ["cat", "coffee"]
    blend = manifest.styles[1]
    assert blend.name == "starry_night+the_scream"
    assert [w for _, w in blend.images] == [0.75, 0.25]
    assert _tasks(manifest.path) == [
        ("cat", "starry_night", ""),
        ("coffee", "starry_night+the_scream", ""),
    ]


def test_set_reaches_into_pairs(tmp_path: Path) -> None:
    path = _pairs(tmp_path, params={"steps": None})  # Params' default steps
    manifest = load_manifest(path, ("pairs.0.params.steps=5", "pairs.1.content.params.tv_weight=3"))
    params = {t.content.name: t.params for t in plan(manifest)}
    assert params["chelsea"].steps == 5 and params["coffee"].steps == 300
    assert params["coffee"].tv_weight == 3  # the bare path became an entry
    assert manifest.contents[1].path == Path(COFFEE)
    assert _tasks(path, (f"pairs.1.style={STARRY}",)) == [
        ("chelsea", "starry_night", ""),
        ("coffee", "starry_night", ""),
    ]


def test_a_pairs_init_image_is_relative_to_the_manifest(tmp_path: Path) -> None:
    shutil.copyfile(CONTENT / "astronaut.png", tmp_path / "start.png")
    pairs = [{**DIAGONAL[0], "params": {"init": "image", "init_image": "start.png"}}, DIAGONAL[1]]
    params = {t.content.name: t.params for t in plan(load_manifest(_pairs(tmp_path, pairs=pairs)))}
    assert params["chelsea"].init_image == str(tmp_path / "start.png")
    assert params["coffee"].init_image is None


# --- refusals ---------------------------------------------------------------------------------


def test_content_and_style_and_pairs_together_are_refused(tmp_path: Path) -> None:
    path = _pairs(tmp_path, content=[CHELSEA], style=[STARRY])
    assert _error(path) == (
        f"{path}: pairs: a manifest lists either content and style (every content in every "
        "style) or pairs (only those), not both; remove content and style, or remove pairs"
    )
    path = _pairs(tmp_path, style=STARRY)
    assert "not both; remove style, or remove pairs" in _error(path)


def test_without_pairs_content_and_style_are_required(tmp_path: Path) -> None:
    path = write_manifest_in(tmp_path, content=None, style=[STARRY])
    assert _error(path) == (
        f"{path}: missing required key 'content' (or list pairs instead of content and style)"
    )
    path = write_manifest_in(tmp_path, output=None, content=None, style=[STARRY])
    assert _error(path).splitlines() == [
        f"{path}: missing required key 'output'",
        f"{path}: missing required key 'content' (or list pairs instead of content and style)",
    ]


def test_a_pair_listed_twice_is_refused_naming_both(tmp_path: Path) -> None:
    pairs = [*DIAGONAL, {"content": CHELSEA, "style": STARRY, "params": {"steps": 5}}]
    path = _pairs(tmp_path, pairs=pairs)
    assert _error(path) == (
        f"{path}: pairs[2] repeats pairs[0] (content 'chelsea' in style 'starry_night'); list "
        "each pair once, and use a sweep to try several settings on one pair"
    )


def test_one_name_for_two_different_images_is_refused(tmp_path: Path) -> None:
    pairs = [DIAGONAL[0], {"content": {"path": COFFEE, "name": "chelsea"}, "style": SCREAM}]
    path = _pairs(tmp_path, pairs=pairs)
    assert _error(path) == (
        f"{path}: pairs[0].content and pairs[1].content are both the content 'chelsea' but "
        "differ in image or params; give one a 'name:', or put settings for one pair in that "
        "pair's params"
    )


def test_one_image_with_different_entry_params_is_refused(tmp_path: Path) -> None:
    pairs = [DIAGONAL[0], {"content": COFFEE, "style": {"path": STARRY, "params": {"steps": 5}}}]
    path = _pairs(tmp_path, pairs=pairs)
    assert _error(path).startswith(
        f"{path}: pairs[0].style and pairs[1].style are both the style 'starry_night' but "
    )


def test_a_folder_in_a_pair_is_refused(tmp_path: Path) -> None:
    path = _pairs(tmp_path, pairs=[{"content": str(CONTENT), "style": STARRY}])
    assert _error(path) == (
        f"{path}: pairs[0].content '{CONTENT}': a pair takes one image file, not a folder or "
        "pattern; list a pair per image, or use content and style for every combination"
    )


def test_a_missing_file_in_a_pair_names_the_pair(tmp_path: Path) -> None:
    path = _pairs(tmp_path, pairs=[{"content": CHELSEA, "style": "nope.jpg"}])
    assert _error(path) == (
        f"{path}: pairs[0].style 'nope.jpg': no such file {tmp_path / 'nope.jpg'}; paths are "
        f"relative to {tmp_path}"
    )


def test_a_pair_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = _pairs(tmp_path, pairs=[DIAGONAL[0], CHELSEA])
    assert _error(path) == (
        f"{path}: pairs: pairs[1] is not a mapping; write each pair as "
        "{content: photo.jpg, style: painting.jpg}"
    )


def test_unknown_keys_in_a_pair_and_its_params(tmp_path: Path) -> None:
    path = _pairs(tmp_path, pairs=[{**DIAGONAL[0], "parms": {}}])
    assert _error(path) == f"{path}: unknown key 'pairs.0.parms' (did you mean 'params'?)"
    path = _pairs(tmp_path, pairs=[{"content": {"path": CHELSEA, "nmae": "x"}, "style": STARRY}])
    assert _error(path) == f"{path}: unknown key 'pairs.0.content.nmae' (did you mean 'name'?)"
    path = _pairs(tmp_path, pairs=[{**DIAGONAL[0], "params": {"stlye_weight": 1}}])
    assert _error(path) == (
        f"{path}: pairs[0].params: unknown key 'stlye_weight' (did you mean 'style_weight'?)"
    )
    path = _pairs(tmp_path, pairs=[{"content": CHELSEA}])
    assert _error(path) == f"{path}: missing required key 'pairs.0.style'"


def test_a_bad_value_in_a_pairs_params_names_the_pair(tmp_path: Path) -> None:
    path = _pairs(tmp_path, pairs=[{**DIAGONAL[0], "params": {"steps": 0}}])
    assert _error(path) == (
        f"{path}: params.steps: Input should be greater than or equal to 2 (got 0) (with the "
        "overrides of the pair 'chelsea' x 'starry_night')"
    )


def test_two_pairs_writing_one_file_are_refused(tmp_path: Path) -> None:
    pairs = [DIAGONAL[0], {"content": CHELSEA, "style": SCREAM}]
    path = _pairs(tmp_path, pairs=pairs, name="{content}")
    assert _error(path) == (
        f"{path}: two tasks would write chelsea.jpg: ('chelsea', 'starry_night', '') and "
        "('chelsea', 'the_scream', ''); add {variant} or {style} to 'name', or rename an image "
        "with 'name:'"
    )


def test_a_pair_whose_output_is_its_own_content_is_refused(tmp_path: Path) -> None:
    photo = tmp_path / "out" / "x.jpg"
    photo.parent.mkdir()
    shutil.copyfile(STARRY, photo)
    path = _pairs(tmp_path, pairs=[{"content": "out/x.jpg", "style": SCREAM}], name="{content}")
    assert _error(path) == (
        f"{path}: content image {photo} would be overwritten by the task ('x', 'the_scream', ''), "
        "which writes x.jpg in the output folder; choose another 'output' or 'name'"
    )


def test_a_plan_of_pairs_over_max_tasks_is_refused(tmp_path: Path) -> None:
    path = _pairs(tmp_path, sweep={"style_weight": [1, 2, 3]}, max_tasks=5)
    assert _error(path) == (
        f"{path}: the plan has 6 tasks (2 pairs x 3 variants), more than max_tasks (5); sweep "
        "(1 keys, 3 variants: style_weight 3) raises it most: narrow it, or raise max_tasks if "
        "you mean it"
    )


# --- a real run -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_run_of_two_pairs_shows_two_empty_cells(tmp_path: Path) -> None:
    path = _pairs(tmp_path, params={"size": 48, "steps": 2})
    result = invoke(path, "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    rows = read_rows(out / "results.csv")
    assert sorted((r.content, r.style, r.status) for r in rows) == [
        ("chelsea", "starry_night", "done"),
        ("coffee", "the_scream", "done"),
    ]
    text = (out / PAGE).read_text(encoding="utf-8")
    page = PageReader(text)
    # row chelsea: done, none; row coffee: none, done
    assert [c.state for c in page.cells] == ["done", "none", "none", "done"]
    assert "2 tasks: 2 done." in text  # the empty cells are no tasks
    for cell in page.cells:
        if cell.state == "none":
            assert cell.images == [] and cell.links == [] and cell.text == "—"
        else:
            assert len(cell.images) == 1 and "total " in cell.text
    assert not (out / COMPARE).exists()  # one variant: nothing to compare
    with Image.open(out / SHEET) as sheet:
        rgb = sheet.convert("RGB")
    for row, column in ((1, 2), (2, 1)):  # the empty cells are blank, not grey boxes
        x, y = LAYOUT.slot(0, row, column)
        box = rgb.crop((x + 4, y + 4, x + LAYOUT.cell - 4, y + LAYOUT.cell + LAYOUT.label - 4))
        assert min(low for low, _ in box.getextrema()) >= 240  # white, but for JPEG's ringing
    for row, column in ((1, 1), (2, 2)):  # the pairs' pictures
        x, y = LAYOUT.slot(0, row, column)
        box = rgb.crop((x + 4, y + 4, x + LAYOUT.cell - 4, y + LAYOUT.cell - 4))
        assert min(low for low, _ in box.getextrema()) < 200
