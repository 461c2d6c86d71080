"""Checkpoints: a stopped task resumes where it was; a torn or foreign checkpoint is ignored."""

from __future__ import annotations

import io
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import CONTENT, STYLE, Pause
from PIL import Image

from nst_batch import checkpoint, layout
from nst_batch.cli import main
from nst_batch.layout import checkpoint_path, is_temporary
from nst_batch.manifest import load_manifest
from nst_batch.plan import plan
from nst_batch.results import read_rows
from nst_batch.stylize import Losses
from nst_batch.worker import Worker, WorkerOptions

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
    checkpoint.save(_checkpoint(done=2), path, tmp_path)  # fewer steps than at its scale
    with pytest.raises(checkpoint.CheckpointError, match="step counts disagree"):
        checkpoint.load(path, saved.key)


# What `checkpoint.save` writes for a one-step task at 48 px (48x32), forged one field at a
# time: each is refused before use, with a message of its own.
def _payload(task_key: str, **changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "format": checkpoint.FORMAT,
        "key": task_key,
        "image": torch.rand(1, 3, 32, 48),
        "stage": 0,
        "stage_steps": 1,
        "done": 1,
        "history": torch.tensor([5.0], dtype=torch.float64),
        "initial": [2.0, 3.0, 0.0, 5.0, 0.0],
        "losses": [1.0, 2.0, 0.0, 3.0, 0.0],
        "seconds": 1.5,
    }
    return payload | changes


def _image_with(value: float) -> torch.Tensor:
    image = torch.rand(1, 3, 32, 48)
    image[0, 1, 2, 3] = value
    return image


def _without(*names: str) -> dict[str, object]:
    payload = _payload("ab" * 12)
    for name in names:
        del payload[name]
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_without("history", "seconds"), " is incomplete (no history, seconds)"),
        (_without("image"), " is incomplete (no image)"),
        (_payload("ab" * 12, format=99), " is not a checkpoint of this nst-batch (format 99)"),
        (_without("format"), " is not a checkpoint of this nst-batch (format a NoneType)"),
        (_payload("cd" * 12), f" was made for another task (key '{'cd' * 12}')"),
        (_payload("ab" * 12, key=7), " was made for another task (key 7)"),
        (
            _payload("ab" * 12, image=_image_with(2.0)),
            ": its image has values outside 0..1 (or not finite)",
        ),
        (
            _payload("ab" * 12, history=torch.tensor([5.0, 4.0], dtype=torch.float64)),
            ": its loss history has 2 of 1 steps",
        ),
        (_payload("ab" * 12, seconds=-1.0), ": its time is not a number of seconds"),
        (_payload("ab" * 12, seconds=3), ": its time is not a number of seconds"),
    ],
    ids=["two-missing", "no-image", "format-99", "no-format", "other-key", "key-int",
         "image-2", "history-long", "seconds-negative", "seconds-int"],
)  # fmt: skip
def test_a_checkpoint_no_run_could_save_is_refused_with_its_own_message(
    tmp_path: Path, payload: dict[str, object], message: str
) -> None:
    path = tmp_path / "c.pt"
    torch.save(payload, path)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path, "ab" * 12)
    assert str(caught.value) == f"{layout.display(path)}{message}"  # its own, whole


FORGED: dict[str, tuple[Callable[[], dict[str, object]], str]] = {
    "sparse": (lambda: {"image": torch.rand(1, 3, 32, 48).to_sparse()}, "its image is not a dense"),
    "meta": (
        lambda: {"image": torch.empty(1, 3, 32, 48, device="meta")},
        "its image has no data on the CPU (device meta)",
    ),
    "uint8": (
        lambda: {"image": torch.full((1, 3, 32, 48), 255, dtype=torch.uint8)},
        "its image is torch.uint8, not torch.float32",
    ),
    "1e30": (lambda: {"image": _image_with(1e30)}, "its image has values outside 0..1"),
    "nan": (lambda: {"image": _image_with(math.nan)}, "its image has values outside 0..1"),
    "inf": (lambda: {"image": _image_with(-math.inf)}, "its image has values outside 0..1"),
    "done_past_the_budget": (
        lambda: {"done": 500, "history": torch.full((500,), 5.0, dtype=torch.float64)},
        "its step counts disagree (500 done, 1 at scale 1)",
    ),
}
FORGED_ONLY_HERE: dict[str, tuple[Callable[[], dict[str, object]], str]] = {
    "float64": (
        lambda: {"image": torch.rand(1, 3, 32, 48, dtype=torch.float64)},
        "its image is torch.float64, not torch.float32",
    ),
    "claims_a_huge_image": (  # one value, strides of 0: 30 billion pixels to any reader
        lambda: {"image": torch.zeros(1, 1, 1, 1).expand(1, 3, 100_000, 100_000)},
        "its image is not contiguous (strides (1, 0, 0, 0))",
    ),
    "claims_a_huge_history": (
        lambda: {
            "done": 10**9,
            "stage_steps": 10**9,
            "history": torch.zeros(1).double().expand(10**9),
        },
        "its loss history is not contiguous",
    ),
    "three_dimensions": (lambda: {"image": torch.rand(3, 32, 48)}, "has 3 dimensions, not 4"),
    "two_images": (lambda: {"image": torch.rand(2, 3, 32, 48)}, "its image is of shape"),
    "a_list_for_an_image": (lambda: {"image": [[0.5]]}, "its image is a list, not a tensor"),
    "history_too_short": (
        lambda: {"done": 2, "stage_steps": 2},
        "its loss history has 1 of 2 steps",
    ),
    "history_not_finite": (
        lambda: {"history": torch.tensor([math.nan], dtype=torch.float64)},
        "its loss history is not finite",
    ),
    "history_of_floats": (
        lambda: {"history": torch.tensor([5.0])},
        "its loss history is torch.float32, not torch.float64",
    ),
    "no_steps_at_its_scale": (
        lambda: {"stage_steps": 0, "done": 0, "history": torch.zeros(0, dtype=torch.float64)},
        "its step counts disagree",
    ),
    "scale_2_without_scale_1": (lambda: {"stage": 1}, "its step counts disagree"),
    "negative_stage": (lambda: {"stage": -1}, "its stage is not a step count (-1)"),
    "stage_as_text": (lambda: {"stage": "0"}, "its stage is not a step count ('0')"),
    "steps_as_a_tensor": (
        lambda: {"done": torch.tensor(1)},
        "its done is not a step count (a Tensor)",
    ),
    "losses_not_finite": (
        lambda: {"losses": [1.0, 2.0, 0.0, math.inf, 0.0]},
        "its losses are not five finite numbers",
    ),
    "four_initial_losses": (
        lambda: {"initial": [1.0, 2.0, 0.0, 3.0]},
        "its initial losses are not five finite numbers",
    ),
    "time_not_finite": (lambda: {"seconds": math.nan}, "its time is not a number of seconds"),
    "no_history": (lambda: {"history": None}, "its loss history is a NoneType"),
    "format_as_a_tensor": (
        lambda: {"format": torch.ones(2)},
        "not a checkpoint of this nst-batch (format a Tensor)",
    ),
    "key_as_a_tensor": (lambda: {"key": torch.ones(2)}, "made for another task (key a Tensor)"),
    "key_nested_deep": (lambda: {}, "made for another task (key a list)"),
}


PLACEHOLDER = "nested-list-goes-here"


def _save_nested_key(payload: dict[str, object], path: Path, depth: int = 5000) -> None:
    """torch.save `payload` with its key a list nested `depth` deep: deeper than repr or
    torch.save's pickler can recurse, so the pickle is edited (a pickle builds it in a loop:
    `depth` EMPTY_LIST opcodes, then `depth - 1` APPENDs)."""
    buffer = io.BytesIO()
    torch.save(payload | {"key": PLACEHOLDER}, buffer)
    text = PLACEHOLDER.encode()
    opcode = b"X" + len(text).to_bytes(4, "little") + text  # BINUNICODE
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                assert data.count(opcode) == 1
                data = data.replace(opcode, b"]" * depth + b"a" * (depth - 1))
            target.writestr(info.filename, data)


@pytest.mark.parametrize("forgery", sorted({**FORGED, **FORGED_ONLY_HERE}))
def test_a_forged_checkpoint_is_refused_before_use(tmp_path: Path, forgery: str) -> None:
    changes, message = {**FORGED, **FORGED_ONLY_HERE}[forgery]
    path = tmp_path / "x.pt"
    payload = _payload("ab" * 12, **changes())
    if forgery == "key_nested_deep":  # torch.save's pickler would recurse: write it by hand
        _save_nested_key(payload, path)
    else:
        torch.save(payload, path)
    with pytest.raises(checkpoint.CheckpointError) as refused:
        checkpoint.load(path, "ab" * 12)
    assert message in str(refused.value)
    assert str(refused.value).startswith(str(path))


@pytest.mark.slow
def test_forged_checkpoints_are_ignored_and_the_run_succeeds(
    write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    """Through the command: each task (a copy of one content image each) has a forged
    checkpoint, one a genuine one; each forgery costs its own warning, and its task runs
    from its beginning to its step budget, while the genuine one is resumed."""
    from click.testing import CliRunner

    forgeries = ["genuine", *sorted(FORGED)]
    for forgery in forgeries:
        shutil.copyfile(CONTENT / "chelsea.png", tmp_path / f"{forgery}.png")
    manifest = write_manifest(
        content=[str(tmp_path / f"{forgery}.png") for forgery in forgeries],
        style=[str(STYLE / "the_scream.jpg")],
        params={"size": 48, "steps": 3},
        devices="cpu",
    )
    tasks = plan(load_manifest(manifest))
    assert [task.content.name for task in tasks] == forgeries
    paths = {}
    for task, forgery in zip(tasks, forgeries, strict=True):
        path = checkpoint_path(task.folder, task.relative_output, task.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        changes = FORGED[forgery][0] if forgery in FORGED else dict
        torch.save(_payload(task.key, **changes()), path)
        paths[task.relative_output] = path

    result = CliRunner().invoke(main, [str(manifest)])

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    rows = {row.output: row for row in read_rows(tasks[0].folder / "results.csv")}
    for task, forgery in zip(tasks, forgeries, strict=True):
        row = rows[task.relative_output]
        assert (row.status, row.steps) == ("done", 3), forgery
        assert row.resumed_from == (1 if forgery == "genuine" else None), forgery
        with Image.open(task.output) as image:
            assert image.size == (48, 32)
        path = paths[task.relative_output]
        assert not path.exists()  # done: its checkpoint has served
        if forgery != "genuine":
            where = layout.display(path)
            warning = f"{task.label}: ignoring its checkpoint: {where}: {FORGED[forgery][1]}"
            assert warning in result.output, forgery
    assert result.output.count("warning:") == len(FORGED)


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
    # the recipe's refusal (a well-formed file that does not fit), not an unreadable file's
    assert capsys.readouterr().err == (
        f"warning: {task.label}: ignoring its checkpoint {layout.display(path)}: its image is "
        "40x40, the task's is 64x43 at that scale; starting anew\n"
    )


@pytest.mark.slow
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
    (forced,) = Worker("cpu", "cpu#0", WorkerOptions(resume=False)).run_batch([task])
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

SIZE, STEPS = 64, 90  # a few seconds on two cores; long enough to end within 3% after a stop


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


def _start(manifest: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


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
    write_manifest: Callable[..., Path], uninterrupted: tuple[float, float], pause: Pause
) -> None:
    manifest = _one_task(write_manifest, "stopped")
    out = manifest.parent / "stopped"
    process = _start(manifest, pause.env(STEPS // 2))
    ((_, steps),) = pause.wait(process).items()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "saved as checkpoints" in err
    assert len(list((out / ".nst-batch" / "checkpoints").glob("*.pt"))) == 1
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    assert [r.status for r in read_rows(out / "results.csv")] == ["interrupted", "done"]
    _check_resumed(out, uninterrupted[0])
    assert read_rows(out / "results.csv")[-1].resumed_from == steps  # the step it stopped at


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_rerun_resumes(
    write_manifest: Callable[..., Path], uninterrupted: tuple[float, float], pause: Pause
) -> None:
    # a checkpoint after every evaluation; the run pauses after the first one past halfway
    manifest = _one_task(write_manifest, "killed", checkpoint_every=0.001)
    out = manifest.parent / "killed"
    process = _start(manifest, pause.env(STEPS // 2, after="checkpoint"))
    ((_, steps),) = pause.wait(process).items()  # the task runs in the command's own process
    assert list((out / ".nst-batch" / "checkpoints").glob("*.pt"))
    process.kill()
    process.communicate()
    _, done = _rerun(manifest)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # no torn checkpoint was ever read
    _check_resumed(out, uninterrupted[0])
    assert read_rows(out / "results.csv")[-1].resumed_from == steps


@pytest.mark.slow
def test_sigterm_saves_every_task_in_flight_of_several_workers(
    write_manifest: Callable[..., Path], pause: Pause
) -> None:
    # 4 tasks, 2 CPU workers with a batch of 2 each: all four in flight at once
    manifest = write_manifest(params={"size": 64, "steps": 30}, devices="cpu,cpu", batch_size=2)
    out = manifest.parent / "out"
    process = _start(manifest, pause.env(10))
    assert len(pause.wait(process, count=2)) == 2
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


@pytest.mark.slow
def test_a_worker_stopped_alone_records_its_task_interrupted_and_the_run_goes_on(
    write_manifest: Callable[..., Path], pause: Pause
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 30}, devices="cpu,cpu", batch_size=1)
    out = manifest.parent / "out"
    process = _start(manifest, pause.env(10))
    first, _ = sorted(pause.wait(process, count=2))  # both spawned workers, 10 steps in
    os.kill(first, signal.SIGTERM)
    pause.wait_resumed(first)  # its stop flag is set: it stops at this evaluation
    pause.release()
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
