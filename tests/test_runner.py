"""Running tasks on several worker processes: sharing, isolation, equal results."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_batch.manifest import load_manifest
from nst_batch.plan import Task, plan
from nst_batch.results import ResultRow, ResultsWriter, read_rows
from nst_batch.runner import _Scheduler, cpu_threads_per_worker, resolve_devices, run_tasks
from nst_batch.stylize import Progress


class Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.steps = 0
        self.rows: list[ResultRow] = []

    def task_started(self, task: Task, worker: str) -> None:
        self.started.append((task.label, worker))

    def step(self, task: Task, progress: Progress) -> None:
        self.steps += 1

    def task_finished(self, task: Task, row: ResultRow) -> None:
        self.rows.append(row)


def run(
    manifest: Path,
    devices: list[str],
    events: Recorder | None = None,
    batch_size: int | None = None,
) -> list[ResultRow]:
    loaded = load_manifest(manifest)
    loaded.output.mkdir(parents=True, exist_ok=True)
    with ResultsWriter(loaded.output / "results.csv") as writer:
        stats = run_tasks(
            plan(loaded), devices, writer, events or Recorder(), batch_size=batch_size
        )
    assert not stats.fatal
    return read_rows(loaded.output / "results.csv")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_resolve_devices() -> None:
    assert resolve_devices(["cpu"], 2) == ["cpu", "cpu"]
    assert resolve_devices(["cuda:0", "cuda:1"], 2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert resolve_devices(["auto"]) in (["cpu"], [f"cuda:{i}" for i in range(8)][:1]) or all(
        d.startswith("cuda:") for d in resolve_devices(["auto"])
    )


def test_cpu_workers_share_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads_per_worker(["cpu"]) == cores
    assert cpu_threads_per_worker(["cpu"] * (2 * cores)) == 1
    assert cpu_threads_per_worker(["cpu", "cpu"]) == max(1, cores // 2)


def test_scheduler_keeps_a_worker_on_one_style(write_manifest) -> None:
    tasks = plan(load_manifest(write_manifest(params={"size": 64, "steps": 2})))
    scheduler = _Scheduler(tasks, [(i,) for i in range(len(tasks))])
    first = scheduler.next(None)
    second = scheduler.next(None)
    assert first is not None and second is not None
    # Two workers start on two different styles, then each continues its own.
    assert tasks[first[0]].style.name != tasks[second[0]].style.name
    follow = scheduler.next(tasks[first[0]].target_group)
    assert follow is not None and tasks[follow[0]].style.name == tasks[first[0]].style.name
    rest = [scheduler.next(tasks[second[0]].target_group), scheduler.next(None)]
    handed = [u for u in [first, second, follow, *rest] if u is not None]
    assert sorted(i for unit in handed for i in unit) == [0, 1, 2, 3]
    assert scheduler.next(None) is None


@pytest.mark.slow
def test_two_cpu_workers_share_the_gallery_and_match_one(write_manifest, tmp_path) -> None:
    two = write_manifest("two.yaml", output="two")
    one = write_manifest("one.yaml", output="one")
    events = Recorder()
    rows = run(two, ["cpu", "cpu"], events)
    assert [r.status for r in rows] == ["done"] * 4
    assert {r.worker for r in rows} == {"cpu#0", "cpu#1"}
    assert events.steps > 0 and len(events.started) == 4
    # Each worker kept to one style: two target computations in all, not four.
    by_worker = {w: {r.style for r in rows if r.worker == w} for w in ("cpu#0", "cpu#1")}
    assert all(len(styles) == 1 for styles in by_worker.values())
    single = run(one, ["cpu"])
    assert {r.worker for r in single} == {"cpu#0"}
    for row in rows:
        assert np.array_equal(
            pixels(tmp_path / "two" / row.output), pixels(tmp_path / "one" / row.output)
        )
    assert multiprocessing.active_children() == []


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, None])
def test_a_killed_worker_fails_only_its_batch(write_manifest, batch_size) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 40})

    class Killer(Recorder):
        killed = False

        def step(self, task: Task, progress: Progress) -> None:
            super().step(task, progress)
            if not self.killed:
                victim = multiprocessing.active_children()[0]
                os.kill(victim.pid, signal.SIGKILL)
                self.killed = True

    rows = run(manifest, ["cpu", "cpu"], Killer(), batch_size)
    failed = [r for r in rows if r.status == "failed"]
    # 4 tasks on 2 workers: batches of 1, or (auto) of 2 so that neither worker idles
    assert len(failed) == (1 if batch_size == 1 else 2)
    assert all("died (signal SIGKILL)" in r.error for r in failed)
    assert len({r.worker for r in failed}) == 1
    assert sorted(r.status for r in rows).count("done") == 4 - len(failed)
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_a_failing_task_does_not_stop_its_worker(write_manifest, tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    good = Path(__file__).resolve().parent.parent / "examples/images/content/chelsea.png"
    manifest = write_manifest(content=[str(bad), str(good)], params={"size": 64, "steps": 4})
    rows = run(manifest, ["cpu", "cpu"], batch_size=1)
    failed = [r for r in rows if r.status == "failed"]
    assert {r.content for r in failed} == {"broken"}
    assert all("broken.png" in r.error for r in failed)
    done = [r for r in rows if r.status == "done"]
    assert {r.content for r in done} == {"chelsea"} and len(done) == 2
    # The workers that failed a task went on to finish others.
    assert {r.worker for r in failed} <= {r.worker for r in done}
    assert multiprocessing.active_children() == []


def _children(pid: int) -> list[int]:
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in path.read_text().split()]
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here does not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_worker_and_records_the_tasks_in_flight(write_manifest, signum):
    import subprocess
    import sys
    import time

    manifest = write_manifest(params={"size": 64, "steps": 2000})
    command = [sys.executable, "-m", "nst_batch", str(manifest), "--devices", "cpu,cpu", "-v"]
    command += ["--print-every", "5"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stderr is not None
    steps_seen = 0
    for line in process.stderr:  # both workers are stylizing once each has printed a step
        steps_seen += " step " in line
        if steps_seen >= 2:
            break
    workers = _children(process.pid)
    assert len(workers) >= 2
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum
    assert f"interrupted by {signal.Signals(signum).name}" in err
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers)
    rows = read_rows(manifest.parent / "out" / "results.csv")
    assert len(rows) == 4  # every task was in flight: a batch of two on each worker
    assert all(r.status == "interrupted" for r in rows)
    assert all(r.error == f"interrupted ({signal.Signals(signum).name})" for r in rows)
    assert not list((manifest.parent / "out").glob("*.jpg"))  # nothing half-done is saved
