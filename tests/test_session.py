"""The session layer: a gallery prepared, run and reported from Python, without the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

import nst_batch
from nst_batch import layout
from nst_batch.results import read_rows
from nst_batch.session import SessionError, prepare


@pytest.mark.slow
def test_run_stylizes_a_gallery_from_python_and_report_counts_it(write_manifest, caplog):
    manifest = write_manifest(params={"size": 48, "steps": 4}, devices="cpu")
    with caplog.at_level(logging.INFO, logger="nst_batch"):
        summary = nst_batch.run(manifest)
    assert (summary.tasks, summary.done, summary.skipped, summary.failed) == (4, 4, 0, 0)
    assert summary.output == manifest.parent / "out"
    assert summary.gallery is not None and summary.gallery.page.is_file()
    assert "4 tasks: 4 done, 0 skipped, 0 failed" in caplog.text
    rows = read_rows(summary.results)
    assert [r.status for r in rows] == ["done"] * 4
    assert {r.run for r in rows} == {summary.run} and summary.run
    for row in rows:
        with Image.open(summary.output / row.output) as image:
            assert max(image.size) == 48

    again = nst_batch.run(manifest)  # up to date: nothing runs
    assert (again.done, again.skipped) == (0, 4)

    changed = nst_batch.run(manifest, set={"params.style_weight": 77}, only=["content=chel*"])
    assert (changed.tasks, changed.done, changed.skipped) == (2, 2, 0)
    assert changed.run != summary.run
    assert [r.run for r in read_rows(summary.results)][-2:] == [changed.run] * 2

    report = nst_batch.report(manifest)
    assert report.counts == {
        "done": 2,
        "failed": 0,
        "interrupted": 0,
        "outdated": 2,  # the chelsea tasks were last made at style_weight 77
        "pending": 0,
    }
    assert report.results == summary.output / layout.RESULTS
    by_style_weight = nst_batch.report(manifest, set=["params.style_weight=77"])
    assert by_style_weight.counts["done"] == 2 and by_style_weight.counts["outdated"] == 2


def test_bad_input_is_a_session_error_naming_it(write_manifest, tmp_path: Path) -> None:
    manifest = write_manifest()
    with pytest.raises(SessionError, match="stlye_weight"):
        nst_batch.run(manifest, set={"params.stlye_weight": 3})
    with pytest.raises(SessionError, match="--only"):
        prepare(manifest, only=["content=nothing-like-this"])
    with pytest.raises(SessionError, match=r"no_such\.yaml"):
        nst_batch.report(tmp_path / "no_such.yaml")


def test_prepare_plans_without_running(write_manifest) -> None:
    manifest = write_manifest()
    prepared = prepare(manifest, ["params.steps=3"])
    assert len(prepared.whole) == len(prepared.tasks) == len(prepared.todo) == 4
    assert prepared.fresh == [] and prepared.share is None
    assert all(task.params.steps == 3 for task in prepared.todo)
    assert not prepared.output.exists()  # planning writes nothing


def test_a_disk_that_fills_during_the_run_exits_74_and_keeps_what_finished(
    write_manifest, monkeypatch
) -> None:
    """A results row that cannot be written (ENOSPC) stops the run with its own exit code,
    not 2 ('nothing ran'): the rows and outputs written before it stay."""
    import errno

    from click.testing import CliRunner

    from nst_batch.cli import main
    from nst_batch.results import ResultsWriter

    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu", batch_size=1)
    original, calls = ResultsWriter.write_all, []

    def full_after_one(self, rows):
        calls.extend(rows)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, rows)

    monkeypatch.setattr(ResultsWriter, "write_all", full_after_one)
    result = CliRunner().invoke(main, [str(manifest)])
    assert result.exit_code == 74, result.output
    assert "during the run: No space left on device" in result.output
    assert "rerun to do the rest" in result.output
    monkeypatch.undo()
    rows = read_rows(manifest.parent / "out" / "results.csv")
    assert len(rows) == 1 and rows[0].status == "done"
    assert (manifest.parent / "out" / rows[0].output).is_file()
