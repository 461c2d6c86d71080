"""The gallery fills as a run goes: `index.html` is rewritten as tasks finish, says that a
run is going on and reloads itself, and stops doing so once the run has ended. Watched from
inside the run (the page is read, and opened in Chromium, when the second task finishes), so
that nothing depends on how fast the run is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_browser import _probe

from nst_batch import layout, session
from nst_batch.results import ResultRow
from nst_batch.session import LiveGallery

REFRESH = '<meta http-equiv="refresh"'


class Watcher:
    """runner.Events that reads the page each time a task finishes."""

    def __init__(self, page: Path, browse: Path | None = None) -> None:
        self.page, self.browse = page, browse
        self.seen: list[str] = []
        self.probed: dict | None = None

    def task_started(self, task, worker: str) -> None:
        pass

    def step(self, task, progress) -> None:
        pass

    def task_finished(self, task, row: ResultRow) -> None:
        text = self.page.read_text(encoding="utf-8")
        self.seen.append(text)
        if self.browse is not None and len(self.seen) == 2:
            self.probed = _probe(self.page, self.browse)


def _run(write_manifest, monkeypatch, browse: Path | None = None) -> tuple[Watcher, Path]:
    monkeypatch.setattr(LiveGallery, "MIN_INTERVAL", 0.0)  # a write after every task
    monkeypatch.setattr(LiveGallery, "COST_FACTOR", 0.0)
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu", batch_size=1)
    page = manifest.parent / "out" / layout.PAGE
    watcher = Watcher(page, browse)
    summary = session.run_prepared(session.prepare(manifest), watcher)
    assert summary.done == 4
    return watcher, page


def test_the_page_fills_during_the_run_and_stops_reloading_after(write_manifest, monkeypatch):
    watcher, page = _run(write_manifest, monkeypatch)
    assert len(watcher.seen) == 4
    # When the second task finishes, the page written after the first shows it done.
    middle = watcher.seen[1]
    assert REFRESH in middle
    assert "A run is going on: 1 of 4 tasks done" in middle
    assert len(re.findall(r'data-state="done"', middle)) == 1
    assert len(re.findall(r'data-state="pending"', middle)) == 3
    assert "about 0m" in middle or "left" in middle  # the time left, once a task is done
    final = page.read_text(encoding="utf-8")
    assert REFRESH not in final and "A run is going on" not in final
    assert len(re.findall(r'data-state="done"', final)) == 4


def test_a_shard_writes_its_page_at_the_end_only(write_manifest, monkeypatch) -> None:
    monkeypatch.setattr(LiveGallery, "MIN_INTERVAL", 0.0)
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu", batch_size=1)
    page = manifest.parent / "out" / layout.PAGE
    watcher = Watcher(page)
    watcher.task_finished = lambda task, row: watcher.seen.append(  # type: ignore[method-assign]
        page.read_text(encoding="utf-8") if page.exists() else ""
    )
    session.run_prepared(session.prepare(manifest, shard="1/2"), watcher)
    assert watcher.seen == ["", ""]  # shards beside each other do not race on the page
    assert REFRESH not in page.read_text(encoding="utf-8")


@pytest.mark.usefixtures("chromium")
def test_a_page_opened_mid_run_shows_the_finished_cells_in_a_browser(
    write_manifest, monkeypatch, tmp_path: Path
) -> None:
    watcher, _ = _run(write_manifest, monkeypatch, browse=tmp_path / "profile")
    seen = watcher.probed  # the page as it was when the second task finished
    assert seen is not None
    assert seen["broken"] == [] and seen["loaded"] == seen["images"]
    assert seen["cells"] == 4
    assert REFRESH in watcher.seen[1]  # the page the browser loaded reloads itself
