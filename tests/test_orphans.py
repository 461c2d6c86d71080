"""Spawned workers never outlive their run: a parent killed with SIGKILL (a timeout wrapper,
the OOM killer) takes its workers with it, busy or idle, and an idle worker honours SIGTERM."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONTENT, STYLE, running
from PIL import Image

from nst_batch.results import read_rows
from nst_batch.worker import StoppedMessage, WorkerSetup, worker_main

DEADLINE = 30.0  # seconds: generous, so that a slow or busy machine passes too


@contextlib.contextmanager
def _run(manifest: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """The real command, its stderr (progress, warnings; workers' too) into `log`: a file,
    which no worker can block on as it could on a pipe no one reads after the kill. On the
    way out whatever is left of the run is killed, so that no failure leaves a process."""
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "nst_batch", str(manifest), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield process
    finally:
        left = _workers(process.pid) if process.poll() is None else []
        process.kill()
        process.wait()
        _kill(left)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _workers(parent: int) -> list[int]:
    """The spawned worker processes of a run: its children, less multiprocessing's tracker."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except FileNotFoundError:
        return []
    pids = []
    for pid in map(int, children):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command:
            pids.append(pid)
    return pids


def _started(log: Path) -> dict[str, str]:
    """Task label -> the worker it started on, from the -v progress lines."""
    return dict(re.findall(r"^start (.+) on (\S+)$", log.read_text(), re.MULTILINE))


def _stepping(log: Path) -> set[str]:
    """The labels of tasks that have reported a step."""
    return set(re.findall(r"^(.+) step \d+/\d+:", log.read_text(), re.MULTILINE))


def _kill_and_wait_for_workers(process: subprocess.Popen[bytes], workers: list[int]) -> None:
    """SIGKILL the run's process, then wait until none of `workers` is left."""
    process.kill()
    assert process.wait() == -signal.SIGKILL
    deadline = time.monotonic() + DEADLINE
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if running(pid)]
    _kill(left)  # before failing, so that no test leaves a process behind
    assert not left, f"workers {left} outlived their run's process by {DEADLINE} s"


@pytest.mark.slow
def test_busy_workers_save_their_batch_and_leave_when_the_run_is_killed(
    write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 5000})  # 2x2: a batch of 2 each
    log = tmp_path / "run.log"
    with _run(manifest, log, "--devices", "cpu,cpu", "-v", "--print-every", "1") as process:
        # both workers optimize once a task of each has reported a step
        _wait_for(
            lambda: len({_started(log).get(label) for label in _stepping(log)} - {None}) == 2,
            "both workers to optimize",
        )
        workers = _workers(process.pid)
        assert len(workers) == 2
        _kill_and_wait_for_workers(process, workers)
    text = log.read_text()
    assert text.count("the run's process is gone; this worker stops") == 2, text
    assert {"cpu#0", "cpu#1"} == set(re.findall(r"(cpu#\d): the run's process is gone", text))
    # Left like a SIGTERM leaves them: each task in flight saved a checkpoint for the rerun.
    checkpoints = list((tmp_path / "out" / ".nst-batch" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 4
    assert not list((tmp_path / "out").glob("*__*.jpg"))  # and no half-done output


def _pan(folder: Path, frames: int) -> None:
    """`frames` 64x48 crops of a photo, each 2 px right of the one before: f1..fN."""
    folder.mkdir(parents=True)
    photo = Image.open(CONTENT / "chelsea.png").convert("RGB").resize((200, 133))
    for i in range(frames):
        photo.crop((40 + 2 * i, 40, 104 + 2 * i, 88)).save(folder / f"f{i + 1}.png")


@pytest.mark.slow
def test_an_idle_worker_leaves_when_the_run_is_killed(tmp_path: Path) -> None:
    """A still and a 24-frame sequence on two workers: once the still is done, its worker
    waits for work that only the sequence's frames, one at a time on the other, could be."""
    frames = 24
    _pan(tmp_path / "frames", frames)
    doc = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png"), {"path": "frames", "sequence": True}],
        "style": [str(STYLE / "starry_night.jpg")],
        "params": {"size": 48, "steps": 20},
        "devices": "cpu,cpu",
    }
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    out, log = tmp_path / "out", tmp_path / "run.log"

    def still_done() -> bool:
        rows = read_rows(out / "results.csv") if (out / "results.csv").is_file() else []
        return any(r.content == "chelsea" and r.status == "done" for r in rows)

    with _run(manifest, log, "-v") as process:
        _wait_for(still_done, "the still to be done")
        workers = _workers(process.pid)
        started = _started(log)
        rows = read_rows(out / "results.csv")
        assert len(rows) < 1 + frames, "the sequence ended before the kill: make it longer"
        idle = started["chelsea x starry_night"]
        assert list(started.values()).count(idle) == 1  # the still, and nothing since
        assert len(workers) == 2
        _kill_and_wait_for_workers(process, workers)
    text = log.read_text()
    assert f"{idle}: the run's process is gone; this worker stops" in text, text
    assert text.count("the run's process is gone; this worker stops") == 2, text


# --- an idle worker and SIGTERM: worker_main run here, waiting on an empty inbox -------------


class Outbox:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, message: object) -> None:
        self.sent.append(message)


class WatchedInbox(queue.Queue[object]):
    """An inbox that tells when the worker first waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        self.waiting.set()
        return super().get(block, timeout)


@pytest.fixture
def process_state() -> Iterator[None]:
    """Put back what worker_main sets for its process: signal handlers, torch's threads."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    torch.set_num_threads(threads)


def test_an_idle_worker_leaves_on_sigterm_and_tells_the_parent(process_state: None) -> None:
    inbox, outbox = WatchedInbox(), Outbox()
    done = threading.Event()

    def signal_when_waiting() -> None:
        assert inbox.waiting.wait(DEADLINE)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker alone: its run goes on
        if not done.wait(DEADLINE):  # a worker deaf to SIGTERM: end it, and fail below
            inbox.put(None)

    helper = threading.Thread(target=signal_when_waiting, daemon=True)
    helper.start()
    start = time.monotonic()
    worker_main(
        WorkerSetup("cpu", "cpu#4", threads=1, report_every=1),
        inbox,
        outbox,
    )
    done.set()
    helper.join()
    assert outbox.sent == [StoppedMessage("cpu#4", (), signal.SIGTERM)]
    assert time.monotonic() - start < DEADLINE
