"""Tests of the `nst-batch` command: real galleries end to end, reruns, errors and exit codes.

One 2x2 gallery (64 px, 8 steps) is run once per module, by the installed `nst-batch`
executable in a subprocess; tests that change it work on a copy (shutil.copy2 keeps the
mtimes, and the outputs carry their task keys), tests that only read it share it.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from conftest import CONTENT, STYLE, invoke, write_manifest_in
from PIL import Image

from nst_batch import __version__
from nst_batch.images import read_metadata
from nst_batch.layout import curve_path
from nst_batch.metadata import KEY_METADATA
from nst_batch.results import read_rows, write_table
from nst_batch.worker import WorkerOptions

NST_BATCH = Path(sys.executable).parent / "nst-batch"
OUTPUTS = (
    "chelsea__starry_night.jpg",
    "coffee__starry_night.jpg",
    "chelsea__the_scream.jpg",
    "coffee__the_scream.jpg",
)
STARRY = OUTPUTS[:2]  # style 0
SCREAM = OUTPUTS[2:]  # style 1
SUMMARY = re.compile(
    r"^(\d+) tasks: (\d+) done, (\d+) skipped, (\d+) failed in \S+ "
    r"\((\d+) style target computations\)$",
    re.MULTILINE,
)


def _summary(text: str) -> tuple[int, ...]:
    """(tasks, done, skipped, failed, target computations) from the run summary."""
    found = SUMMARY.findall(text)
    assert len(found) == 1, text
    return tuple(int(n) for n in found[0])


def _mtimes(out: Path) -> dict[str, int]:
    return {name: (out / name).stat().st_mtime_ns for name in OUTPUTS}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _bad_image(path: Path) -> Path:
    path.write_text("this is a text file, not a PNG\n")
    return path


@dataclass(frozen=True)
class Finished:
    root: Path
    manifest: Path
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """The 2x2 gallery, run once by the installed executable (a real subprocess)."""
    root = tmp_path_factory.mktemp("finished")
    manifest = write_manifest_in(root)
    proc = subprocess.run(
        [str(NST_BATCH), "gallery.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Finished(root, manifest, root / "out", proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def gallery(finished: Finished, tmp_path: Path) -> Path:
    """A private copy of the finished gallery (mtimes kept); returns its manifest."""
    assert finished.returncode == 0, finished.stderr
    root = tmp_path / "gallery"
    shutil.copytree(finished.root, root, copy_function=shutil.copy2)
    return root / "gallery.yaml"


@dataclass(frozen=True)
class FailedRun:
    root: Path
    manifest: Path
    result: Result


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> FailedRun:
    """A 2x2 gallery whose first content image is a text file named bad.png, run with -q."""
    root = tmp_path_factory.mktemp("failing")
    _bad_image(root / "bad.png")
    manifest = write_manifest_in(root, content=["bad.png", str(CONTENT / "chelsea.png")])
    return FailedRun(root, manifest, invoke(manifest, "-q"))


# --- a whole gallery, by the real executable -------------------------------------------------


@pytest.mark.slow
def test_subprocess_run(finished: Finished) -> None:
    assert NST_BATCH.is_file()
    assert finished.returncode == 0, finished.stderr
    # stderr is a pipe, not a terminal: plain progress lines instead of a bar
    for i, label in enumerate(
        ["chelsea x starry_night", "coffee x starry_night", "chelsea x the_scream"], start=1
    ):
        assert re.search(
            rf"^\[{i}/4 tasks, \d+% of steps, [^]]+\] {label}: done in ", finished.stderr, re.M
        ), finished.stderr
    assert re.search(
        r"^\[4/4 tasks, 100% of steps, [^]]+\] coffee x the_scream: done in ", finished.stderr, re.M
    )
    assert "\r" not in finished.stderr
    # the lock file stays (its flock goes); each output has its loss curve beside it
    curves = [f"{o}.json" for o in OUTPUTS]
    gallery = ["index.html", "thumbs", "contact_sheet.jpg"]  # the page, thumbnails, the sheet
    assert sorted(p.name for p in finished.out.iterdir()) == sorted(
        [*OUTPUTS, *curves, "results.csv", ".nst-batch.lock", ".nst-batch", *gallery]
    )
    # .nst-batch/ keeps the file cache and what the page and sheet were built from
    assert sorted(p.name for p in (finished.out / ".nst-batch").iterdir()) == [
        "files.json",
        "gallery.json",
    ]


@pytest.mark.slow
def test_gallery_outputs_are_valid_images(finished: Finished) -> None:
    for name in OUTPUTS:
        path = finished.out / name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert max(image.size) == 64
            image.load()


@pytest.mark.slow
def test_gallery_results_csv(finished: Finished) -> None:
    rows = read_rows(finished.out / "results.csv")
    assert [r.output for r in rows] == list(OUTPUTS)
    for row in rows:
        assert row.status == "done"
        assert row.steps == 8
        assert row.error == ""
        losses = (row.content_loss, row.style_loss, row.tv_loss, row.total_loss)
        assert all(v is not None and math.isfinite(v) for v in losses), row
        assert row.content_loss > 0 and row.style_loss > 0  # type: ignore[operator]
        assert row.total_loss == pytest.approx(
            row.content_loss + row.style_loss + row.tv_loss  # type: ignore[operator]
        )
        assert row.seconds is not None and row.seconds > 0
        assert row.device
        assert row.worker.startswith(row.device)
        assert re.fullmatch(r"[0-9a-f]{24}", row.key)
        # the output records the key its row names
        assert read_metadata(finished.out / row.output)[KEY_METADATA] == row.key
    assert len({r.key for r in rows}) == 4


@pytest.mark.slow
def test_gallery_loss_curves_beside_outputs(finished: Finished) -> None:
    for row in read_rows(finished.out / "results.csv"):
        curve = json.loads(curve_path(finished.out / row.output).read_text())
        assert curve["key"] == row.key
        totals = curve["total_loss"]
        assert len(totals) == row.steps == 8
        assert min(totals) == pytest.approx(row.total_loss, rel=1e-4)
        assert totals[-1] < totals[0]


@pytest.mark.slow
def test_gallery_summary(finished: Finished) -> None:
    # one style target computation per style, not per task
    assert _summary(finished.stdout) == (4, 4, 0, 0, 2)
    assert "(2 style target computations)" in finished.stdout
    assert f"outputs: {finished.out}" in finished.stdout
    assert f"results: {finished.out / 'results.csv'}" in finished.stdout
    assert finished.stdout.splitlines()[-1] == f"gallery: {finished.out / 'index.html'}"


# --- reruns -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_rerun_does_no_optimization(gallery: Path) -> None:
    out = gallery.parent / "out"
    before = _mtimes(out)
    first_rows = read_rows(out / "results.csv")

    result = invoke(gallery)

    assert result.exit_code == 0, result.output
    assert _summary(result.stdout) == (4, 0, 4, 0, 0)
    assert "0 done, 4 skipped" in result.stdout
    assert "done in" not in result.stderr
    assert _mtimes(out) == before
    assert read_rows(out / "results.csv") == first_rows  # the done rows say it: no new row


def _unchanging(out: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes (b'' for a folder) and mtime of everything under the output folder but what
    every run writes: the gallery (page, sheet, thumbnails) and the lock files (the PID)."""
    gallery = {"index.html", "compare.html", "contact_sheet.jpg", "thumbs"}
    found = {}
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if name.split("/")[0] in gallery or (name.startswith(".nst-batch") and ".lock" in name):
            continue
        found[name] = (path.read_bytes() if path.is_file() else b"", path.stat().st_mtime_ns)
    return found


@pytest.mark.slow
def test_an_up_to_date_rerun_changes_no_file(gallery: Path) -> None:
    out = gallery.parent / "out"
    results = out / "results.csv"
    recorded = (results.read_bytes(), results.stat().st_mtime_ns)
    # A copied gallery: its outputs are new files to the file cache, read once and kept.
    assert invoke(gallery).exit_code == 0
    assert (results.read_bytes(), results.stat().st_mtime_ns) == recorded
    before = _unchanging(out)
    assert "results.csv" in before and ".nst-batch/files.json" in before
    for _ in range(2):
        again = invoke(gallery)
        assert again.exit_code == 0, again.output
        assert _summary(again.stdout) == (4, 0, 4, 0, 0)
        assert _unchanging(out) == before


@pytest.mark.slow
def test_planning_and_up_to_date_runs_import_no_torch(gallery: Path) -> None:
    """Dry runs, report, show and a rerun with nothing to do, each a real `python -m
    nst_batch` process: none imports torch or torchvision (-X importtime lists every import)."""
    output = gallery.parent / "out" / OUTPUTS[0]
    commands: list[list[object]] = [
        [gallery, "--dry-run"],
        [gallery, "--dry-run", "-v", "--set", "params.style_weight=5"],  # reads the recipes
        [gallery, "--dry-run", "-q", "--force", "--shard", "1/2", "--only", "content=chel*"],
        ["report", gallery, "--json"],
        ["show", output],
        [gallery],  # up to date: nothing to optimize
        [gallery, "-v"],
    ]
    for args in commands:
        process = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "nst_batch", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert process.returncode == 0, (args, process.stderr[-2000:])
        imported = {
            line.rpartition("|")[2].strip()
            for line in process.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "nst_batch.plan" in imported, args
        assert not {m for m in imported if m.split(".")[0] in ("torch", "torchvision")}, args


@pytest.mark.slow
def test_set_redoes_exactly_one_style(gallery: Path) -> None:
    out = gallery.parent / "out"
    before = _mtimes(out)
    old_keys = {r.output: r.key for r in read_rows(out / "results.csv")}

    result = invoke(gallery, "--set", "style.0.params.style_weight=5")

    assert result.exit_code == 0, result.output
    assert _summary(result.stdout) == (4, 2, 2, 0, 1)
    after = _mtimes(out)
    assert all(after[name] != before[name] for name in STARRY)
    assert all(after[name] == before[name] for name in SCREAM)
    new = read_rows(out / "results.csv")[4:]
    # the unchanged style's done rows still hold: no skipped rows for them
    assert sorted((r.output, r.status) for r in new) == [(n, "done") for n in sorted(STARRY)]
    for row in new:
        assert (row.key != old_keys[row.output]) == (row.output in STARRY)
        assert read_metadata(out / row.output)[KEY_METADATA] == row.key

    # the same override again: all up to date
    again = invoke(gallery, "--set", "style.0.params.style_weight=5")
    assert again.exit_code == 0, again.output
    assert _summary(again.stdout) == (4, 0, 4, 0, 0)

    # the same change written into the manifest as per-style params is the same work
    doc = yaml.safe_load(gallery.read_text())
    doc["style"][0] = {"path": doc["style"][0], "params": {"style_weight": 5}}
    gallery.write_text(yaml.safe_dump(doc))
    dry = invoke(gallery, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "0 to run, 4 up to date, 4 in all" in dry.stdout


@pytest.mark.slow
def test_force_redoes_everything(gallery: Path) -> None:
    out = gallery.parent / "out"
    before = _mtimes(out)

    result = invoke(gallery, "--force")

    assert result.exit_code == 0, result.output
    assert _summary(result.stdout) == (4, 4, 0, 0, 2)
    after = _mtimes(out)
    assert all(after[name] != before[name] for name in OUTPUTS)
    rows = read_rows(out / "results.csv")
    assert [r.status for r in rows] == ["done"] * 8
    assert [r.key for r in rows[4:]] == [r.key for r in rows[:4]]  # same work, same keys


# --- dry runs ---------------------------------------------------------------------------------


def test_dry_run_on_a_fresh_gallery_writes_nothing(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path)

    result = invoke(manifest, "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        " would run  chelsea x starry_night  ->  chelsea__starry_night.jpg",
        "            new",
        " would run  coffee x starry_night  ->  coffee__starry_night.jpg",
        "            new",
        " would run  chelsea x the_scream  ->  chelsea__the_scream.jpg",
        "            new",
        " would run  coffee x the_scream  ->  coffee__the_scream.jpg",
        "            new",
        "4 to run, 0 up to date, 4 in all",
    ]
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.yaml"]


def test_run_subcommand_and_options_before_the_manifest(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path)
    plain = invoke(manifest, "--dry-run")
    assert invoke("run", manifest, "--dry-run").stdout == plain.stdout
    assert invoke("--dry-run", manifest).stdout == plain.stdout


@pytest.mark.slow
def test_dry_run_after_a_run(gallery: Path) -> None:
    folder = gallery.parent
    before = _tree(folder)
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    result = invoke(gallery, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["0 to run, 4 up to date, 4 in all"]
    listed = invoke(gallery, "--dry-run", "-v")  # -v lists the up-to-date tasks too
    assert [line.split("  ")[0].strip() for line in listed.stdout.splitlines()[:4]] == [
        "up to date"
    ] * 4

    changed = invoke(gallery, "--dry-run", "--set", "style.0.params.style_weight=5")
    assert changed.stdout.splitlines() == [
        " would run  chelsea x starry_night  ->  chelsea__starry_night.jpg",
        "            style_weight 10 -> 5",
        " would run  coffee x starry_night  ->  coffee__starry_night.jpg",
        "            style_weight 10 -> 5",
        "2 to run, 2 up to date, 4 in all",
    ]
    both = invoke(gallery, "--dry-run", "-v", "--set", "style.0.params.style_weight=5")
    assert both.stdout.splitlines()[4:6] == [
        "up to date  chelsea x the_scream  ->  chelsea__the_scream.jpg",
        "up to date  coffee x the_scream  ->  coffee__the_scream.jpg",
    ]
    forced = invoke(gallery, "--dry-run", "--force")
    assert forced.stdout.splitlines()[-1] == "4 to run, 0 up to date, 4 in all"

    assert _tree(folder) == before  # not a byte written
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes


# --- report -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_keeps_done_rows_over_later_skips(gallery: Path) -> None:
    out = gallery.parent / "out"
    done_rows = read_rows(out / "results.csv")
    (out / "results.csv").unlink()  # the outputs stay up to date, their rows are gone
    rerun = invoke(gallery)
    assert rerun.exit_code == 0, rerun.output
    skipped = read_rows(out / "results.csv")
    assert sorted((r.output, r.status, r.key) for r in skipped) == sorted(
        (r.output, "skipped", r.key) for r in done_rows
    )
    write_table(done_rows, out / "results-shard-1-of-2.csv")  # the older done rows, back
    assert invoke(gallery).exit_code == 0  # recorded now: nothing more appended
    assert read_rows(out / "results.csv") == skipped

    result = invoke("report", gallery)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "4 tasks planned: 4 done, 0 failed, 0 interrupted, 0 outdated, 0 not yet run",
        f"results: {out / 'results.csv'}",
        f"gallery: {out / 'index.html'}",
    ]
    merged = read_rows(out / "results.csv")
    assert len(merged) == 4  # one row per task
    assert sorted(merged, key=lambda r: r.output) == sorted(done_rows, key=lambda r: r.output)


@pytest.mark.slow
def test_report_does_not_count_outdated_results_as_done(gallery: Path) -> None:
    change = ("--set", "params.style_weight=7")
    dry = invoke(gallery, "--dry-run", *change)
    assert dry.stdout.splitlines()[-1] == "4 to run, 0 up to date, 4 in all"

    report = invoke("report", gallery, *change)
    assert report.exit_code == 0, report.output
    assert not report.stdout.startswith("4 tasks planned: 4 done")


def test_report_on_a_fresh_manifest(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path)

    result = invoke("report", manifest)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:5] == [
        "4 tasks planned: 0 done, 0 failed, 0 interrupted, 0 outdated, 4 not yet run",
        "  not yet run: chelsea x starry_night",  # plan order: one style's tasks together
        "  not yet run: coffee x starry_night",
        "  not yet run: chelsea x the_scream",
        "  not yet run: coffee x the_scream",
    ]
    assert not (tmp_path / "out").exists()


# --- a failing task ---------------------------------------------------------------------------


@pytest.mark.slow
def test_failing_task(failed_run: FailedRun) -> None:
    result, out = failed_run.result, failed_run.root / "out"
    bad = failed_run.root / "bad.png"

    assert result.exit_code == 1, result.output
    assert _summary(result.stderr) == (4, 2, 0, 2, 2)  # on stderr: the run used -q
    assert "FAILED bad x starry_night: Cannot use image" in result.stderr
    rows = {(r.content, r.style): r for r in read_rows(out / "results.csv")}
    assert len(rows) == 4
    for style in ("starry_night", "the_scream"):
        failed = rows[("bad", style)]
        assert failed.status == "failed"
        assert str(bad) in failed.error
        assert "not an image" in failed.error
        assert failed.content_loss is None and failed.steps is None
        assert not (out / f"bad__{style}.jpg").exists()
        ok = rows[("chelsea", style)]  # the tasks after the failure still ran
        assert ok.status == "done" and ok.steps == 8
        assert (out / f"chelsea__{style}.jpg").is_file()


@pytest.mark.slow
def test_report_after_fixing_a_failed_task(failed_run: FailedRun, tmp_path: Path) -> None:
    root = tmp_path / "failing"
    shutil.copytree(failed_run.root, root, copy_function=shutil.copy2)
    manifest, out = root / "gallery.yaml", root / "out"

    report = invoke("report", manifest)
    assert report.stdout.splitlines()[0] == (
        "4 tasks planned: 2 done, 2 failed, 0 interrupted, 0 outdated, 0 not yet run"
    )

    shutil.copyfile(CONTENT / "coffee.png", root / "bad.png")  # now a real image
    rerun = invoke(manifest)
    assert rerun.exit_code == 0, rerun.output
    assert _summary(rerun.stdout) == (4, 2, 2, 0, 2)

    report = invoke("report", manifest)
    assert report.exit_code == 0, report.output
    assert report.stdout.splitlines()[0] == (
        "4 tasks planned: 4 done, 0 failed, 0 interrupted, 0 outdated, 0 not yet run"
    )
    merged = read_rows(out / "results.csv")
    assert [(r.content, r.style, r.status) for r in merged] == [
        ("bad", "starry_night", "done"),  # the last attempt wins over the failure
        ("chelsea", "starry_night", "done"),
        ("bad", "the_scream", "done"),
        ("chelsea", "the_scream", "done"),
    ]
    assert all(r.error == "" and r.steps == 8 for r in merged)


# --- manifest and usage errors: exit 2, nothing written ---------------------------------------


def _yaml_error(folder: Path) -> Path:
    path = folder / "gallery.yaml"
    path.write_text(
        f"output: out\ncontent: [{CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
    )
    return path


ERRORS = {
    "unknown key": (
        lambda d: write_manifest_in(d, ouptut="x"),
        [],
        "unknown key 'ouptut' (did you mean 'output'?)",
    ),
    "missing file": (
        lambda d: write_manifest_in(d, content=["photos/missing.png"]),
        [],
        "content[0] 'photos/missing.png': no such file",
    ),
    "bad param": (
        lambda d: write_manifest_in(d, params={"steps": 0}),
        [],
        "params.steps: Input should be greater than or equal to ",
    ),
    "bad --set": (
        write_manifest_in,
        ["--set", "params.style_weight"],
        "--set 'params.style_weight': expected KEY=VALUE, e.g. params.style_weight=20",
    ),
    "bad --set index": (
        write_manifest_in,
        ["--set", "style.9=monet.jpg"],
        "--set style.9: style is a list of 2; use an index from 0 to 1",
    ),
    "bad --devices": (
        write_manifest_in,
        ["--devices", "gpu"],
        "--devices: unknown device 'gpu'; use auto, cpu, cuda, cuda:N",
    ),
    "bad --shard": (
        write_manifest_in,
        ["--shard", "2"],
        "--shard '2': expected K/N, e.g. 1/4 (K from 1 to N)",
    ),
    "bad --only": (
        write_manifest_in,
        ["--only", "chelsea"],
        "--only 'chelsea': expected KEY=GLOB, e.g. --only content='chel*'",
    ),
    "bad --exit-code without --dry-run": (
        write_manifest_in,
        ["--exit-code"],
        "--json and --exit-code go with --dry-run (-n)",
    ),
    "yaml syntax": (_yaml_error, [], "YAML syntax error at line 3, column "),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_manifest_errors_exit_2(tmp_path: Path, case: str) -> None:
    make, args, message = ERRORS[case]
    manifest = make(tmp_path)

    result = invoke(manifest, *args)

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    if not case.startswith("bad --"):
        assert str(manifest) in result.stderr  # the message names the file
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.yaml"]  # nothing written


def test_missing_manifest_exit_2(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert f"Error: {tmp_path / 'nope.yaml'}: no such manifest file" in result.stderr


def test_report_manifest_error_exit_2(tmp_path: Path) -> None:
    result = invoke("report", write_manifest_in(tmp_path, ouptut="x"))
    assert result.exit_code == 2
    assert "did you mean 'output'?" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_option_exit_2(tmp_path: Path) -> None:
    result = invoke(write_manifest_in(tmp_path), "--frobnicate")
    assert result.exit_code == 2
    assert "No such option '--frobnicate'" in result.stderr


def test_corrupt_weights_file_exit_2(tmp_path: Path) -> None:
    (tmp_path / "vgg.pth").write_text("not a state dict")
    manifest = write_manifest_in(tmp_path, weights="vgg.pth")

    result = invoke(manifest)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: weights file {tmp_path / 'vgg.pth'} ")
    assert "done" not in result.output
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert rows == []  # the run stopped before any task finished
    assert not list((tmp_path / "out").glob("*.jpg"))


def test_output_folder_that_is_a_file_exit_2(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the output folder should be")
    manifest = write_manifest_in(tmp_path)

    result = invoke(manifest)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: output {tmp_path / 'out'} is a file, not a folder; choose another 'output'\n"
    )


@pytest.mark.slow
def test_print_every_zero_is_a_usage_error(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path, content=[str(CONTENT / "coffee.png")], style=[str(STYLE / "shipwreck.jpg")]
    )
    result = invoke(manifest, "--print-every", "0")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


# --- verbosity --------------------------------------------------------------------------------


@pytest.mark.slow
def test_quiet_prints_only_errors_and_the_summary(failed_run: FailedRun) -> None:
    result, out = failed_run.result, failed_run.root / "out"
    bad = failed_run.root / "bad.png"
    assert result.stdout == ""  # with -q even the summary goes to stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 6, result.stderr  # no per-task '[n/4] ... done' lines
    assert lines[0].startswith(f"FAILED bad x starry_night: Cannot use image '{bad}'")
    assert lines[1].startswith(f"FAILED bad x the_scream: Cannot use image '{bad}'")
    assert _summary(lines[2]) == (4, 2, 0, 2, 2)
    assert lines[3:] == [
        f"outputs: {out}",
        f"results: {out / 'results.csv'}",
        f"gallery: {out / 'index.html'}",  # also when some tasks failed
    ]


@pytest.mark.slow
def test_verbose_prints_step_losses(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path, content=[str(CONTENT / "coffee.png")], style=[str(STYLE / "shipwreck.jpg")]
    )

    result = invoke(manifest, "-v", "--print-every", "4")

    assert result.exit_code == 0, result.output
    assert re.search(r"^start coffee x shipwreck on \S+#0$", result.stderr, re.MULTILINE)
    number = r"[-+0-9.e]+"
    for step in (4, 8):
        assert re.search(
            rf"^coffee x shipwreck step {step}/8: content {number} style {number} "
            rf"tv {number} total {number}$",
            result.stderr,
            re.MULTILINE,
        ), result.stderr
    assert "step 2/8" not in result.stderr
    assert re.search(
        r"^\[1/1 tasks, 100% of steps, [^]]+\] coffee x shipwreck: done in ", result.stderr, re.M
    )
    assert _summary(result.stdout) == (1, 1, 0, 0, 1)


def test_verbose_prints_the_final_step_with_the_default_print_every() -> None:
    from nst_batch.progress import ConsoleEvents
    from nst_batch.stylize import Losses, Progress

    task: Any = type("Task", (), {"label": "coffee x shipwreck"})()  # only its label is used
    stream = io.StringIO()
    events = ConsoleEvents(total=1, skipped=0, verbosity=1, print_every=50, stream=stream)
    events.step(task, Progress(8, 8, Losses(1.0, 2.0, 0.0, 3.0)))
    events.close()
    assert "step 8/8" in stream.getvalue()


# --- version and help -------------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"nst-batch, version {__version__}\n"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["run", "--help"], ["report", "--help"]])
def test_help(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0
    assert "Usage: " in result.stdout
    if args[0] == "run":
        for option in ("--devices", "--force", "--dry-run", "--set", "-q", "-v", "--print-every"):
            assert option in result.stdout
        assert "nst-batch run m.yaml --dry-run" in result.stdout  # an example
        assert "content: photos/" in result.stdout and "docs/manifest.md" in result.stdout
    elif args[0] != "report":
        assert "Exit codes: 0 all done or up to date, 1 some task failed" in result.stdout
        assert "report" in result.stdout
        assert "nst-batch jobs/gallery.yaml --dry-run" in result.stdout
        assert "docs/" in result.stdout


# --- shards ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_shards_split_the_gallery_and_report_merges_them(tmp_path: Path, monkeypatch) -> None:
    manifest = write_manifest_in(tmp_path, params={"steps": 4})
    out = tmp_path / "out"
    first = invoke(manifest, "--shard", "1/2")
    assert first.exit_code == 0, first.output
    assert "2 tasks in shard 1/2: 2 done" in first.output
    # The second shard comes from a Slurm array's variables: task 5 of --array=4-5.
    for name, value in {"ID": 5, "MIN": 4, "MAX": 5, "COUNT": 2, "STEP": 1}.items():
        monkeypatch.setenv(f"SLURM_ARRAY_TASK_{name}", str(value))
    second = invoke(manifest)
    assert second.exit_code == 0, second.output
    assert "2 tasks in shard 2/2: 2 done" in second.output
    shards = [read_rows(out / f"results-shard-{k}-of-2.csv") for k in (1, 2)]
    pairs = [{(r.content, r.style) for r in rows} for rows in shards]
    assert len(pairs[0]) == len(pairs[1]) == 2 and not pairs[0] & pairs[1]
    assert all(r.shard == f"{k}/2" for k, rows in zip((1, 2), shards, strict=True) for r in rows)
    assert not (out / "results.csv").exists()
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    report = invoke("report", manifest)
    assert report.exit_code == 0, report.output
    assert report.output.splitlines()[0] == (
        "4 tasks planned: 4 done, 0 failed, 0 interrupted, 0 outdated, 0 not yet run"
    )
    merged = read_rows(out / "results.csv")
    assert len(merged) == 4 and {r.status for r in merged} == {"done"}
    again = invoke(manifest, "--shard", "2/2")
    assert "0 done, 2 skipped" in again.output


def test_a_bad_shard_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(write_manifest_in(tmp_path), "--shard", "3/2")
    assert result.exit_code == 2
    assert "--shard '3/2': K must be between 1 and N (2)" in result.output
    assert not (tmp_path / "out").exists()


def test_the_run_config_comes_from_the_manifest_options_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One RunConfig, built by the CLI: devices per worker, batch size, compile, the shard,
    and NST_BATCH_CUDA_GRAPHS=0 (read here only) turning CUDA graphs off."""
    from nst_batch import runner

    seen = []

    def fake_run_tasks(tasks, config, writer, events):  # type: ignore[no-untyped-def]
        seen.append(config)
        return runner.RunStats()

    monkeypatch.setattr(runner, "run_tasks", fake_run_tasks)
    manifest = write_manifest_in(tmp_path, workers_per_device=2, batch_size=3, compile=True)
    monkeypatch.setenv("NST_BATCH_CUDA_GRAPHS", "0")
    result = invoke(manifest, "--devices", "cpu", "--shard", "1/2")
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert config == runner.RunConfig(
        devices=("cpu", "cpu"),
        batch_size=3,
        report_every=10,
        shard=(1, 2),
        worker=WorkerOptions(compile=True, cuda_graphs=False),
    )
    assert config.shard_label == "1/2"


def test_dry_run_for_scripts_json_and_exit_code(write_manifest) -> None:
    """`-n` is --dry-run; --json gives the plan with reasons; --exit-code answers "is there
    anything to do?" as `make -q` does: 1 before the run, 0 once everything is up to date."""
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu")
    short, long = invoke(manifest, "-n"), invoke(manifest, "--dry-run")
    assert short.exit_code == long.exit_code == 0 and short.output == long.output

    plan = invoke(manifest, "-n", "--json")
    assert plan.exit_code == 0, plan.output
    view = json.loads(plan.output)
    assert (view["total"], view["to_run"], view["up_to_date"], view["shard"]) == (4, 4, 0, "")
    task = view["tasks"][0]
    assert set(task) == {"content", "style", "variant", "output", "key", "state", "reasons"}
    assert task["state"] == "would run" and task["reasons"] == ["new"]
    assert len(task["key"]) == 24

    assert invoke(manifest, "-n", "--exit-code").exit_code == 1
    ran = invoke(manifest)
    assert ran.exit_code == 0, ran.output
    quiet = invoke(manifest, "-n", "--exit-code", "-q")
    assert quiet.exit_code == 0 and quiet.output == "0 to run, 4 up to date, 4 in all\n"
    after = json.loads(invoke(manifest, "-n", "--json").output)
    assert {t["state"] for t in after["tasks"]} == {"up to date"}

    refused = invoke(manifest, "--json")
    assert refused.exit_code == 2 and "go with --dry-run" in refused.output
