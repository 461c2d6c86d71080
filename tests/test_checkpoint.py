"""Checkpoints: a stopped task resumes where it was; a torn or foreign checkpoint is ignored."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nst_batch import checkpoint, layout
from nst_batch.cli import main
from nst_batch.layout import checkpoint_path, is_temporary
from nst_batch.manifest import load_manifest
from nst_batch.plan import plan
from nst_batch.results import read_rows
from nst_batch.stylize import Losses
from nst_batch.worker import Worker
from tests.conftest import CONTENT, STYLE

COMMAND = [sys.executable, "-m", "nst_batch"]
LOSSES = Losses(1.0, 2.0, 0.0, 3.0)


def _checkpoint(key: str = "ab" * 12, **fields: object) -> checkpoint.Checkpoint:
    values: dict[str, object] = {
        "key": key,
        "image": torch.rand(1, 3, 43, 64),
        "stage": 0,
        "stage_steps": 3,
        "done": 3,
        "history": [5.0, 4.0, 3.0],
        "initial": Losses(2.0, 3.0, 0.0, 5.0),
        "losses": LOSSES,
        "seconds": 1.5,
    }
    return checkpoint.Checkpoint(**(values | fields))  # type: ignore[arg-type]


def test_a_checkpoint_round_trips(tmp_path: Path) -> None:
    saved = _checkpoint()
    path = checkpoint_path(tmp_path, "a.jpg", saved.key)
    checkpoint.save(saved, path, tmp_path)
    assert path.parent == tmp_path / ".nst-batch" / "checkpoints"
    loaded = checkpoint.load(path, saved.key)
    assert torch.equal(loaded.image, saved.image)
    assert (loaded.stage, loaded.stage_steps, loaded.done) == (0, 3, 3)
    assert loaded.history == saved.history and loaded.losses == LOSSES
    assert loaded.initial == saved.initial and loaded.seconds == 1.5
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p.name)]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_torn_foreign_and_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    saved = _checkpoint()
    path = tmp_path / "x.pt"
    checkpoint.save(saved, path, tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # torn
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(path, saved.key)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(path, saved.key)
    torch.save({"state_dict": torch.zeros(2)}, path)  # a torch file, not ours
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.load(path, saved.key)
    path.write_bytes(pickle.dumps(print))  # code: weights_only refuses it
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(path, saved.key)
    checkpoint.save(saved, path, tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="another task"):
        checkpoint.load(path, "cd" * 12)
    checkpoint.save(_checkpoint(done=2), path, tmp_path)  # fewer steps than its history
    with pytest.raises(checkpoint.CheckpointError, match="inconsistent"):
        checkpoint.load(path, saved.key)


def test_the_checkpoint_folder_is_reserved_and_swept(tmp_path: Path) -> None:
    assert layout.is_reserved(".nst-batch/checkpoints/x.pt")
    assert layout.is_reserved(".NST-BATCH")
    folder = tmp_path / ".nst-batch" / "checkpoints"
    folder.mkdir(parents=True)
    stale = folder / ".a.pt.0123abcd.nst-batch.tmp"
    stale.write_bytes(b"x")
    assert layout.stale_temporaries(tmp_path, [], everything=True) == [stale]
    assert layout.stale_temporaries(tmp_path, [], everything=False) == []
    assert layout.stale_temporaries(tmp_path, [], False, [folder / "a.pt"]) == [stale]


def _tasks(write_manifest: Callable[..., Path], **fields: object) -> list:
    return plan(load_manifest(write_manifest(**fields)))


def test_a_torn_or_foreign_checkpoint_is_ignored_with_a_warning(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    task, other = _tasks(write_manifest, params={"steps": 4})[:2]
    torn = checkpoint_path(task.folder, task.relative_output, task.key)
    checkpoint.save(_checkpoint(task.key), torn, task.folder)
    torn.write_bytes(torn.read_bytes()[:100])
    foreign = checkpoint_path(other.folder, other.relative_output, other.key)
    checkpoint.save(_checkpoint("ef" * 12), foreign, other.folder)  # another task's file
    outcomes = Worker("cpu", "cpu#0").run_batch([task, other])
    assert [o.status for o in outcomes] == ["done", "done"]
    assert [o.resumed_from for o in outcomes] == [None, None]
    err = capsys.readouterr().err
    assert err.count("warning:") == 2 and "cannot be read" in err and "another task" in err
    assert not torn.exists() and not foreign.exists()  # done: its checkpoints have served


def test_a_checkpoint_of_another_size_is_ignored(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (task,) = _tasks(write_manifest, params={"steps": 4}, content=[str(CONTENT / "chelsea.png")],
                     style=[str(STYLE / "the_scream.jpg")])  # fmt: skip
    path = checkpoint_path(task.folder, task.relative_output, task.key)
    checkpoint.save(_checkpoint(task.key, image=torch.rand(1, 3, 40, 40)), path, task.folder)
    (outcome,) = Worker("cpu", "cpu#0").run_batch([task])
    assert outcome.status == "done" and outcome.resumed_from is None
    assert "ignoring its checkpoint" in capsys.readouterr().err


def test_a_task_goes_on_from_its_checkpoint(write_manifest: Callable[..., Path]) -> None:
    (task,) = _tasks(write_manifest, params={"steps": 10}, content=[str(CONTENT / "chelsea.png")],
                     style=[str(STYLE / "the_scream.jpg")])  # fmt: skip
    (fresh,) = Worker("cpu", "cpu#0").run_batch([task])
    assert fresh.steps == 10
    image = torch.rand(1, 3, 43, 64)
    path = checkpoint_path(task.folder, task.relative_output, task.key)
    saved = _checkpoint(task.key, image=image, stage_steps=6, done=6, history=[9.0] * 6)
    checkpoint.save(saved, path, task.folder)
    (outcome,) = Worker("cpu", "cpu#0").run_batch([task])
    assert outcome.status == "done" and outcome.resumed_from == 6
    assert outcome.steps == 10 and outcome.history[:6] == [9.0] * 6
    assert not path.exists()
    # --force: the checkpoint is not used
    checkpoint.save(saved, path, task.folder)
    (forced,) = Worker("cpu", "cpu#0", resume=False).run_batch([task])
    assert forced.resumed_from is None and forced.steps == 10


def test_a_whole_run_removes_checkpoints_of_outputs_no_longer_planned(
    write_manifest: Callable[..., Path],
) -> None:
    from click.testing import CliRunner

    manifest = write_manifest(params={"steps": 2})
    out = manifest.parent / "out"
    gone = checkpoint_path(out, "renamed__gone.jpg", "ab" * 12)
    checkpoint.save(_checkpoint(), gone, out)
    (task, *_) = plan(load_manifest(manifest))
    older = checkpoint_path(out, task.relative_output, "cd" * 12)  # older settings
    checkpoint.save(_checkpoint("cd" * 12), older, out)
    result = CliRunner().invoke(main, [str(manifest), "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    assert gone.exists()  # a shard leaves the others' alone
    assert not older.exists()  # its task completed with new settings
    result = CliRunner().invoke(main, [str(manifest)])
    assert result.exit_code == 0, result.output
    assert "removed 1 checkpoint of tasks no longer in the plan" in result.output
    assert not gone.exists()


# -- real processes ---------------------------------------------------------------------------

SIZE, STEPS = 96, 120  # a few seconds on two cores; long enough to end within 3% after a stop


def _one_task(write_manifest: Callable[..., Path], folder: str, **fields: object) -> Path:
    return write_manifest(
        f"{folder}.yaml",
        output=folder,
        content=[str(CONTENT / "chelsea.png")],
        style=[str(STYLE / "starry_night.jpg")],
        params={"size": SIZE, "steps": STEPS},
        devices="cpu",
        **fields,
    )


def _start(manifest: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, str(manifest), "-v", "--print-every", "5", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_step(process: subprocess.Popen[str], step: int, tasks: int = 1) -> None:
    """Read the run's progress lines until `tasks` tasks have each reached `step`."""
    assert process.stderr is not None
    reached: set[str] = set()
    for line in process.stderr:
        if " step " in line and int(line.split(" step ")[1].split("/")[0]) >= step:
            reached.add(line.split(" step ")[0])
            if len(reached) >= tasks:
                return
    raise AssertionError(f"the run ended before step {step}: {process.wait()}")


def _rerun(manifest: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run([*COMMAND, str(manifest)], capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[float, float]:
    """(final loss, seconds) of the one task run without a stop."""
    import yaml

    folder = tmp_path_factory.mktemp("whole")
    doc = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png")],
        "style": [str(STYLE / "starry_night.jpg")],
        "params": {"size": SIZE, "steps": STEPS},
        "devices": "cpu",
    }
    (folder / "m.yaml").write_text(yaml.safe_dump(doc))
    _, done = _rerun(folder / "m.yaml")
    assert done.returncode == 0, done.stderr
    (row,) = read_rows(folder / "out" / "results.csv")
    assert row.total_loss is not None and row.seconds is not None
    return row.total_loss, row.seconds


def _check_resumed(out: Path, reference: float) -> None:
    done = read_rows(out / "results.csv")[-1]
    assert done.status == "done"
    assert done.resumed_from is not None and done.resumed_from >= STEPS // 3
    assert done.steps == STEPS and done.steps - done.resumed_from <= 0.7 * STEPS
    assert done.total_loss is not None
    assert abs(done.total_loss / reference - 1) < 0.03, (done.total_loss, reference)
    # removed when done, and their folder too (.nst-batch/ keeps only the file cache)
    assert not (out / ".nst-batch" / "checkpoints").exists()
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]


@pytest.mark.slow
def test_sigterm_halfway_then_rerun_resumes(
    write_manifest: Callable[..., Path], uninterrupted: tuple[float, float]
) -> None:
    manifest = _one_task(write_manifest, "stopped")
    out = manifest.parent / "stopped"
    process = _start(manifest)
    _until_step(process, STEPS // 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "saved as checkpoints" in err
    assert len(list((out / ".nst-batch" / "checkpoints").glob("*.pt"))) == 1
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    assert [r.status for r in read_rows(out / "results.csv")] == ["interrupted", "done"]
    _check_resumed(out, uninterrupted[0])


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_rerun_resumes(
    write_manifest: Callable[..., Path], uninterrupted: tuple[float, float]
) -> None:
    manifest = _one_task(write_manifest, "killed", checkpoint_every=0.5)
    out = manifest.parent / "killed"
    process = _start(manifest)
    _until_step(process, STEPS // 2)
    # the checkpoint written after step STEPS/2 at the latest (every 0.5 s)
    time.sleep(1.0)
    assert list((out / ".nst-batch" / "checkpoints").glob("*.pt"))
    process.kill()
    process.communicate()
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # no torn checkpoint was ever read
    _check_resumed(out, uninterrupted[0])


@pytest.mark.slow
def test_sigterm_saves_every_task_in_flight_of_several_workers(
    write_manifest: Callable[..., Path],
) -> None:
    # 4 tasks, 2 CPU workers with a batch of 2 each: all four in flight at once
    manifest = write_manifest(params={"size": 64, "steps": 60}, devices="cpu,cpu", batch_size=2)
    out = manifest.parent / "out"
    process = _start(manifest)
    _until_step(process, 10, tasks=4)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert len(list((out / ".nst-batch" / "checkpoints").glob("*.pt"))) == 4
    rows = read_rows(out / "results.csv")
    assert [r.status for r in rows] == ["interrupted"] * 4
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    resumed = [r for r in read_rows(out / "results.csv") if r.status == "done"]
    assert len(resumed) == 4
    assert all(r.resumed_from is not None and r.resumed_from >= 10 for r in resumed)
    assert not (out / ".nst-batch" / "checkpoints").exists()


def _worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of a run (its children, less multiprocessing's tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command:
            pids.append(pid)
    return pids


@pytest.mark.slow
def test_a_worker_stopped_alone_records_its_task_interrupted_and_the_run_goes_on(
    write_manifest: Callable[..., Path],
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 60}, devices="cpu,cpu", batch_size=1)
    out = manifest.parent / "out"
    process = _start(manifest)
    _until_step(process, 10, tasks=2)
    workers = _worker_pids(process.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGTERM)
    summary, err = process.communicate(timeout=120)
    assert process.returncode == 1, err  # the gallery is not complete
    assert "3 done, 0 skipped, 0 failed, 1 interrupted (saved as checkpoints" in summary
    rows = read_rows(out / "results.csv")
    assert sorted(r.status for r in rows) == ["done", "done", "done", "interrupted"]
    (stopped,) = [r for r in rows if r.status == "interrupted"]
    assert stopped.error == "interrupted (SIGTERM)"
    assert len(list((out / ".nst-batch" / "checkpoints").glob("*.pt"))) == 1
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    last = read_rows(out / "results.csv")[-1]
    assert (last.output, last.status) == (stopped.output, "done")
    assert last.resumed_from is not None and last.resumed_from >= 10
