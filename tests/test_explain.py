"""Saying why: `--dry-run` (why each task would run; -v lists the up-to-date ones too),
`show` (what an output was made with), `--only` (a subset of the plan) and `report`'s
exit code, -q, -v and --json.

One 3x2 PNG gallery (48 px, 2 steps) whose third content image is a text file is run once
per module: four outputs done, two tasks failed. Tests that change it work on a copy
(shutil.copy2 keeps the mtimes, and the outputs carry their task keys and recipes).
`reasons` itself is tested on a plan and made-up metadata, without a run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import CONTENT, STYLE, invoke, write_manifest_in
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nst_batch.explain import NO_RECIPE, reasons
from nst_batch.images import read_metadata, save_image
from nst_batch.manifest import load_manifest
from nst_batch.metadata import (
    KEY_METADATA,
    PARAMS_METADATA,
    RECIPE_METADATA,
    RESULT_METADATA,
    SOURCE_METADATA,
    START_METADATA,
)
from nst_batch.plan import Task, parse_only, plan, select
from nst_batch.results import ResultRow, ResultsWriter, read_rows
from nst_batch.weights import file_sha256

Writer = Callable[..., Path]
DONE = (  # plan order: one style's tasks together, contents in manifest order
    "chelsea__starry_night.png",
    "coffee__starry_night.png",
    "chelsea__the_scream.png",
    "coffee__the_scream.png",
)
BAD_ERROR = (
    "Cannot use image '{bad}': it is not an image Pillow can read; give a JPEG, PNG or WebP file."
)
SUMMARY = re.compile(r"^(\d+) tasks: (\d+) done, (\d+) skipped, (\d+) failed in ", re.MULTILINE)
PAD = " " * 12  # a reason's indent under its task


def _gallery(folder: Path) -> Path:
    """3 contents (copies in `folder`, the third a text file) x 2 styles, PNG, 48 px, 2 steps."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy2(CONTENT / name, folder / name)
    (folder / "bad.png").write_text("this is a text file, not a PNG\n")
    return write_manifest_in(
        folder,
        content=["chelsea.png", "coffee.png", "bad.png"],
        params={"size": 48, "steps": 2},
        format="png",
    )


@dataclass(frozen=True)
class Ran:
    root: Path
    result: Result


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    root = tmp_path_factory.mktemp("explain")
    result = invoke(_gallery(root), "-q")
    return Ran(root, result)


@pytest.fixture
def gallery(ran: Ran, tmp_path: Path) -> Path:
    """A private copy of the module's gallery (mtimes kept); returns its manifest."""
    assert ran.result.exit_code == 1, ran.result.output  # the two tasks of bad.png failed
    root = tmp_path / "gallery"
    shutil.copytree(ran.root, root, copy_function=shutil.copy2)
    return root / "gallery.yaml"


def _bad_error(ran: Ran) -> str:
    """The reason bad.png's tasks failed: the module run names its own copy."""
    return BAD_ERROR.format(bad=ran.root / "bad.png")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _cells(page: Path) -> list[str]:
    """The page's grid cells, row by row: [content][style] flattened."""
    return re.findall(r'<td class="cell.*?</td>', page.read_text(encoding="utf-8"), re.DOTALL)


def _rewrite_png_text(path: Path, change: Callable[[dict[str, str]], None]) -> None:
    """Change an output's PNG text chunks (its metadata) in place, keeping its pixels."""
    with Image.open(path) as image:
        image.load()
        text = {k: v for k, v in image.info.items() if isinstance(v, str)}
        change(text)
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        image.save(path, pnginfo=info)


# --- dry run: why -----------------------------------------------------------------------


def test_dry_run_verbose_says_new_for_a_fresh_gallery(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)

    result = invoke(manifest, "--dry-run", "-v")

    assert result.exit_code == 0, result.output
    lines = []
    for style in ("starry_night", "the_scream"):
        for content in ("chelsea", "coffee", "bad"):
            lines += [
                f" would run  {content} x {style}  ->  {content}__{style}.png",
                f"{PAD}new",
            ]
    assert result.stdout.splitlines() == [*lines, "6 to run, 0 up to date, 6 in all"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_verbose_after_a_run_lists_up_to_date_and_failed_before(
    gallery: Path, ran: Ran
) -> None:
    folder = gallery.parent
    before = _tree(folder)
    failed = f"{PAD}failed before: {_bad_error(ran)}"

    result = invoke(gallery, "--dry-run", "-v")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "up to date  chelsea x starry_night  ->  chelsea__starry_night.png",
        "up to date  coffee x starry_night  ->  coffee__starry_night.png",
        " would run  bad x starry_night  ->  bad__starry_night.png",
        failed,
        "up to date  chelsea x the_scream  ->  chelsea__the_scream.png",
        "up to date  coffee x the_scream  ->  coffee__the_scream.png",
        " would run  bad x the_scream  ->  bad__the_scream.png",
        failed,
        "2 to run, 4 up to date, 6 in all",
    ]
    # -q: only what would run (no reasons), the up-to-date tasks in the counts alone
    quiet = invoke(gallery, "--dry-run", "-q")
    assert quiet.stdout.splitlines() == [
        " would run  bad x starry_night  ->  bad__starry_night.png",
        " would run  bad x the_scream  ->  bad__the_scream.png",
        "2 to run, 4 up to date, 6 in all",
    ]
    # the plain dry run: what would run and why; the up-to-date tasks only counted
    plain = invoke(gallery, "--dry-run")
    assert plain.stdout.splitlines() == [
        " would run  bad x starry_night  ->  bad__starry_night.png",
        failed,
        " would run  bad x the_scream  ->  bad__the_scream.png",
        failed,
        "2 to run, 4 up to date, 6 in all",
    ]
    assert _tree(folder) == before  # not a byte written


@pytest.mark.slow
def test_dry_run_names_the_changed_content_image(gallery: Path) -> None:
    shutil.copyfile(CONTENT / "chelsea.png", gallery.parent / "coffee.png")  # new bytes

    result = invoke(gallery, "--dry-run", "-v", "--only", "content=coffee")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        " would run  coffee x starry_night  ->  coffee__starry_night.png",
        f"{PAD}the content image changed (coffee.png)",
        " would run  coffee x the_scream  ->  coffee__the_scream.png",
        f"{PAD}the content image changed (coffee.png)",
        "2 to run, 0 up to date, 2 in all matching --only (of 6 planned)",
    ]


@pytest.mark.slow
def test_dry_run_names_a_changed_setting_with_old_and_new_values(gallery: Path) -> None:
    result = invoke(gallery, "--dry-run", "-v", "--set", "params.style_weight=30")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        " would run  chelsea x starry_night  ->  chelsea__starry_night.png",
        f"{PAD}style_weight 10 -> 30",
    ]
    assert lines.count(f"{PAD}style_weight 10 -> 30") == 4
    # bad.png's tasks have a new key too: their failures were with other settings
    assert lines[4:6] == [" would run  bad x starry_night  ->  bad__starry_night.png", f"{PAD}new"]
    assert lines[-1] == "6 to run, 0 up to date, 6 in all"

    style = invoke(gallery, "--dry-run", "-v", "--set", "style.1.params.style_layers=[relu2_1]")
    assert (
        f"{PAD}style_layers [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] -> [relu2_1]"
        in style.stdout.splitlines()
    )


@pytest.mark.slow
def test_dry_run_forced(gallery: Path, ran: Ran) -> None:
    result = invoke(gallery, "--dry-run", "-v", "--force", "--only", "style=the_*")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        " would run  chelsea x the_scream  ->  chelsea__the_scream.png",
        f"{PAD}forced (--force)",
        " would run  coffee x the_scream  ->  coffee__the_scream.png",
        f"{PAD}forced (--force)",
        " would run  bad x the_scream  ->  bad__the_scream.png",
        f"{PAD}failed before: {_bad_error(ran)}",
        "3 to run, 0 up to date, 3 in all matching --only (of 6 planned)",
    ]


@pytest.mark.slow
def test_dry_run_names_a_new_algorithm_version_and_a_missing_recipe(gallery: Path) -> None:
    out = gallery.parent / "out"

    def older(text: dict[str, str]) -> None:
        recipe = json.loads(text[RECIPE_METADATA])
        recipe["algorithm"] = "5"
        text[RECIPE_METADATA] = json.dumps(recipe)
        text[KEY_METADATA] = "0" * 24

    def without_recipe(text: dict[str, str]) -> None:
        del text[RECIPE_METADATA]
        text[KEY_METADATA] = "1" * 24

    _rewrite_png_text(out / "chelsea__starry_night.png", older)
    _rewrite_png_text(out / "coffee__starry_night.png", without_recipe)

    result = invoke(gallery, "--dry-run", "-v", "--only", "style=starry_night")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:4] == [
        " would run  chelsea x starry_night  ->  chelsea__starry_night.png",
        f"{PAD}a new algorithm version (5 -> 6)",
        " would run  coffee x starry_night  ->  coffee__starry_night.png",
        f"{PAD}{NO_RECIPE}",
    ]


def test_dry_run_verbose_with_a_results_file_not_ours_exits_2(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("a;b;c\n1;2;3\n")

    result = invoke(manifest, "--dry-run", "-v")

    assert result.exit_code == 2, result.output
    assert "is not a results file of nst-batch" in result.stderr


# --- reasons, on a plan and made-up metadata --------------------------------------------


@pytest.fixture
def task(write_manifest: Writer) -> Task:
    """chelsea x starry_night of the conftest gallery (64 px, 8 steps)."""
    return plan(load_manifest(write_manifest()))[0]


def _made(task: Task, key: str = "0" * 24, **changes: Any) -> dict[str, str]:
    """Metadata of an output made with the task's recipe, `changes` applied (params.X: a
    setting; None: the part left out)."""
    recipe = json.loads(json.dumps(task.recipe))
    for name, value in changes.items():
        part, _, setting = name.partition("__")
        where, name = (recipe["params"], setting) if part == "params" else (recipe, part)
        if value is None:
            del where[name]
        else:
            where[name] = value
    return {KEY_METADATA: key, RECIPE_METADATA: json.dumps(recipe)}


def _row(task: Task, status: str, key: str | None = None, error: str = "") -> ResultRow:
    return ResultRow(
        task.content.name,
        task.style.name,
        "",
        task.relative_output,
        status,  # type: ignore[arg-type]
        key=task.key if key is None else key,
        error=error,
    )


def test_reasons_up_to_date_and_forced(task: Task) -> None:
    current = {KEY_METADATA: task.key}
    assert reasons(task, current) == []
    assert reasons(task, current, _row(task, "failed", error="boom")) == []  # the output wins
    assert reasons(task, current, force=True) == ["forced (--force)"]
    assert reasons(task, None, force=True) == ["new"]  # a real reason over "forced"


def test_reasons_without_an_output(task: Task) -> None:
    assert reasons(task, None) == ["new"]
    assert reasons(task, None, _row(task, "failed", error="out of memory")) == [
        "failed before: out of memory"
    ]
    assert reasons(task, None, _row(task, "failed")) == ["failed before: no reason recorded"]
    assert reasons(task, None, _row(task, "interrupted")) == ["interrupted before"]
    assert reasons(task, None, _row(task, "done")) == ["the output file is missing"]
    # a failure with other inputs or settings says nothing of this task
    assert reasons(task, None, _row(task, "failed", key="f" * 24, error="x")) == ["new"]


def test_reasons_name_each_changed_input(task: Task) -> None:
    assert reasons(task, _made(task, content="0" * 64)) == [
        "the content image changed (chelsea.png)"
    ]
    assert reasons(task, _made(task, style="0" * 64)) == [
        "the style image changed (starry_night.jpg)"
    ]
    assert reasons(task, _made(task, init_image="0" * 64)) == ["init_image changed"]
    assert reasons(task, _made(task, weights="file:" + "0" * 64)) == ["the weights changed"]
    assert reasons(task, _made(task, algorithm="5")) == ["a new algorithm version (5 -> 6)"]
    assert reasons(task, _made(task, algorithm=None)) == ["a new algorithm version (unset -> 6)"]
    assert reasons(task, _made(task, palette="warm")) == ["palette changed"]  # another version's
    several = _made(task, content="0" * 64, params__style_weight=30.0, weights="x")
    assert reasons(task, several) == [
        "the content image changed (chelsea.png)",
        "style_weight 30 -> 10",
        "the weights changed",
    ]


def test_reasons_show_settings_plainly(task: Task) -> None:
    def why(**changes: Any) -> list[str]:
        return reasons(task, _made(task, **changes))

    assert why(params__style_weight=30) == ["style_weight 30 -> 10"]
    assert why(params__style_weight=2.5) == ["style_weight 2.5 -> 10"]
    assert why(params__tv_weight=None) == ["tv_weight unset -> 0"]
    assert why(params__gamma={"a": [1, 2.5], "b": None}) == [
        "gamma {a: [1, 2.5], b: none} -> unset"
    ]
    assert why(params__learning_rate=0.5) == ["learning_rate 0.5 -> none"]
    assert why(params__square=True) == ["square true -> false"]
    assert why(params__content_layers=["relu3_1"]) == ["content_layers [relu3_1] -> [relu4_2]"]
    assert why(params__init="") == ['init "" -> content']


def test_reasons_for_an_output_without_a_usable_recipe(task: Task) -> None:
    assert reasons(task, {}) == [NO_RECIPE]  # an image that is not ours
    assert reasons(task, {KEY_METADATA: "0" * 24}) == [NO_RECIPE]
    assert reasons(task, {KEY_METADATA: "0", RECIPE_METADATA: "{not json"}) == [NO_RECIPE]
    assert reasons(task, {KEY_METADATA: "0", RECIPE_METADATA: "[1]"}) == [NO_RECIPE]
    # the same recipe under another key: nothing to name
    assert reasons(task, _made(task)) == ["made with other inputs or settings"]
    # an older output that failed again with the current settings: both
    assert reasons(task, _made(task, params__steps=4), _row(task, "failed", error="boom")) == [
        "steps 4 -> 8",
        "failed before: boom",
    ]


def test_reasons_name_the_changed_images_of_a_blend(write_manifest: Writer) -> None:
    blend = {"path": [str(STYLE / "starry_night.jpg"), str(STYLE / "the_scream.jpg")]}
    task = plan(load_manifest(write_manifest(style=[blend])))[0]
    starry, scream = file_sha256(STYLE / "starry_night.jpg"), file_sha256(STYLE / "the_scream.jpg")
    assert task.recipe["style"] == [[starry, 0.5], [scream, 0.5]]

    assert reasons(task, _made(task, style=[[starry, 0.5], ["0" * 64, 0.5]])) == [
        "the style image changed (the_scream.jpg)"
    ]
    assert reasons(task, _made(task, style=starry)) == ["the style image changed (the_scream.jpg)"]
    assert reasons(task, _made(task, style=[[starry, 0.75], [scream, 0.25]])) == [
        "the style blend changed (its images or weights)"
    ]
    assert reasons(task, _made(task, style=None)) == [
        "the style images changed (starry_night.jpg, the_scream.jpg)"
    ]


# --- --only --------------------------------------------------------------------------------


def test_parse_only_and_select(write_manifest: Writer) -> None:
    tasks = plan(load_manifest(write_manifest()))
    only = parse_only(["content=c*", "style=starry*", "style=the_*", "variant=*"])
    assert only == {"content": ("c*",), "style": ("starry*", "the_*"), "variant": ("*",)}
    assert select(tasks, only) == tasks
    picked = select(tasks, parse_only(["content=chelsea", "style=the_scream"]))
    assert [t.label for t in picked] == ["chelsea x the_scream"]
    assert select(tasks, {"content": ("coffee",)}) == [tasks[1], tasks[3]]
    with pytest.raises(ValueError, match=r"^--only content=CHELSEA: matches no content "):
        select(tasks, {"content": ("coffee", "CHELSEA")})  # case counts, as in file names

    with pytest.raises(ValueError, match=r"^--only 'colour=red': unknown key 'colour'; use "):
        parse_only(["colour=red"])
    with pytest.raises(ValueError, match=r"^--only 'chelsea': expected KEY=GLOB"):
        parse_only(["chelsea"])
    with pytest.raises(ValueError, match=r"^--only 'style=': the glob is empty"):
        parse_only(["style="])
    with pytest.raises(ValueError) as caught:
        select(tasks, {"content": ("chelsea", "zebra*")})
    assert str(caught.value) == (
        "--only content=zebra*: matches no content of the plan (there are: chelsea, coffee)"
    )


def test_only_usage_errors_exit_2(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)

    bad_key = invoke(manifest, "--dry-run", "--only", "colour=red")
    assert bad_key.exit_code == 2
    assert bad_key.stderr == (
        "Error: --only 'colour=red': unknown key 'colour'; use content, style or variant\n"
    )
    nothing = invoke(manifest, "--only", "style=monet*")
    assert nothing.exit_code == 2
    assert nothing.stderr == (
        "Error: --only style=monet*: matches no style of the plan "
        "(there are: starry_night, the_scream)\n"
    )
    assert not (tmp_path / "out").exists()
    report = invoke("report", manifest, "--only", "variant=x")
    assert report.exit_code == 2
    assert report.stderr == (
        "Error: --only variant=x: matches no variant of the plan (the manifest has no sweep)\n"
    )


def test_only_one_key_is_or_and_keys_are_and(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    args = ("--dry-run", "--only", "content=coffee", "--only", "content=ba?", "--only", "style=t*")

    result = invoke(manifest, *args)

    assert result.stdout.splitlines() == [
        " would run  coffee x the_scream  ->  coffee__the_scream.png",
        f"{PAD}new",
        " would run  bad x the_scream  ->  bad__the_scream.png",
        f"{PAD}new",
        "2 to run, 0 up to date, 2 in all matching --only (of 6 planned)",
    ]


def test_only_filters_a_shard_of_the_whole_plan(tmp_path: Path) -> None:
    """The whole plan is sharded first: a task's shard does not depend on --only."""
    manifest = _gallery(tmp_path)
    only = ("--only", "style=the_scream")

    first = invoke(manifest, "--dry-run", "--shard", "1/2", *only)
    second = invoke(manifest, "--dry-run", "--shard", "2/2", *only)

    assert first.stdout.splitlines() == [
        "0 to run, 0 up to date, 0 in all in shard 1/2 matching --only (of 6 planned)"
    ]
    assert second.stdout.splitlines()[-1] == (
        "3 to run, 0 up to date, 3 in all in shard 2/2 matching --only (of 6 planned)"
    )


@pytest.mark.slow
def test_only_runs_a_subset_and_leaves_the_rest_alone(gallery: Path) -> None:
    folder, out = gallery.parent, gallery.parent / "out"
    kept = {name: (out / name).read_bytes() for name in DONE}
    mtimes = {name: (out / name).stat().st_mtime_ns for name in DONE}
    rows = read_rows(out / "results.csv")
    cells = _cells(out / "index.html")
    assert [c.split('data-state="')[1].split('"')[0] for c in cells] == ["done"] * 4 + [
        "failed"
    ] * 2
    shutil.copyfile(CONTENT / "coffee.png", folder / "bad.png")  # bad.png is now an image

    result = invoke(gallery, "--only", "content=bad")

    assert result.exit_code == 0, result.output
    assert SUMMARY.findall(result.stdout) == [("2", "2", "0", "0")]
    assert {name: (out / name).read_bytes() for name in DONE} == kept
    assert {name: (out / name).stat().st_mtime_ns for name in DONE} == mtimes
    after = read_rows(out / "results.csv")
    assert after[: len(rows)] == rows  # no row rewritten, and no skipped rows for the others
    assert [(r.content, r.style, r.status) for r in after[len(rows) :]] == [
        ("bad", "starry_night", "done"),
        ("bad", "the_scream", "done"),
    ]
    now = _cells(out / "index.html")
    assert len(now) == 6
    assert now[:4] == cells[:4]  # chelsea's and coffee's cells, byte for byte
    assert all('data-state="done"' in cell for cell in now[4:])

    again = invoke(gallery, "--dry-run")
    assert again.stdout.splitlines()[-1] == "0 to run, 6 up to date, 6 in all"


# --- show ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_show_prints_what_an_output_was_made_with(ran: Ran) -> None:
    output = ran.root / "out" / "chelsea__starry_night.png"
    metadata = read_metadata(output)
    made = json.loads(metadata[RESULT_METADATA])
    chelsea = file_sha256(ran.root / "chelsea.png")[:12]
    starry = file_sha256(STYLE / "starry_night.jpg")[:12]

    result = invoke("show", output)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        f"file       {output}",
        f"key        {metadata[KEY_METADATA]}",
        f"content    chelsea.png (sha256 {chelsea})",
        f"style      starry_night.jpg (sha256 {starry})",
        "algorithm  6",
    ]
    assert lines[5].startswith("weights    original:")
    assert lines[6] == "settings   content_layers       [relu4_2]"
    assert "           size                 48" in lines
    assert "           style_weight         10" in lines
    assert "           steps                2" in lines
    losses = made["losses"]
    assert lines[-7:] == [
        f"losses     content {losses['content']:.4g}, style {losses['style']:.4g}, "
        f"tv {losses['tv']:.4g}, total {losses['total']:.4g}",
        "steps      2",
        f"seconds    {made['seconds']:.1f}",
        "device     cpu",
        f"made at    {made['made_at']}",
        f"version    {made['version']}",
        "start      {init: content, from: none}",
    ]

    as_json = invoke("show", output, "--json")
    assert as_json.exit_code == 0, as_json.output
    info = json.loads(as_json.stdout)
    assert info["key"] == metadata[KEY_METADATA]
    assert info["content"] == {
        "name": "chelsea.png",
        "sha256": file_sha256(ran.root / "chelsea.png"),
    }
    assert info["style"]["name"] == "starry_night.jpg"
    assert info["params"] == json.loads(metadata[RECIPE_METADATA])["params"]
    assert info["params"]["size"] == 48
    assert info["losses"] == losses
    assert (info["steps"], info["device"], info["made_at"]) == (2, "cpu", made["made_at"])
    assert info["algorithm"] == "6" and info["init_image"] is None
    assert info["start"] == {"init": "content", "from": None}


def test_show_prints_the_start_when_recorded(tmp_path: Path) -> None:
    output = tmp_path / "made.png"
    info = PngInfo()
    info.add_text(KEY_METADATA, "a" * 24)
    info.add_text(START_METADATA, json.dumps({"init": "output", "from": "b" * 24}))
    Image.new("RGB", (8, 8)).save(output, pnginfo=info)

    result = invoke("show", output)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2] == "content    not recorded"
    assert "settings   not recorded" in lines
    assert lines[-1] == f"start      {{init: output, from: {'b' * 24}}}"
    assert json.loads(invoke("show", output, "--json").stdout)["start"] == {
        "init": "output",
        "from": "b" * 24,
    }


NESTED = "[" * 100_000 + "]" * 100_000  # deeper than json can parse: a RecursionError


def test_show_and_dry_run_read_past_deeply_nested_metadata(write_manifest: Writer) -> None:
    """An output whose every JSON value is nested past what json parses: each reads as not
    recorded, and the task runs again for want of a recipe."""
    manifest = write_manifest(
        content=[str(CONTENT / "chelsea.png")], style=[str(STYLE / "the_scream.jpg")], format="png"
    )
    (task,) = plan(load_manifest(manifest))
    parts = (RECIPE_METADATA, PARAMS_METADATA, SOURCE_METADATA, RESULT_METADATA, START_METADATA)
    metadata = {KEY_METADATA: "0" * 24, **dict.fromkeys(parts, NESTED)}
    save_image(Image.new("RGB", (64, 43)), task.output, metadata, root=task.folder)
    assert read_metadata(task.output)[RECIPE_METADATA] == NESTED

    shown = invoke("show", task.output)
    assert shown.exit_code == 0, shown.output
    assert "Traceback" not in shown.output
    lines = shown.stdout.splitlines()
    assert lines[1] == f"key        {'0' * 24}"
    shown_parts = "content style algorithm weights settings losses steps seconds device"
    assert [line.split("  ")[0] for line in lines[2:]] == [
        *shown_parts.split(),
        "made at",
        "version",
    ]
    assert all(line.endswith("  not recorded") for line in lines[2:])

    why = invoke(manifest, "--dry-run", "-v")
    assert why.exit_code == 0, why.output
    assert "Traceback" not in why.output
    assert f"{PAD}{NO_RECIPE}" in why.stdout.splitlines()
    assert "1 to run, 0 up to date, 1 in all" in why.stdout


def test_show_refuses_what_is_not_an_output(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    cases = {
        text: f"Error: {text} is not an image nst-batch can read\n",
        tmp_path / "missing.png": f"Error: {tmp_path / 'missing.png'}: no such file\n",
        tmp_path: f"Error: {tmp_path} is a folder, not an image\n",
        CONTENT / "chelsea.png": (
            f"Error: {CONTENT / 'chelsea.png'} has no nst-batch metadata: it was not made by "
            "nst-batch, or a tool that rewrote it dropped its metadata\n"
        ),
    }
    for path, message in cases.items():
        result = invoke("show", path, "--json")
        assert result.exit_code == 2, (path, result.output)
        assert result.stderr == message
        assert result.stdout == ""


# --- report --------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_exits_1_and_lists_the_failed_tasks(gallery: Path, ran: Ran) -> None:
    out = gallery.parent / "out"
    error = _bad_error(ran)
    counts = "6 tasks planned: 4 done, 2 failed, 0 interrupted, 0 outdated, 0 not yet run"

    result = invoke("report", gallery)

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        counts,
        f"  failed:      bad x starry_night: {error}",
        f"  failed:      bad x the_scream: {error}",
        f"results: {out / 'results.csv'}",
        f"gallery: {out / 'index.html'}",
    ]

    quiet = invoke("report", gallery, "-q")
    assert quiet.exit_code == 1
    assert quiet.stdout.splitlines() == result.stdout.splitlines()[:3]

    verbose = invoke("report", gallery, "-v")
    assert verbose.exit_code == 1
    assert verbose.stdout.splitlines()[:7] == [
        counts,
        "  done:        chelsea x starry_night",
        "  done:        coffee x starry_night",
        f"  failed:      bad x starry_night: {error}",
        "  done:        chelsea x the_scream",
        "  done:        coffee x the_scream",
        f"  failed:      bad x the_scream: {error}",
    ]

    subset = invoke("report", gallery, "--only", "content=c*")  # the failures left out
    assert subset.exit_code == 0, subset.output
    assert subset.stdout.splitlines()[0] == (
        "4 tasks planned: 4 done, 0 failed, 0 interrupted, 0 outdated, 0 not yet run"
    )
    # the page still shows the whole gallery
    states = [c.split('data-state="')[1].split('"')[0] for c in _cells(out / "index.html")]
    assert states == ["done"] * 4 + ["failed"] * 2


@pytest.mark.slow
def test_report_json(gallery: Path, ran: Ran) -> None:
    out = gallery.parent / "out"
    rows = {r.output: r for r in read_rows(out / "results.csv")}

    result = invoke("report", gallery, "--json")

    assert result.exit_code == 1, result.output
    view = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert view["total"] == 6
    assert view["counts"] == {
        "done": 4,
        "failed": 2,
        "interrupted": 0,
        "outdated": 0,
        "pending": 0,
    }
    tasks = {t["output"]: t for t in view["tasks"]}
    assert list(tasks)[:3] == [*DONE[:2], "bad__starry_night.png"]
    done = tasks["chelsea__starry_night.png"]
    row = rows["chelsea__starry_night.png"]
    assert done == {
        "content": "chelsea",
        "style": "starry_night",
        "variant": "",
        "output": "chelsea__starry_night.png",
        "state": "done",
        "status": "done",
        "losses": {
            "content": row.content_loss,
            "style": row.style_loss,
            "tv": row.tv_loss,
            "temporal": row.temporal_loss,  # a sequence frame's; none for a still
            "total": row.total_loss,
        },
        "steps": 2,
        "stopped": "budget",  # a cold start runs its whole budget
        "seconds": row.seconds,
        "error": "",
        "key": row.key,
        "run": row.run,
    }
    assert len({t["run"] for t in tasks.values() if t["run"]}) == 1  # one run made them
    failed = tasks["bad__the_scream.png"]
    assert (failed["state"], failed["losses"], failed["steps"]) == ("failed", None, None)
    assert failed["error"] == _bad_error(ran)

    # settings that changed: every task outdated, its last result kept in the view
    changed = json.loads(invoke("report", gallery, "--json", "--set", "params.steps=3").stdout)
    assert changed["counts"]["outdated"] == 6
    assert changed["tasks"][0]["status"] == "done"
    assert changed["tasks"][0]["key"] != row.key


def test_report_json_on_a_fresh_gallery(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)

    result = invoke("report", manifest, "--json")

    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["counts"]["pending"] == 6
    assert {t["state"] for t in view["tasks"]} == {"pending"}
    assert view["tasks"][0]["status"] is None and view["tasks"][0]["error"] == ""


def test_report_lists_interrupted_tasks(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    task = plan(load_manifest(manifest))[0]
    (tmp_path / "out").mkdir()
    with ResultsWriter(tmp_path / "out" / "results.csv") as writer:
        writer.write(_row(task, "interrupted", error="stopped by SIGTERM"))

    result = invoke("report", manifest, "-q")

    assert result.exit_code == 0, result.output  # interrupted is not failed: a rerun finishes
    assert result.stdout.splitlines() == [
        "6 tasks planned: 0 done, 0 failed, 1 interrupted, 0 outdated, 5 not yet run"
    ]
    plain = invoke("report", manifest)
    assert plain.stdout.splitlines()[1] == (
        "  interrupted: chelsea x starry_night: stopped by SIGTERM"
    )


def test_explaining_needs_no_torch(tmp_path: Path) -> None:
    """--dry-run -v, --only, show and report decide from files alone: no model, no torch."""
    manifest = _gallery(tmp_path)
    output = tmp_path / "made.png"
    info = PngInfo()
    info.add_text(KEY_METADATA, "a" * 24)
    Image.new("RGB", (8, 8)).save(output, pnginfo=info)
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from nst_batch.cli import main\n"
        f"m, o = {str(manifest)!r}, {str(output)!r}\n"
        "for args in ([m, '--dry-run', '-v', '--only', 'content=c*'], ['show', o, '--json'],\n"
        "             ['report', m, '--json']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
