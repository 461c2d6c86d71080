"""Nothing lost: careless or hostile output folders and manifests, through the real command.

Each test builds its inputs in tmp_path from the bundled images and runs `nst-batch` (click's
CliRunner, or the installed executable where a second process must run at the same time).
It checks the exit code, the message, and that the inputs and every file outside the output
folder are byte-identical afterwards. Runs are tiny (32 to 48 px, 1 or 2 steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from conftest import CONTENT, STYLE, invoke, write_manifest_in

from nst_batch import layout
from nst_batch.results import read_rows

EXECUTABLE = Path(sys.executable).parent / "nst-batch"
TINY = {"size": 48, "steps": 2}  # every run's params: the outcome is checked, not the image


def _snapshot(top: Path, skip: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} of every file under `top`, except under `skip`."""
    files = {}
    for here, folders, names in os.walk(top):
        if skip is not None:
            folders[:] = [f for f in folders if Path(here, f) != skip]
        for name in names:
            path = Path(here, name)
            if not path.is_symlink():
                files[str(path.relative_to(top))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _clean_exit_2(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    for fragment in fragments:
        assert fragment in result.output


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with two content photos and a style painting, as a user keeps them."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(CONTENT / "chelsea.png", folder / "chelsea.jpg")  # PNG bytes, .jpg name
    shutil.copy(CONTENT / "coffee.png", folder / "coffee.png")
    (tmp_path / "paintings").mkdir()
    shutil.copy(STYLE / "starry_night.jpg", tmp_path / "paintings" / "starry_night.jpg")
    return tmp_path


# -- 1. an output never overwrites an input ---------------------------------------------------


def test_an_output_named_like_its_content_image_is_refused(photos: Path) -> None:
    manifest = write_manifest_in(
        photos,
        output="imgs",
        content=["imgs/"],
        style=["paintings/"],
        name="{content}",
        params=TINY,
    )
    before = _snapshot(photos)
    result = invoke(manifest)
    _clean_exit_2(result, "content image", "chelsea.jpg", "would be overwritten by the task")
    assert _snapshot(photos) == before


def test_an_output_over_the_style_image_is_refused(photos: Path) -> None:
    manifest = write_manifest_in(
        photos,
        output=".",
        content=["imgs/chelsea.jpg"],
        style=["paintings/"],
        name="paintings/{style}",
        params=TINY,
    )
    before = _snapshot(photos)
    result = invoke(manifest)
    _clean_exit_2(result, "style image", "starry_night.jpg", "paintings/starry_night.jpg")
    assert _snapshot(photos) == before


@pytest.mark.parametrize(
    "name", ["contact_sheet.jpg", "contact_sheet-002.jpg", "pages/photo.jpg", "PAGES/photo.jpg"]
)
def test_an_input_where_nst_batch_keeps_its_files_is_refused(photos: Path, name: str) -> None:
    (photos / "out" / name).parent.mkdir(parents=True)
    shutil.copy(CONTENT / "coffee.png", photos / "out" / name)
    manifest = write_manifest_in(photos, content=[f"out/{name}"], style=["paintings/"], params=TINY)
    before = _snapshot(photos)
    _clean_exit_2(invoke(manifest), "is where nst-batch keeps its own files", name)
    assert _snapshot(photos) == before


def test_output_in_the_content_folder_plans_the_same_tasks_on_every_rerun(photos: Path) -> None:
    manifest = write_manifest_in(
        photos, output="imgs", content=["imgs/"], style=["paintings/"], params=TINY
    )
    inputs = {name: (photos / "imgs" / name).read_bytes() for name in ("chelsea.jpg", "coffee.png")}
    first = invoke(manifest)
    assert first.exit_code == 0, first.output
    assert (photos / "imgs" / "contact_sheet.jpg").is_file()
    for _ in range(2):
        again = invoke(manifest, "--dry-run")
        assert again.exit_code == 0, again.output
        assert again.output.splitlines()[-1] == "0 to run, 2 up to date, 2 in all"
        assert "__starry_night__starry_night" not in again.output
    for name, data in inputs.items():
        assert (photos / "imgs" / name).read_bytes() == data


# -- 2. two tasks never write one file ----------------------------------------------------------


def test_a_dot_slash_name_is_the_same_output(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path,
        content=[
            str(CONTENT / "chelsea.png"),
            {"path": str(CONTENT / "astronaut.png"), "name": "./chelsea"},
        ],
        style=[str(STYLE / "starry_night.jpg")],
        params=TINY,
    )
    _clean_exit_2(invoke(manifest, "--dry-run"), "share the name 'chelsea'")
    assert not (tmp_path / "out").exists()


def test_style_names_with_and_without_a_trailing_slash_collide(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path,
        content=[str(CONTENT / "chelsea.png")],
        style=[
            {"path": str(STYLE / "starry_night.jpg"), "name": "x"},
            {"path": str(STYLE / "the_scream.jpg"), "name": "x/"},
        ],
        name="{style}/{content}",
        params=TINY,
    )
    _clean_exit_2(invoke(manifest), "share the name 'x'")


# -- 3 and 4. report never loses a row -------------------------------------------------------


def _stamps(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under `root` by (inode, mtime, size): what a write would change."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_report_answers_during_a_run_and_writes_nothing(tmp_path: Path) -> None:
    """While a run holds the output folder (held here as a run holds it, so that nothing
    depends on how fast a real run is), report counts what is recorded, says a run is in
    progress and since when, and changes no file: not the merged table, not the page."""
    manifest = _gallery(tmp_path)
    assert invoke(manifest, "--shard", "1/2").exit_code == 0  # a shard's rows, not merged
    out = tmp_path / "out"
    with layout.hold(out, None):
        before = _stamps(out)
        report = invoke("report", manifest)
        as_json = invoke("report", manifest, "--json")
        after = _stamps(out)
    assert report.exit_code == 0, report.output
    assert report.output.startswith(
        "2 tasks planned: 1 done, 0 failed, 0 interrupted, 0 outdated, 1 not yet run"
    )
    assert "a run is in progress since 20" in report.output
    assert f"(another nst-batch run (PID {os.getpid()}) is working on this output)" in (
        report.output.replace("\n", " ")
    )
    assert "nothing was written" in report.output
    assert json.loads(as_json.output)["running"]["since"] > 0
    assert after == before
    assert not (out / "results.csv").exists()  # merged only once no run holds the folder
    assert invoke("report", manifest).exit_code == 0
    assert (out / "results.csv").exists()


def test_a_shard_refuses_to_start_while_a_whole_run_holds_the_output(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    with layout.hold(tmp_path / "out", None):
        shard = subprocess.run(
            [str(EXECUTABLE), str(manifest), "--shard", "1/1"], capture_output=True, text=True
        )
    assert shard.returncode == 75, shard.stderr
    assert f"(PID {os.getpid()})" in shard.stderr and "Traceback" not in shard.stderr
    assert not (tmp_path / "out" / "results-shard-1-of-1.csv").exists()


def test_report_with_a_narrower_plan_keeps_every_row(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path, params=TINY)  # the 2x2 gallery
    assert invoke(manifest).exit_code == 0
    narrow = invoke("report", manifest, "--set", f"style={STYLE / 'the_scream.jpg'}")
    assert narrow.exit_code == 0, narrow.output
    assert narrow.output.startswith("2 tasks planned: 2 done")
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert len(rows) == 4 and {r.status for r in rows} == {"done"}


# -- 6. no write follows a symbolic link out of the output folder ----------------------------


@pytest.mark.parametrize("name", [layout.LOCK, "results.csv", "index.html"])
def test_a_planted_file_link_is_refused(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).symlink_to(victim)
    manifest = write_manifest_in(
        tmp_path,
        content=[str(CONTENT / "chelsea.png")],
        style=[str(STYLE / "starry_night.jpg")],
        params=TINY,
    )
    before = _snapshot(tmp_path, skip=tmp_path / "out")
    result = invoke(manifest)
    _clean_exit_2(result, f"{tmp_path / 'out' / name} is a symbolic link")
    assert _snapshot(tmp_path, skip=tmp_path / "out") == before
    assert victim.read_text() == "precious\n"


def test_a_planted_folder_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thumbs").symlink_to(elsewhere, target_is_directory=True)
    manifest = write_manifest_in(
        tmp_path,
        content=[str(CONTENT / "chelsea.png")],
        style=[str(STYLE / "starry_night.jpg")],
        params=TINY,
    )
    result = invoke(manifest)
    _clean_exit_2(result, "thumbs is a symbolic link")
    assert list(elsewhere.iterdir()) == []
    report = invoke("report", manifest)
    assert report.exit_code == 0  # nothing ran yet: report has no results to write
    assert list(elsewhere.iterdir()) == []


def test_the_atomic_writer_refuses_a_link_made_after_the_check(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "a" / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(layout.UnsafeWrite, match="is a symbolic link"):
        layout.write_atomically(root / "a" / "b" / "x.jpg", b"data", root)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# -- 7. a whole run and a shard of one output never run at once -------------------------------


def _gallery(tmp_path: Path) -> Path:
    """chelsea and coffee in starry_night."""
    return write_manifest_in(tmp_path, style=[str(STYLE / "starry_night.jpg")], params=TINY)


def test_a_whole_run_waits_for_a_running_shard(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    with layout.hold(tmp_path / "out", (1, 2)):
        whole = invoke(manifest)
        other_split = invoke(manifest, "--shard", "1/3")
        same_split = invoke(manifest, "--shard", "2/2")
    assert whole.exit_code == 75, whole.output
    assert f"shards 1/2 (PID {os.getpid()})" in whole.output
    assert other_split.exit_code == 75, other_split.output
    assert "shards of another split of this output are running (1/2" in other_split.output
    assert same_split.exit_code == 0, same_split.output  # shards of one N run side by side
    assert len(read_rows(tmp_path / "out" / "results-shard-2-of-2.csv")) == 1
    assert not (tmp_path / "out" / "results.csv").exists()


def test_a_shard_waits_for_a_whole_run(tmp_path: Path) -> None:
    manifest = _gallery(tmp_path)
    with layout.hold(tmp_path / "out", None):
        shard = invoke(manifest, "--shard", "1/2")
    assert shard.exit_code == 75, shard.output
    assert f"(PID {os.getpid()})" in shard.output and "is locked" in shard.output


# -- 16. temporaries a killed run left are removed --------------------------------------------


def test_stale_temporaries_of_every_kind_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "thumbs" / "outputs").mkdir(parents=True)
    stale = [
        out / ".index.html.0123abcd.nst-batch.tmp",
        out / ".contact_sheet.jpg.89abcdef.nst-batch.tmp",
        out / ".results.csv.deadbeef.nst-batch.tmp",
        out / "thumbs" / "outputs" / ".chelsea__starry_night.jpg.jpg.0badcafe.nst-batch.tmp",
    ]
    for path in stale:
        path.write_bytes(b"torn")
    mine = out / ".notes.tmp"  # not ours: kept
    mine.write_text("mine")
    result = invoke(_gallery(tmp_path), "--shard", "1/2")
    assert result.exit_code == 0, result.output
    assert all(path.exists() for path in stale)  # a shard touches only its own outputs'
    result = invoke(_gallery(tmp_path))
    assert result.exit_code == 0, result.output
    assert [path for path in stale if path.exists()] == []
    assert mine.read_text() == "mine"
    assert not [p for p in out.rglob("*") if layout.is_temporary(p.name)]
