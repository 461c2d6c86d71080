"""Reported bugs 9 to 15, through the real `nst-batch` command (CliRunner on nst_batch.cli:main):
names the file system cannot hold, GIF frame rates, duplicate YAML keys, impossible Slurm
arrays, what a folder takes, odd file names in a folder, and sequences with --only and
init_image templates. Refusals exit 2 with one sentence naming the file, key or task and what
to do; what runs is checked by its plan (a dry run) or its files.

Real runs are 48 px and 2 steps on copies of the bundled images.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CONTENT, STYLE, invoke
from PIL import Image

from nst_batch.gallery.animation import frame_duration
from nst_batch.manifest import load_manifest
from nst_batch.manifest.inputs import image_suffixes
from nst_batch.manifest.schema import MIN_FPS
from nst_batch.plan import TEMPORARY_BYTES, file_system_limits, plan
from nst_batch.results import read_rows

CHELSEA = CONTENT / "chelsea.png"  # 451x300
COFFEE = CONTENT / "coffee.png"
SHIPWRECK = STYLE / "shipwreck.jpg"
STYLE_SUFFIX = "__shipwreck.jpg"  # what the default name template adds to a content's name


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str  # stdout and stderr together


def _invoke(*args: object, env: dict[str, str] | None = None) -> Outcome:
    """`invoke`, failing on any exception but the command's exit."""
    result = invoke(*args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return Outcome(result.exit_code, result.output)


def _check(outcome: Outcome, code: int, *fragments: str) -> None:
    assert outcome.code == code, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    for fragment in fragments:
        assert fragment in outcome.output, (fragment, outcome.output)


def _error(outcome: Outcome) -> str:
    """The one `Error:` line of a refusal."""
    errors = [line for line in outcome.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, outcome.output
    return errors[0]


def _would_run(outcome: Outcome) -> list[str]:
    """The outputs a dry run lists, in its order."""
    lines = outcome.output.splitlines()
    return [line.split("->")[1].strip() for line in lines if line.lstrip().startswith("would run")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path with images/chelsea.png, images/coffee.png and style/shipwreck.jpg."""
    for source, target in (
        (CHELSEA, "images/chelsea.png"),
        (COFFEE, "images/coffee.png"),
        (SHIPWRECK, "style/shipwreck.jpg"),
    ):
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp_path / target)
    return tmp_path


def _manifest(root: Path, text: str, name: str = "m.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _gallery(root: Path, content: str, extra: str = "", output: str = "out") -> Path:
    """A manifest of `content` (YAML) in shipwreck at 48 px and 2 steps, plus `extra` lines."""
    return _manifest(
        root,
        f"output: {output}\ncontent: {content}\nstyle: [style/shipwreck.jpg]\n"
        f"params: {{size: 48, steps: 2}}\n{extra}",
    )


def _frames(folder: Path, count: int = 3, suffix: str = ".png") -> Path:
    """`count` 64x48 crops of chelsea, each 2 px right of the one before: f1, f2, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(CHELSEA).convert("RGB").resize((200, 133))
    for i in range(count):
        photo.crop((40 + 2 * i, 40, 104 + 2 * i, 88)).save(folder / f"f{i + 1}{suffix}")
    return folder


# --- 9: names and paths the file system cannot hold -------------------------------------------


@pytest.fixture
def name_max(root: Path) -> int:
    limit, _ = file_system_limits(root / "out")
    assert limit == os.pathconf(root, "PC_NAME_MAX")
    return limit


def test_the_longest_output_name_that_fits_runs_and_writes_its_curve(
    root: Path, name_max: int
) -> None:
    """The curve's temporary `.<output>.json.<8 hex>.nst-batch.tmp` is the longest name a task
    writes: an output name that leaves it exactly `name_max` bytes runs whole."""
    longest = name_max - TEMPORARY_BYTES - len(".json")  # 226 bytes on most file systems
    stem = "c" * (longest - len(STYLE_SUFFIX))
    manifest = _gallery(root, f"[{{path: images/chelsea.png, name: {stem}}}]")
    _check(_invoke(manifest), 0, "1 tasks: 1 done, 0 skipped, 0 failed")
    output = root / "out" / f"{stem}{STYLE_SUFFIX}"
    assert len(output.name) == longest
    assert output.is_file()
    assert (root / "out" / f"{output.name}.json").is_file()
    assert [row.status for row in read_rows(root / "out" / "results.csv")] == ["done"]


@pytest.mark.parametrize("command", [["--dry-run"], []], ids=["dry-run", "run"])
def test_an_output_name_one_byte_too_long_is_refused_naming_the_task(
    root: Path, name_max: int, command: list[str]
) -> None:
    longest = name_max - TEMPORARY_BYTES - len(".json")
    stem = "c" * (longest + 1 - len(STYLE_SUFFIX))
    manifest = _gallery(root, f"[{{path: images/chelsea.png, name: {stem}}}]")
    outcome = _invoke(manifest, *command)
    _check(
        outcome,
        2,
        f"the task {stem[:28]}...",
        "x shipwreck would write its loss curve",
        f"a name of {longest + 1 + 5} bytes (and 24 more for the temporary written first), "
        f"over the file system's limit of {name_max} bytes a name; make it 1 bytes shorter",
        "use a shorter 'name' template or shorter image names (give one a 'name:')",
    )
    assert str(manifest) in _error(outcome)
    assert not (root / "out").exists()


def test_snapshots_count_when_save_every_is_set(root: Path, name_max: int) -> None:
    """`<stem>.step0002.jpg` is 9 bytes longer than `<stem>.jpg`, the curve only 5."""
    longest = name_max - TEMPORARY_BYTES - len(".json")
    stem = "c" * (longest - len(STYLE_SUFFIX))
    manifest = _gallery(root, f"[{{path: images/chelsea.png, name: {stem}}}]")
    _check(_invoke(manifest, "--dry-run"), 0, "1 to run")
    outcome = _invoke(manifest, "--dry-run", "--set", "params.save_every=1")
    _check(
        outcome,
        2,
        "would write its snapshots, such as",
        f"shipwreck.step0002.jpg', a name of {longest + 9} bytes",
        "make it 4 bytes shorter",
    )


def test_a_sequence_animation_name_too_long_is_refused(root: Path, name_max: int) -> None:
    _frames(root / "frames", count=2)
    # The frames' folder `<name>__shipwreck` fits; `<name>__shipwreck.gif` and its temporary not.
    folder = name_max - TEMPORARY_BYTES - len(".gif") + 1
    name = "s" * (folder - len("__shipwreck"))
    manifest = _gallery(root, f"[{{path: frames, sequence: true, name: {name}, animation: gif}}]")
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        "would write its sequence's animation",
        f"a name of {folder + 4} bytes",
        f"limit of {name_max} bytes a name",
    )
    # Without the animation, the same frames fit.
    _check(_invoke(manifest, "--dry-run", "--set", "content.0.animation=none"), 0, "2 to run")


def test_a_folder_name_too_long_is_refused(root: Path, name_max: int) -> None:
    manifest = _gallery(
        root, "[images/chelsea.png]", extra=f"name: '{'f' * (name_max + 1)}/{{content}}'\n"
    )
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        "the task chelsea x shipwreck would write into the folder",
        f"a name of {name_max + 1} bytes, over the file system's limit of {name_max} bytes",
    )


@pytest.mark.parametrize("command", [["--dry-run"], []], ids=["dry-run", "run"])
def test_an_output_path_over_path_max_is_refused_not_a_traceback(
    root: Path, command: list[str]
) -> None:
    _, path_max = file_system_limits(root / "out")
    levels = path_max // 201 + 1  # folders of 200 bytes each, the path past PATH_MAX
    template = "/".join(["{content}"] * levels) + "__{style}"
    manifest = _gallery(
        root, f"[{{path: images/chelsea.png, name: {'d' * 200}}}]", extra=f"name: '{template}'\n"
    )
    outcome = _invoke(manifest, *command)
    _check(
        outcome,
        2,
        "and the gallery its thumbnail (thumbs/outputs/<output>.jpg): a path of",
        f"over the file system's limit of {path_max - 1} bytes a path; choose a shorter 'output'",
    )
    assert not (root / "out").exists()


# --- 10: a GIF's frame rate -------------------------------------------------------------------


RANGE = "a GIF shows a frame for 1/100 s to 655.35 s, so fps is from 0.00153 to 100"
NUMBER = "Input should be a number of frames a second, such as 12"


@pytest.mark.parametrize(
    ("fps", "problem"),
    [
        ("0.001", f"{RANGE} (got 0.001)"),
        ("101", f"{RANGE} (got 101)"),
        (".nan", f"{RANGE} (got nan)"),
        ('"7"', f"{NUMBER} (got '7')"),
        ("true", f"{NUMBER} (got True)"),
    ],
)
def test_a_frame_rate_a_gif_cannot_hold_is_refused(root: Path, fps: str, problem: str) -> None:
    _frames(root / "frames", count=2)
    manifest = _gallery(root, f"[{{path: frames, sequence: true, animation: gif, fps: {fps}}}]")
    outcome = _invoke(manifest, "--dry-run")
    _check(outcome, 2)
    assert _error(outcome) == f"Error: {manifest}: content.0.fps: {problem}"


def test_the_slowest_frame_rate_is_written_and_reported(root: Path) -> None:
    """At the lowest fps a frame shows 655.35 s, the longest delay a GIF holds: the animation
    is written (Pillow's GIF writer refused 0.001 fps after every task had run)."""
    _frames(root / "frames", count=2)
    manifest = _gallery(
        root, f"[{{path: frames, sequence: true, animation: gif, fps: {MIN_FPS!r}}}]"
    )
    _check(_invoke(manifest), 0, "2 tasks: 2 done, 0 skipped, 0 failed")
    assert frame_duration(MIN_FPS) == 655_350
    with Image.open(root / "out" / "frames__shipwreck.gif") as gif:
        assert gif.n_frames == 2
        assert gif.info["duration"] == 655_350
    _check(_invoke("report", manifest), 0, "2 tasks planned: 2 done")


# --- 11: a key given twice --------------------------------------------------------------------


def test_two_params_blocks_are_refused_naming_both_lines(root: Path) -> None:
    manifest = _manifest(
        root,
        """\
        output: out
        content: [images/chelsea.png]
        params: {size: 48}
        style: [style/shipwreck.jpg]
        params:
          steps: 2
        """,
    )
    outcome = _invoke(manifest, "--dry-run")
    _check(outcome, 2)
    assert _error(outcome) == (
        f"Error: {manifest}: the key 'params' is given twice, at lines 3 and 5 (YAML would keep "
        "only the last); keep one of them, merging what both say"
    )


def test_a_repeated_key_deep_in_a_list_is_refused(root: Path) -> None:
    manifest = _manifest(
        root,
        """\
        output: out
        content:
          - images/coffee.png
          - path: images/chelsea.png
            params: {size: 48, steps: 2, size: 64}
        style: [style/shipwreck.jpg]
        """,
    )
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        "the key 'content[1].params.size' is given twice, on line 5, at columns 14 and 34",
    )


def test_a_merge_key_may_be_overridden(root: Path) -> None:
    """`<<: *base` then `size:` is YAML's way to override, not a key given twice."""
    manifest = _manifest(
        root,
        """\
        output: out
        content: [images/chelsea.png]
        style:
          - path: style/shipwreck.jpg
            params: &base {size: 40, steps: 2}
        params:
          <<: *base
          size: 48
        """,
    )
    _check(_invoke(manifest, "--dry-run"), 0, "1 to run")
    assert load_manifest(manifest).base == {"size": 48, "steps": 2}


# --- 12: Slurm array variables no array has ---------------------------------------------------

ARRAY = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5"}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"SLURM_ARRAY_TASK_STEP": "-2"},
            "SLURM_ARRAY_TASK_STEP is '-2', but a Slurm job array sets it to a whole number, 1 "
            "or more, so this is no task of an array; submit it with sbatch --array, unset the "
            "SLURM_ARRAY_TASK_* variables, or give --shard K/N",
        ),
        ({"SLURM_ARRAY_TASK_COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT is '0', but a Slurm job"),
        (
            {"SLURM_ARRAY_TASK_MAX": "0"},
            "SLURM_ARRAY_TASK_MAX is '0', but a Slurm job array "
            "sets it to a whole number, SLURM_ARRAY_TASK_MIN (1) or more",
        ),
        ({"SLURM_ARRAY_TASK_ID": "one"}, "SLURM_ARRAY_TASK_ID is 'one', but a Slurm job"),
        (
            {"SLURM_ARRAY_TASK_MAX": "1", "SLURM_ARRAY_TASK_COUNT": "3"},
            "this Slurm array's task IDs (from 1 to 1, 3 tasks) are not evenly spaced",
        ),
    ],
)
def test_impossible_slurm_array_variables_are_a_sentence(
    root: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name in ("STEP", "COUNT"):
        monkeypatch.delenv(f"SLURM_ARRAY_TASK_{name}", raising=False)
    manifest = _gallery(root, "[images/chelsea.png]")
    outcome = _invoke(manifest, "--dry-run", env={**ARRAY, **variables})
    _check(outcome, 2, message)
    assert "--array=0--1" not in outcome.output
    assert not (root / "out").exists()


# --- 13: what a folder takes ------------------------------------------------------------------


def test_a_folder_takes_what_pillow_reads_and_skips_hidden_files(root: Path) -> None:
    photos = root / "photos"
    photos.mkdir()
    picture = Image.open(CHELSEA).convert("RGB")
    picture.save(photos / "chelsea.ppm")
    Image.open(COFFEE).convert("RGB").save(photos / "coffee.avif")
    picture.save(photos / "scan.pdf")  # a document: not taken
    (photos / "._chelsea.ppm").write_bytes(b"\x00\x05\x16\x07" + bytes(76))  # AppleDouble
    shutil.copyfile(CHELSEA, photos / ".hidden.png")
    (photos / "notes.txt").write_text("not a picture")
    assert {".ppm", ".avif", ".jpg", ".png"} <= image_suffixes()
    assert not {".pdf", ".eps", ".txt"} & image_suffixes()
    for content in ("[photos]", "['photos/*']"):
        manifest = _gallery(root, content)
        outcome = _invoke(manifest, "--dry-run")
        _check(outcome, 0, "2 to run, 0 up to date, 2 in all")
        assert _would_run(outcome) == ["chelsea__shipwreck.jpg", "coffee__shipwreck.jpg"]
    tasks = plan(load_manifest(manifest))
    assert [t.content.path.name for t in tasks] == ["chelsea.ppm", "coffee.avif"]


def test_a_folder_of_hidden_files_only_says_they_are_skipped(root: Path) -> None:
    (root / "photos").mkdir()
    shutil.copyfile(CHELSEA, root / "photos" / "._chelsea.png")
    manifest = _gallery(root, "[photos]")
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        f"content[0] 'photos': the folder {root / 'photos'} holds no image (.jpg, .jpeg, .png",
        "or another format Pillow reads; hidden files are skipped)",
    )


# --- 14: a file name that is not UTF-8, in a folder -------------------------------------------


def test_a_non_utf8_name_in_a_folder_runs_beside_a_bad_image(root: Path) -> None:
    """Neither stops the gallery: the badly named file is stylized under its escaped name,
    the bad image fails alone, and the others run."""
    photos = root / "photos"
    photos.mkdir()
    shutil.copyfile(CHELSEA, photos / "chelsea.png")
    shutil.copyfile(COFFEE, photos / os.fsdecode(b"bad\xff.png"))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    manifest = _gallery(root, "[photos]")
    outcome = _invoke(manifest)
    _check(outcome, 1, "3 tasks: 2 done, 0 skipped, 1 failed")
    made = {row.content: row.status for row in read_rows(root / "out" / "results.csv")}
    assert made == {"bad\\xff": "done", "broken": "failed", "chelsea": "done"}
    assert (root / "out" / "bad\\xff__shipwreck.jpg").is_file()
    _check(_invoke("report", manifest), 1, "3 tasks planned: 2 done, 1 failed")


# --- 15: sequences with --only, name collisions and init_image templates ----------------------


def _sequence(root: Path, extra: str = "", output: str = "out") -> Path:
    _frames(root / "shots", count=3)
    return _gallery(
        root,
        "[images/coffee.png, {path: shots, sequence: true}]",
        extra=extra,
        output=output,
    )


def test_only_a_sequence_name_selects_its_frames(root: Path) -> None:
    manifest = _sequence(root)
    outcome = _invoke(manifest, "--dry-run", "--only", "content=shots")
    _check(outcome, 0, "3 to run, 0 up to date, 3 in all matching --only (of 4 planned)")
    assert _would_run(outcome) == [f"shots__shipwreck/f{i}.jpg" for i in (1, 2, 3)]
    _check(
        _invoke(manifest, "--dry-run", "--only", "content=shot"),
        2,
        "--only content=shot: matches no content of the plan (there are: coffee, shots, "
        "shots/f1, shots/f2, shots/f3)",
    )


def test_only_a_later_frame_takes_the_frames_before_it_along(root: Path) -> None:
    """After a settings change every frame is outdated: frame 3 starts from frame 2 made with
    the new settings, so frames 1 and 2 run first; those up to date would cost nothing."""
    manifest = _sequence(root)
    _check(_invoke(manifest), 0, "4 tasks: 4 done")
    outcome = _invoke(manifest, "--dry-run", "--only", "content=shots/f2")
    _check(outcome, 0, "0 to run, 2 up to date, 2 in all matching --only (of 4 planned)")
    changed = ("--set", "params.steps=3", "--only", "content=shots/f3")
    assert "note: --only" not in outcome.output  # f1 up to date: nothing taken along to run
    outcome = _invoke(manifest, "--dry-run", *changed)
    _check(outcome, 0, "3 to run, 0 up to date, 3 in all matching --only (of 4 planned)")
    assert _would_run(outcome) == [f"shots__shipwreck/f{i}.jpg" for i in (1, 2, 3)]
    note = (
        "note: --only takes 2 earlier frames along: a frame starts from the one before it, "
        "made with the current settings"
    )
    assert note in outcome.output.splitlines()
    assert note not in _invoke(manifest, "--dry-run", "--set", "params.steps=3").output
    _check(_invoke(manifest, *changed), 0, "3 tasks: 3 done, 0 skipped, 0 failed")
    rows = read_rows(root / "out" / "results.csv")
    latest = {row.content: row.status for row in rows}  # the last row of each wins
    assert latest == {"coffee": "done", "shots/f1": "done", "shots/f2": "done", "shots/f3": "done"}
    assert [row.content for row in rows[4:]] == ["shots/f1", "shots/f2", "shots/f3"]


def test_two_frames_of_one_name_are_refused_with_advice_a_frame_can_follow(root: Path) -> None:
    _frames(root / "shots", count=2)
    shutil.copyfile(root / "shots" / "f1.png", root / "shots" / "f1.bmp")
    manifest = _gallery(root, "[{path: shots, sequence: true}]")
    outcome = _invoke(manifest, "--dry-run")
    _check(outcome, 2)
    assert _error(outcome) == (
        f"Error: {manifest}: content images {root / 'shots' / 'f1.bmp'} and "
        f"{root / 'shots' / 'f1.png'} share the name 'shots/f1', so their outputs would collide; "
        "the frames of content[0] are named by their files' stems, so rename or move one of the "
        "two files, or narrow the entry to one kind with a pattern such as 'clip/*.png'"
    )
    narrowed = _gallery(root, "[{path: 'shots/*.png', sequence: true}]")
    _check(_invoke(narrowed, "--dry-run"), 0, "2 to run")


def test_two_sequences_of_one_name_are_told_to_take_another_name(root: Path) -> None:
    _frames(root / "a" / "shots", count=1)
    _frames(root / "b" / "shots", count=1)
    manifest = _gallery(root, "[{path: a/shots, sequence: true}, {path: b/shots, sequence: true}]")
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        "share the name 'shots/f1', so their outputs would collide; give the sequence "
        "content[1] (or content[0]) another 'name:'",
    )


def test_an_init_image_template_finds_a_sequence_frames_preview(root: Path) -> None:
    """`preview/{content}__{style}.jpg` names, for each frame, the file a run with output
    `preview` wrote: `preview/shots__shipwreck/f1.jpg`, as for outputs."""
    _check(_invoke(_sequence(root, output="preview")), 0, "4 tasks: 4 done")
    final = _manifest(
        root,
        """\
        output: final
        content: [images/coffee.png, {path: shots, sequence: true}]
        style: [style/shipwreck.jpg]
        params: {size: 48, steps: 2, init: image, init_image: "preview/{content}__{style}.jpg"}
        """,
        name="final.yaml",
    )
    _check(_invoke(final, "--dry-run"), 0, "4 to run, 0 up to date, 4 in all")
    inits = {t.content.name: t.params.init_image for t in plan(load_manifest(final))}
    preview = root.resolve() / "preview"
    assert inits == {
        "coffee": str(preview / "coffee__shipwreck.jpg"),
        "shots/f1": str(preview / "shots__shipwreck" / "f1.jpg"),
        "shots/f2": str(preview / "shots__shipwreck" / "f2.jpg"),
        "shots/f3": str(preview / "shots__shipwreck" / "f3.jpg"),
    }
    (preview / "shots__shipwreck" / "f2.jpg").unlink()
    _check(
        _invoke(final, "--dry-run"),
        2,
        f"init_image for shots/f2 x shipwreck: no readable file "
        f"{preview / 'shots__shipwreck' / 'f2.jpg'}; make it first",
    )
