"""Tests of nst_batch.worker: the Worker's caches, batches, failures and its process loop.

The real 'original' VGG19 on the sample images at 64 px and 2 to 6 steps, each test with a
Worker of its own, since most count its model builds or target computations.
"""

from __future__ import annotations

import json
import queue
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CONTENT, STYLE

from nst_batch import images
from nst_batch import worker as worker_module
from nst_batch.layout import curve_path
from nst_batch.manifest import load_manifest
from nst_batch.memory import Footprint
from nst_batch.metadata import KEY_METADATA
from nst_batch.plan import Task, plan
from nst_batch.stylize import Progress, StyleTargets, StylizeError, _Objective, style_targets
from nst_batch.stylize import stylize as run_stylize
from nst_batch.vgg import VGG19Features
from nst_batch.worker import (
    DoneMessage,
    FatalMessage,
    FatalWorkerError,
    StepMessage,
    Worker,
    WorkerOptions,
    WorkerSetup,
    worker_main,
)

CHELSEA = CONTENT / "chelsea.png"  # 451x300: 64x43 at 64 px
STARRY = STYLE / "starry_night.jpg"
SCREAM = STYLE / "the_scream.jpg"

WriteManifest = Callable[..., Path]


def _tasks(write_manifest: WriteManifest, **fields: Any) -> list[Task]:
    return plan(load_manifest(write_manifest(**fields)))


def _content(task: Task, size: int = 64) -> torch.Tensor:
    """The task's content at `size`, as the worker sizes it."""
    image = images.load_image(task.content.path)
    shape = images.target_size(*image.size, size, task.params.square)
    return images.to_tensor(images.resize(image, shape))


def _targets(worker: Worker, task: Task, size: int = 64) -> StyleTargets:
    return worker.targets(task, worker.model(task), size, _content(task, size))


def _relative(actual: torch.Tensor, desired: torch.Tensor) -> float:
    actual, desired = actual.detach().double(), desired.detach().double()
    return float((actual - desired).norm() / desired.norm())


def _largest_relative(a: StyleTargets, b: StyleTargets) -> float:
    """The largest relative difference of two target sets over their layers."""
    assert a.keys() == b.keys()
    return max(_relative(a[k], b[k]) for k in a)


# --- style targets: computed once per style and size ------------------------------------------


def test_targets_are_computed_once_per_style_and_size(write_manifest: WriteManifest) -> None:
    tasks = _tasks(write_manifest)  # chelsea, coffee x starry_night, the_scream
    own = Worker("cpu", "cpu#targets")
    first = _targets(own, tasks[0])
    assert own.target_computations == 1 and own.model_builds == 1
    same_style = [t for t in tasks if t.target_group == tasks[0].target_group]
    assert len(same_style) == 2
    assert all(_targets(own, t) is first for t in same_style)  # the cached set, not a copy
    assert own.target_computations == 1
    other = next(t for t in tasks if t.target_group != tasks[0].target_group)
    assert _targets(own, other) is not first
    assert own.target_computations == 2
    _targets(own, tasks[0], size=96)  # another size is another set
    assert own.target_computations == 3
    assert own.model_builds == 1


def test_the_target_cache_keeps_the_most_recently_used(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "TARGET_CACHE_SIZE", 2)
    (task,) = _tasks(write_manifest, content=[str(CHELSEA)], style=[str(STARRY)])
    own = Worker("cpu", "cpu#lru")
    for size in (64, 80, 64, 96):  # 64 is used again before 96 comes: 80 goes
        _targets(own, task, size)
    assert own.target_computations == 3
    _targets(own, task, 64)
    assert own.target_computations == 3
    _targets(own, task, 80)
    assert own.target_computations == 4


def test_colour_mode_targets_do_not_depend_on_the_tasks_run_before(
    write_manifest: WriteManifest,
) -> None:
    square, kept = None, None
    for task in _tasks(
        write_manifest,
        content=[str(CHELSEA)],
        style=[str(STARRY)],
        params={"preserve_color": "histogram"},
        sweep={"square": [False, True]},
    ):
        if task.params.square:
            square = task
        else:
            kept = task
    assert square is not None and kept is not None

    after_kept = Worker("cpu", "a")
    after_kept.targets(kept, after_kept.model(kept), 64, _content(kept))
    fresh = Worker("cpu", "b")
    cached = after_kept.targets(square, after_kept.model(square), 64, _content(square))
    alone = fresh.targets(square, fresh.model(square), 64, _content(square))
    assert _largest_relative(cached, alone) < 1e-5


def test_a_gallery_builds_one_model_and_a_target_set_per_style(
    write_manifest: WriteManifest,
) -> None:
    # chelsea in two styles at 64 px, 2 steps: one shape, one batch
    tasks = _tasks(write_manifest, content=[str(CHELSEA)], params={"steps": 2})
    own = Worker("cpu", "cpu#gallery")
    heard: list[tuple[int, int]] = []
    outcomes = own.run_batch(tasks, lambda i, p: heard.append((i, p.step)), report_every=1)
    assert [o.status for o in outcomes] == ["done"] * 2, [o.error for o in outcomes]
    assert (own.target_computations, own.model_builds) == (2, 1)
    assert [o.batch for o in outcomes] == [2] * 2
    assert all(o.peak_memory is None for o in outcomes)  # a CPU has no peak to report
    assert sorted(heard) == [(i, step) for i in range(2) for step in (1, 2)]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert outcome.steps == 2 and len(outcome.history) == 2
        assert outcome.seconds >= outcome.optimize_seconds > 0
        assert task.output.is_file()
        curve = json.loads(curve_path(task.output).read_text())
        assert curve == {
            "key": task.key,
            "total_loss": [float(f"{v:.5g}") for v in outcome.history],
        }
    own.run_batch(tasks[:1])  # a later batch reuses the model and the targets
    assert (own.target_computations, own.model_builds) == (2, 1)


# --- failures: a sentence per task, the rest of the batch goes on ---------------------------


def test_an_unreadable_content_fails_its_task_and_the_batch_finishes(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    tasks = _tasks(
        write_manifest, content=[str(bad), str(CHELSEA)], style=[str(STARRY)], params={"steps": 2}
    )
    assert [t.content.name for t in tasks] == ["broken", "chelsea"]
    own = Worker("cpu", "cpu#bad")
    failed, done = own.run_batch(tasks)
    assert failed.status == "failed"
    assert failed.error.startswith(f"Cannot use image '{bad}': ")
    assert "it is not an image Pillow can read" in failed.error
    assert "\n" not in failed.error
    assert (failed.losses, failed.steps, failed.history) == (None, None, [])
    assert not tasks[0].output.exists()
    assert done.status == "done", done.error
    assert done.steps == 2 and done.batch == 1  # it ran alone: the broken task never started
    assert tasks[1].output.is_file()
    assert own.target_computations == 1  # the style was read once, for the task that ran
    # A batch of the broken task alone fails, and the worker goes on to the next one.
    assert [o.status for o in own.run_batch(tasks[:1])] == ["failed"]
    assert [o.status for o in own.run_batch(tasks[1:])] == ["done"]
    assert own.target_computations == 1


def _failing_stylize_batch(exc: Exception) -> Callable[..., Any]:
    def stylize_batch(*args: object, **kwargs: object) -> Any:
        raise exc

    return stylize_batch


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (RuntimeError("boom"), "internal error: RuntimeError: boom"),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory"),
            "out of memory on cpu at size 64; try size 48, a smaller batch_size or fewer "
            "workers_per_device",
        ),
    ],
    ids=["internal", "out of memory"],
)
def test_an_optimization_that_raises_fails_every_task_of_its_batch(
    write_manifest: WriteManifest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    exc: Exception,
    error: str,
) -> None:
    tasks = _tasks(write_manifest, style=[str(STARRY)], params={"steps": 2})
    own = Worker("cpu", "cpu#raises")
    monkeypatch.setattr(worker_module, "stylize_batch", _failing_stylize_batch(exc))
    outcomes = own.run_batch(tasks)
    assert [(o.status, o.error) for o in outcomes] == [("failed", error)] * 2
    # Out of memory: the two run again one at a time, and each fails alone.
    halved = "warning: a batch of 2 tasks ran out of memory on cpu; running at most 1 together"
    assert capsys.readouterr().err.startswith(halved) is isinstance(
        exc, torch.cuda.OutOfMemoryError
    )
    assert all(o.seconds > 0 for o in outcomes)
    assert not any(t.output.exists() for t in tasks)
    # Out of memory drops the cached targets: the next task computes them afresh.
    computations = own.target_computations
    _targets(own, tasks[0])
    fresh = isinstance(exc, torch.cuda.OutOfMemoryError)
    assert own.target_computations == computations + fresh


def test_a_diverging_task_fails_with_its_reason_and_its_neighbour_finishes(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _tasks(write_manifest, style=[str(STARRY)], params={"steps": 2})
    real = worker_module.stylize_batch

    def stylize_batch(vgg: Any, jobs: Any, *args: object, **kwargs: object) -> Any:
        results = real(vgg, jobs, *args, **kwargs)
        return [StylizeError("the loss became nan at step 1", step=1), *results[1:]]

    monkeypatch.setattr(worker_module, "stylize_batch", stylize_batch)
    failed, done = Worker("cpu", "cpu#diverges").run_batch(tasks)
    assert (failed.status, failed.error) == ("failed", "the loss became nan at step 1")
    assert not tasks[0].output.exists()
    assert done.status == "done" and tasks[1].output.is_file()


def test_weights_that_cannot_be_loaded_stop_the_run(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    (tmp_path / "vgg.pth").write_bytes(b"not a torch file")
    tasks = _tasks(write_manifest, weights="vgg.pth")
    with pytest.raises(FatalWorkerError, match=r"weights file .*vgg\.pth"):
        Worker("cpu", "cpu#weights").run_batch(tasks)


# --- batches by memory: calibrated once per kind, split to fit, halved on running out -----------

MiB = 2**20


class StylizeSpy:
    """The real stylize_batch, recording each call's (batch size, step budget); batches of
    more than `fits` tasks raise CUDA's out-of-memory error instead of running."""

    def __init__(self, fits: int | None = None) -> None:
        self.real = worker_module.stylize_batch
        self.fits = fits
        self.calls: list[tuple[int, int]] = []

    def __call__(self, vgg: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((len(jobs), jobs[0].params.steps))
        if self.fits is not None and len(jobs) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (made up)")
        return self.real(vgg, jobs, *args, **kwargs)


class FakeMemory:
    """A device's memory with made-up numbers: a fixed budget, and peaks that follow
    `footprint` for the batch size the spy saw last."""

    def __init__(self, spy: StylizeSpy, footprint: Footprint, budget: int) -> None:
        self.spy, self.footprint, self.bytes = spy, footprint, budget
        self.peaks = 0  # calibration runs measured

    def budget(self) -> int:
        return self.bytes

    def peak(self, run: Callable[[], object]) -> int:
        run()
        self.peaks += 1
        return self.footprint.bytes(self.spy.calls[-1][0])


def _five_tasks(write_manifest: WriteManifest, **params: Any) -> list[Task]:
    """chelsea x starry_night in five content weights: one shape (64x43), 2 steps each."""
    return _tasks(
        write_manifest,
        content=[str(CHELSEA)],
        style=[str(STARRY)],
        params={"steps": 2, **params},
        sweep={"content_weight": [1, 2, 3, 4, 5]},
    )


def _measured_worker(
    monkeypatch: pytest.MonkeyPatch, name: str, budget: int, fits: int | None = None
) -> tuple[Worker, StylizeSpy, FakeMemory]:
    """A CPU worker that sizes its batches as on CUDA, by a footprint of 400 MiB fixed and
    300 MiB per task and `budget` bytes; batches above `fits` tasks run out of memory."""
    spy = StylizeSpy(fits)
    monkeypatch.setattr(worker_module, "stylize_batch", spy)
    own = Worker("cpu", name)
    fake = FakeMemory(spy, Footprint(fixed=400 * MiB, per_task=300 * MiB), budget)
    own.memory = fake  # type: ignore[assignment]
    return own, spy, fake


def _all_done(tasks: list[Task], outcomes: list[Any]) -> None:
    """Every task done in 2 steps, its output a 64x43 image with its key."""
    assert [o.status for o in outcomes] == ["done"] * len(tasks), [o.error for o in outcomes]
    assert [o.steps for o in outcomes] == [2] * len(tasks)
    for task in tasks:
        assert images.load_image(task.output).size == (64, 43)
        assert images.read_metadata(task.output)[KEY_METADATA] == task.key


def test_a_batch_runs_in_balanced_chunks_that_fit_the_budget(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    tasks = _five_tasks(write_manifest)
    assert len({t.key for t in tasks}) == 5
    # 2 tasks need 1000 MiB, 3 need 1300 MiB: 2 fit in 1200 MiB
    own, spy, fake = _measured_worker(monkeypatch, "cpu#fit", budget=1200 * MiB)
    outcomes = own.run_batch(tasks)
    _all_done(tasks, outcomes)
    # calibration: the first job alone, then two, 4 evaluations each; then 2, 2, 1
    assert spy.calls == [(1, 4), (2, 4), (2, 2), (2, 2), (1, 2)]
    assert [o.batch for o in outcomes] == [2, 2, 2, 2, 1]
    assert fake.peaks == 2
    assert list(own.footprints.values()) == [
        (Footprint(fixed=400 * MiB, per_task=300 * MiB), 43 * 64)
    ]
    assert own.caps == {}
    assert capsys.readouterr().err == ""


def test_a_chunk_that_runs_out_of_memory_runs_again_in_halves(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    tasks = _five_tasks(write_manifest)
    # the budget takes all five, the device only two
    own, spy, _ = _measured_worker(monkeypatch, "cpu#halves", budget=10_000 * MiB, fits=2)
    outcomes = own.run_batch(tasks)
    _all_done(tasks, outcomes)
    assert spy.calls == [(1, 4), (2, 4), (5, 2), (2, 2), (2, 2), (1, 2)]
    assert [o.batch for o in outcomes] == [2, 2, 2, 2, 1]
    assert list(own.caps.values()) == [2]
    assert capsys.readouterr().err == (
        "warning: a batch of 5 tasks ran out of memory on cpu; "
        "running at most 2 together from now on\n"
    )
    # The cap stays: the next batch of the kind is no larger, and warns no more.
    spy.calls.clear()
    _all_done(tasks, own.run_batch(tasks))
    assert spy.calls == [(2, 2), (2, 2), (1, 2)]
    assert capsys.readouterr().err == ""


def test_two_that_run_out_of_memory_in_calibration_leave_the_peak_of_one(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    tasks = _five_tasks(write_manifest)[:3]
    # one task's 700 MiB counts per task: 1 fits in 1300 MiB (2 would by the line)
    own, spy, fake = _measured_worker(monkeypatch, "cpu#one", budget=1300 * MiB, fits=1)
    outcomes = own.run_batch(tasks)
    _all_done(tasks, outcomes)
    assert spy.calls == [(1, 4), (2, 4), (1, 2), (1, 2), (1, 2)]
    assert [o.batch for o in outcomes] == [1, 1, 1]
    assert fake.peaks == 1
    assert list(own.footprints.values()) == [(Footprint(fixed=0, per_task=700 * MiB), 43 * 64)]
    assert capsys.readouterr().err == ""  # nothing ran out of memory but the calibration


def test_a_footprint_is_calibrated_once_per_kind_of_batch(
    write_manifest: WriteManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _five_tasks(write_manifest)
    own, spy, fake = _measured_worker(monkeypatch, "cpu#once", budget=10_000 * MiB)
    own.run_batch(tasks[:3])
    own.run_batch(tasks[2:])
    assert spy.calls == [(1, 4), (2, 4), (3, 2), (3, 2)]
    assert fake.peaks == 2
    own.run_batch(tasks[:1])  # a task alone needs no calibration
    assert spy.calls[4:] == [(1, 2)]
    # another shape takes the footprint scaled by its pixels: no calibration
    larger = _five_tasks(write_manifest, size=80)[:3]
    own.memory = FakeMemory(spy, fake.footprint, budget=2000 * MiB)  # type: ignore[assignment]
    done = own.run_batch(larger)
    assert [o.status for o in done] == ["done"] * 3
    # 80x53 is 1.54x the pixels: 616 MiB fixed and 462 MiB a task, so 2 of 3 fit 2000 MiB
    assert spy.calls[5:] == [(2, 2), (1, 2)]
    assert [o.batch for o in done] == [2, 2, 1]
    assert own.memory.peaks == 0  # type: ignore[attr-defined]
    assert len(own.footprints) == 1
    # another precision is another kind: measured anew
    bf16 = _five_tasks(write_manifest, precision="bf16", size=48)[:2]  # bf16 is slow on CPUs
    own.run_batch(bf16)
    assert spy.calls[7:] == [(1, 4), (2, 4), (2, 2)]
    assert len(own.footprints) == 2


# --- torch.compile ----------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_worker_matches_the_eager_one(write_manifest, content, style) -> None:
    """Compiled and eager forwards agree to ~5e-7 at one image: the start and the first
    step's losses agree to 1e-5; six L-BFGS steps (a line search that overshoots, then
    interpolates) amplify that to ~2e-4."""
    manifest = load_manifest(
        write_manifest(content=[str(CHELSEA)], style=[str(STARRY)], params={"size": 64, "steps": 6})
    )
    (task,) = plan(manifest)
    eager, compiled = Worker("cpu", "cpu#0"), Worker("cpu", "cpu#1", WorkerOptions(compile=True))
    eager_net, compiled_net = eager.model(task), compiled.model(task)
    assert getattr(eager_net.forward, "compiled", None) is None
    # Only the optimization's passes (with gradients) go through the compiled forward.
    original = compiled_net.forward.compiled._torchdynamo_orig_callable
    assert original.__func__ is VGG19Features.forward and original.__self__ is compiled_net

    outcomes = [eager.run(task), compiled.run(task)]
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    (first, second) = outcomes
    assert first.steps == second.steps == 6
    assert second.history[:2] == pytest.approx(first.history[:2], rel=1e-5)
    assert second.history == pytest.approx(first.history, rel=2e-3)
    assert second.losses.total == pytest.approx(first.losses.total, rel=2e-3)

    params = task.params
    results, grads = [], []
    for model in (eager_net, compiled_net):
        targets = style_targets(model, style, params)
        results.append(run_stylize(model, content, targets, params))
        objective = _Objective(model, content, targets, params)
        # contiguous, as the optimization's images are: another layout would recompile
        x = content.clone(memory_format=torch.contiguous_format).requires_grad_(True)
        terms = objective.terms(model(x, sorted(objective.layers)), x)
        terms.sum().backward()
        grads.append((terms.detach(), x.grad))
    (eager_terms, eager_grad), (compiled_terms, compiled_grad) = grads
    assert compiled_terms[1] == pytest.approx(float(eager_terms[1]), rel=1e-5)
    assert eager_grad is not None and compiled_grad is not None
    assert _relative(compiled_grad, eager_grad) < 1e-5
    assert float((results[1].image - results[0].image).abs().max()) < 1e-2


# --- worker_main: the loop of a spawned worker process, run here --------------------------------


class Outbox:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, message: object) -> None:
        self.sent.append(message)


@pytest.fixture
def process_state() -> Iterator[None]:
    """Put back what worker_main sets for its process: the SIGINT handler, torch's threads."""
    handler, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    yield
    signal.signal(signal.SIGINT, handler)
    torch.set_num_threads(threads)


def _setup(name: str) -> WorkerSetup:
    return WorkerSetup("cpu", name, threads=1, report_every=1)


def test_worker_main_reports_steps_and_outcomes_until_told_to_stop(
    write_manifest: WriteManifest, process_state: None
) -> None:
    tasks = _tasks(write_manifest, style=[str(STARRY)], params={"steps": 2})
    inbox: queue.Queue[object] = queue.Queue()
    inbox.put(((7, 3), tasks))
    inbox.put(((5,), tasks[:1]))
    inbox.put(None)
    outbox = Outbox()
    worker_main(_setup("cpu#9"), inbox, outbox)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert torch.get_num_threads() == 1
    steps = [m for m in outbox.sent if isinstance(m, StepMessage)]
    done = [m for m in outbox.sent if isinstance(m, DoneMessage)]
    assert len(steps) + len(done) == len(outbox.sent)
    assert {m.worker for m in outbox.sent} == {"cpu#9"}  # type: ignore[attr-defined]
    # positions in the batch become the run's task indices
    assert sorted((m.index, m.progress.step) for m in steps) == [
        (3, 1),
        (3, 2),
        (5, 1),
        (5, 2),
        (7, 1),
        (7, 2),
    ]
    assert all(isinstance(m.progress, Progress) for m in steps)
    assert [m.indices for m in done] == [(7, 3), (5,)]
    assert [[o.status for o in m.outcomes] for m in done] == [["done", "done"], ["done"]]
    assert [(m.target_computations, m.model_builds) for m in done] == [(1, 1), (1, 1)]
    assert outbox.sent.index(done[0]) < outbox.sent.index(done[1])


def test_worker_main_sends_a_fatal_message_and_stops(
    write_manifest: WriteManifest, tmp_path: Path, process_state: None
) -> None:
    (tmp_path / "vgg.pth").write_bytes(b"not a torch file")
    tasks = _tasks(write_manifest, weights="vgg.pth")
    inbox: queue.Queue[object] = queue.Queue()
    inbox.put(((0, 1, 2, 3), tasks))
    inbox.put(((4,), tasks[:1]))  # never taken: the worker stops at the first
    inbox.put(None)
    outbox = Outbox()
    worker_main(_setup("cpu#1"), inbox, outbox)
    (message,) = outbox.sent
    assert isinstance(message, FatalMessage)
    assert (message.worker, message.indices) == ("cpu#1", (0, 1, 2, 3))
    assert message.message.startswith("weights file ")
    assert inbox.qsize() == 2
