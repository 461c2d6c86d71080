"""Real nst-batch processes killed, stopped and run twice at once: nothing lost, nothing corrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Pause, running
from PIL import Image

from nst_batch.layout import is_temporary
from nst_batch.results import read_rows

COMMAND = [sys.executable, "-m", "nst_batch"]


def _start(manifest: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, str(manifest), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(condition, timeout: float = 600.0) -> None:
    """Poll `condition`; the timeout is a failure guard, not a speed the test expects."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _valid(path: Path) -> bool:
    with Image.open(path) as image:
        image.load()
        return image.size[0] > 0


@pytest.mark.slow
def test_sigkill_after_the_first_output_then_rerun(write_manifest, pause: Pause) -> None:
    # one task at a time, so that the kill falls between outputs: the first task runs
    # through, the second pauses 5 steps in (each worker process lets one batch through)
    manifest = write_manifest(params={"size": 64, "steps": 30}, batch_size=1)
    out = manifest.parent / "out"
    process = _start(manifest, env=pause.env(5, skip=1))
    paused = pause.wait(process)
    # a finished task's row is written after its image: wait for the row
    _wait_for(lambda: any(r.status == "done" for r in read_rows(out / "results.csv")))
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    _wait_for(lambda: not any(running(pid) for pid in paused))  # no worker writes on
    first = read_rows(out / "results.csv")  # complete rows only; a torn line is ignored
    done_first = {r.output for r in first if r.status == "done"}
    assert len(done_first) == len(paused)  # one each: the paused one runs the second
    assert all(_valid(p) for p in out.glob("*.jpg"))

    rerun = subprocess.run([*COMMAND, str(manifest)], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_rows(out / "results.csv")
    done = [r.output for r in rows if r.status == "done"]
    assert sorted(done) == sorted(set(done)) and len(done) == 4  # each task done exactly once
    # the outputs done before the kill have their done rows: the rerun adds none for them
    assert not {r.output for r in rows[len(first) :]} & done_first
    outputs = sorted(out.glob("*__*.jpg"))  # the outputs, not the contact sheet
    assert len(outputs) == 4 and all(_valid(p) for p in outputs)
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]


@pytest.mark.slow
def test_sigterm_records_the_tasks_in_flight_and_exits_143(write_manifest) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 3000})
    out = manifest.parent / "out"
    process = _start(manifest, "-v", "--print-every", "5")
    assert process.stderr is not None
    for line in process.stderr:
        if " step " in line:
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert "interrupted by SIGTERM" in err
    rows = read_rows(out / "results.csv")
    # 64 px on the CPU: the four tasks are optimized as one batch, all in flight
    assert [(r.status, r.error) for r in rows] == [("interrupted", "interrupted (SIGTERM)")] * 4
    assert not list(out.glob("*__*.jpg"))  # the live page's contact sheet is no output


@pytest.mark.slow
def test_a_second_run_on_the_same_output_refuses_at_once(write_manifest, pause: Pause) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 3000})
    out = manifest.parent / "out"
    first = _start(manifest, env=pause.env(1))
    try:
        pause.wait(first)  # holding the output's lock, stopped at step 1 until killed
        # A second run that waited for the lock would wait for ever: the timeout fails it.
        second = subprocess.run(
            [*COMMAND, str(manifest)], capture_output=True, text=True, check=False, timeout=300
        )
        assert second.returncode == 75
        assert f"PID {first.pid}" in second.stderr
        assert str(out / ".nst-batch.lock") in second.stderr
        # Looking is not working: a dry run needs no lock.
        dry = subprocess.run(
            [*COMMAND, str(manifest), "--dry-run"], capture_output=True, text=True, check=False
        )
        assert dry.returncode == 0
    finally:
        first.kill()
        first.wait()
    # The killed run's lock is taken over at once: flock dies with its process.
    rerun = subprocess.run(
        [*COMMAND, str(manifest), "--set", "params.steps=2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("*__*.jpg"))) == 4
