"""Tests of scripts/nst-batch-cron: the real nst-batch through the wrapper, exit codes, the lock.

Every test points XDG_RUNTIME_DIR at its own tmp_path, so the default lock file
(nst-batch-<hash>.lock) lands there and no two tests, or a real cron job, share one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from nst_batch.results import read_rows

REPO = Path(__file__).resolve().parent.parent
WRAPPER = REPO / "scripts" / "nst-batch-cron"
NST_BATCH = Path(sys.executable).parent / "nst-batch"
EX_TEMPFAIL = 75
START = re.compile(r"^\S+Z nst-batch-cron\[(\d+)\]: start: ", re.MULTILINE)
END = re.compile(r"^\S+Z nst-batch-cron\[(\d+)\]: end: exit (\d+) after \d+s$", re.MULTILINE)


def _env(tmp_path: Path, nst_batch: Path = NST_BATCH) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NST_BATCH_LOCK", "NST_BATCH_LOG")}
    env.update(NST_BATCH=str(nst_batch), XDG_RUNTIME_DIR=str(tmp_path))
    return env


def _cron(
    manifest: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WRAPPER), str(manifest), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _fake_nst_batch(tmp_path: Path, body: str) -> Path:
    """A stand-in for nst-batch: a shell script with the given body."""
    path = tmp_path / "fake-nst-batch"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_runs_the_gallery_and_logs_start_and_end(
    tmp_path: Path, write_manifest: Callable[..., Path]
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 4})
    result = _cron(manifest, _env(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # cron mails nothing on success

    rows = read_rows(tmp_path / "out" / "results.csv")
    assert sorted(row.status for row in rows) == ["done"] * 4
    for row in rows:
        with Image.open(tmp_path / "out" / row.output) as image:
            assert max(image.size) == 64

    log = (tmp_path / "logs" / "nst-batch-cron.log").read_text()
    start, end = START.search(log), END.search(log)
    assert start and end, log
    assert start.start() < end.start()
    assert start.group(1) == end.group(1)
    assert end.group(2) == "0"
    assert f"{NST_BATCH} {manifest} -q" in log


@pytest.mark.slow
def test_passes_on_the_exit_code(tmp_path: Path, write_manifest: Callable[..., Path]) -> None:
    manifest = write_manifest(colour="blue")  # an unknown key: a manifest error
    log = tmp_path / "cron.log"
    result = _cron(manifest, {**_env(tmp_path), "NST_BATCH_LOG": str(log)})
    assert result.returncode == 2
    assert f"exited with code 2; see {log}" in result.stderr
    text = log.read_text()
    assert "colour" in text  # nst-batch's own message went to the log
    end = END.search(text)
    assert end and end.group(2) == "2", text
    assert not (tmp_path / "logs").exists()  # NST_BATCH_LOG replaced the default log


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    result = _cron(tmp_path / "nope.yaml", _env(tmp_path))
    assert result.returncode == 2
    assert "nope.yaml not found" in result.stderr


def test_one_run_at_a_time(tmp_path: Path, write_manifest: Callable[..., Path]) -> None:
    manifest = write_manifest()
    # The stand-in holds the lock until the test lets it go, however long the checks take.
    release = tmp_path / "release"
    holder = f"while [ ! -e {release} ]; do sleep 0.05; done"
    env = _env(tmp_path, _fake_nst_batch(tmp_path, holder))
    first = subprocess.Popen(
        [str(WRAPPER), str(manifest)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The lock is taken once the holder's PID is in the lock file.
        deadline = time.monotonic() + 120  # a failure guard only
        locks: list[Path] = []
        while time.monotonic() < deadline:
            locks = list(tmp_path.glob("nst-batch-*.lock"))
            if locks and locks[0].read_text().strip() == str(first.pid):
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        else:
            pytest.fail(f"the first run never wrote its PID into a lock file: {locks}")
        (lock,) = locks
        assert re.fullmatch(r"nst-batch-[0-9a-f]{16}\.lock", lock.name)

        # A start that waited for the lock would wait for ever: the timeout is its failure.
        second = _cron(manifest, env, timeout=120)
        assert second.returncode == EX_TEMPFAIL, second.stderr
        assert str(lock) in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.poll() is None  # the first run went on undisturbed
    finally:
        release.touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err

    # Free again: a fast stand-in runs at once, and the log holds both runs and the refusal.
    third = _cron(manifest, _env(tmp_path, _fake_nst_batch(tmp_path, "echo fast; exit 0")))
    assert third.returncode == 0, third.stderr
    log = (tmp_path / "logs" / "nst-batch-cron.log").read_text()
    assert len(START.findall(log)) == 2 and len(END.findall(log)) == 2, log
    assert "another run" in log and "fast" in log


def test_sigterm_reaches_nst_batch(tmp_path: Path, write_manifest: Callable[..., Path]) -> None:
    manifest = write_manifest()
    fake = _fake_nst_batch(
        tmp_path, "trap 'echo got TERM; exit 143' TERM\necho ready\nwhile :; do sleep 0.1; done"
    )
    log = tmp_path / "cron.log"
    wrapper = subprocess.Popen(
        [str(WRAPPER), str(manifest)],
        env={**_env(tmp_path, fake), "NST_BATCH_LOG": str(log)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # a failure guard only
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.05)
    wrapper.terminate()
    _, err = wrapper.communicate(timeout=120)
    assert wrapper.returncode == 143, err
    text = log.read_text()
    assert "got TERM" in text
    end = END.search(text)
    assert end and end.group(2) == "143", text
