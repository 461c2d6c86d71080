"""Runs tasks on one device: the VGG19 stack built once, style targets cached per style.

A `Worker` is used in-process for a single device and inside each spawned process
when several devices are busy at once (see runner.py). It never raises for a task:
every outcome, good or bad, comes back as a `TaskOutcome`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import connection as mp_connection
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from nst_batch import __version__, checkpoint, flow, images, layout
from nst_batch.layout import curve_path
from nst_batch.manifest import DEFAULT_CHECKPOINT_EVERY
from nst_batch.memory import DeviceMemory, Footprint, balanced_chunks
from nst_batch.metadata import OutputRecord, output_metadata, snapshot_metadata
from nst_batch.plan import Task
from nst_batch.pyramid import Pyramid, output_size, style_grams
from nst_batch.stylize import (
    GRAPH_WARMUP,
    BatchView,
    Job,
    Losses,
    Progress,
    Result,
    StyleTargets,
    StylizeError,
    stylize_batch,
)
from nst_batch.vgg import VGG19Features, build_vgg19
from nst_batch.weights import WeightsError, file_sha256

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

TARGET_CACHE_SIZE = 16  # style target sets kept per worker (a few MB each)


def warn(message: str) -> None:
    """A warning on stderr, from the parent or a worker process alike."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Start:
    """Where a task's optimization starts: its `init`, or `content` for init: previous
    without a usable previous output; `key` is the previous output's key."""

    init: str
    key: str | None = None


def _previous(task: Task) -> tuple[Image.Image | None, Start]:
    """The task's existing output, to start from (resized later to the new size), with
    its key; none (start from the content) when it is missing or unreadable."""
    if not task.output.is_file():
        return None, Start("content")
    try:
        image = images.load_image(task.output, task.max_pixels)
    except images.ImageError:
        return None, Start("content")
    return image, Start("previous", _recorded_key(task.output))


def _recorded_key(output: Path) -> str | None:
    """The task key `output` records; None when it records none (or is not readable)."""
    return OutputRecord.from_metadata(images.read_metadata(output)).key


def _follow(task: Task, content: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequence frame's hold on the frame before: that frame's output warped onto this
    one along the flow between their content frames, and the pixels the flow can be
    trusted for, at this frame's output size. ImageError, naming the frame before, when
    its output is missing or was made with other settings (it failed, or did not run)."""
    assert task.after is not None and task.after_content is not None
    before = layout.display(task.after.relative_to(task.folder))
    if _recorded_key(task.after) != task.after_key:
        raise images.ImageError(
            f"{task.content.name}: the frame before, {before}, has no output made with the "
            "current settings (it failed or was interrupted), and this frame starts from it; "
            "rerun to make both"
        )
    size = output_size(content, task.params, str(task.content.path))
    motion = _motion(task, images.resize(content, size))
    stylized = images.resize(images.load_image(task.after, task.max_pixels), size)
    warped = flow.warp(images.to_tensor(stylized), motion.flow).clamp(0, 1)
    trusted = torch.from_numpy(motion.valid).to(torch.float32)[None, None]
    return warped, trusted


def _motion(task: Task, content: Image.Image) -> flow.Motion:
    """The motion from the frame before to this one, `content` at its output size, from the
    flow cache under the output folder when there (a torn or foreign file is computed anew).
    Frames are named by their hashes, each file read once per worker (file_sha256)."""
    assert task.after_content is not None
    size = content.size
    name = flow.cache_name(file_sha256(task.after_content), file_sha256(task.content.path), size)
    path = layout.flow_path(task.folder, name)
    cached = flow.from_file(path)
    if cached is not None and cached.flow.shape[:2] == (size[1], size[0]):
        return cached
    before = images.resize(images.load_image(task.after_content, task.max_pixels), size)
    motion = flow.motion(before, content)
    try:
        layout.write_atomically(path, flow.to_bytes(motion), task.folder)
    except (OSError, layout.UnsafeWrite) as exc:  # the cache only saves time
        warn(f"{task.label}: cannot cache its optical flow in {layout.display(path)}: {exc}")
    return motion


@dataclass(frozen=True)
class TaskOutcome:
    status: Literal["done", "failed"]
    losses: Losses | None = None  # final, weighted; None for a failed task
    start: str = ""  # content, noise, style, image or previous (done tasks)
    steps: int | None = None
    stopped: str = ""  # why it stopped (done tasks): see nst_batch/stopping.py
    seconds: float = 0.0  # the whole task: load, targets, optimization, save
    optimize_seconds: float = 0.0
    error: str = ""
    history: list[float] = field(default_factory=list)
    peak_memory: int | None = None  # bytes, CUDA: the peak of the batch the task ran in
    batch: int = 1  # tasks optimized together with this one, itself included
    resumed_from: int | None = None  # the step it went on from, resumed from a checkpoint


BatchKind = tuple[object, ...]  # batches that need the same memory per task: _batch_kind


def _batch_kind(task: Task, jobs: Sequence[Job], graphs: bool) -> BatchKind:
    """What a batch's memory depends on besides its size and image shape: the model, the
    precision, CUDA graphs (their private pool) and the optimizers (L-BFGS's history)."""
    optimizers = tuple(sorted({job.params.optimizer for job in jobs}))
    return (task.model_key, jobs[0].params.precision, graphs, optimizers)


@dataclass(frozen=True)
class WorkerOptions:
    """How every worker of a run runs its tasks (set once, from the manifest and the CLI)."""

    compile: bool = False  # torch.compile the VGG19 stack, once per worker and shape
    cuda_graphs: bool = True  # replay CUDA evaluations as graphs (not with compile or fp16)
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY  # seconds; 0: only when stopped
    resume: bool = True  # go on from a task's checkpoint (False: --force)


@dataclass
class _Flight:
    """A task of a batch in flight: its scales, where it started, the scale it is at (0 the
    coarsest), the seconds spent on it (its own loading plus shares of batch time), and
    its outcome once it has one."""

    position: int  # in the batch
    task: Task
    pyramid: Pyramid
    begun: Start
    spent: float
    stage: int = 0
    outcome: TaskOutcome | None = None

    @property
    def last(self) -> bool:
        """Whether its current scale is the output size."""
        return self.stage == len(self.pyramid.stages) - 1


class FatalWorkerError(Exception):
    """A problem no task can get past (the weights cannot be loaded): stop the run."""


class Stopped(BaseException):  # like KeyboardInterrupt: not an error
    """A spawned worker was asked to stop (SIGTERM): its batch saved its checkpoints."""


def _compiled_for_gradients(forward: Callable[..., Any]) -> Callable[..., Any]:
    """`forward` compiled for the optimization's passes, traced once per image shape and
    reused by every task of that shape; the no-grad passes (targets, once per style and
    size) stay eager rather than costing a trace each."""
    compiled = torch.compile(forward, dynamic=False)

    def run(image: torch.Tensor, layers: Collection[str]) -> Any:
        return compiled(image, layers) if torch.is_grad_enabled() else forward(image, layers)

    run.compiled = compiled  # type: ignore[attr-defined]
    return run


class Worker:
    def __init__(
        self,
        device: str,
        name: str,
        options: WorkerOptions = WorkerOptions(),
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """`stop`: polled between evaluations, True stops the batch (Stopped) after saving."""
        self.device = torch.device(device)
        self.name = name
        # torch.compile's own graphs and ours do not mix: compile takes precedence.
        graphs = options.cuda_graphs and not options.compile
        self.options = dataclasses.replace(options, cuda_graphs=graphs)
        self.stop = stop
        if self.device.type == "cuda":
            if self.device.index is None:  # "cuda": the current device, by its number
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # a gallery reuses each shape many times
        self._models: dict[tuple[object, ...], VGG19Features] = {}
        self._targets: OrderedDict[tuple[object, ...], StyleTargets] = OrderedDict()
        self.target_computations = 0
        self.model_builds = 0
        # Batch sizes by memory, per kind of batch (see _chunk_size); measured on CUDA only.
        self.memory = DeviceMemory(self.device) if self.device.type == "cuda" else None
        # by kind without the shape: (footprint, the pixels of the image it was measured at)
        self.footprints: dict[BatchKind, tuple[Footprint, int]] = {}
        self.caps: dict[BatchKind, int] = {}  # by kind and shape: lowered by running out

    def model(self, task: Task) -> VGG19Features:
        key = task.model_key
        if key not in self._models:
            weights, pooling, layers = key
            try:
                model = build_vgg19(weights, layers, pooling, self.device)
            except WeightsError as exc:
                raise FatalWorkerError(str(exc)) from None
            if self.device.type == "cuda":
                model.to_channels_last()
            if self.options.compile:
                model.forward = _compiled_for_gradients(model.forward)  # type: ignore[method-assign]
            self._models[key] = model
            self.model_builds += 1
        return self._models[key]

    def targets(
        self, task: Task, vgg: VGG19Features, size: int, content: torch.Tensor
    ) -> StyleTargets:
        """The style Gram matrices of `task` at output size `size` (see pyramid.style_grams),
        computed once per target group and size; the style images are read only then."""
        key = (*task.target_group, size)
        if key in self._targets:
            self._targets.move_to_end(key)
            return self._targets[key]
        styles = [(images.load_image(path, task.max_pixels), w) for path, w in task.style.images]
        grams = style_grams(vgg, styles, task.params, size, content)
        self._targets[key] = grams
        self.target_computations += 1
        while len(self._targets) > TARGET_CACHE_SIZE:
            self._targets.popitem(last=False)
        return grams

    def run(
        self,
        task: Task,
        on_progress: Callable[[Progress], None] | None = None,
        report_every: int = 10,
    ) -> TaskOutcome:
        """Stylize one task and write its output atomically. Raises only FatalWorkerError."""
        report = None if on_progress is None else lambda _, progress: on_progress(progress)
        return self.run_batch([task], report, report_every)[0]

    def run_batch(
        self,
        tasks: Sequence[Task],
        on_progress: Callable[[int, Progress], None] | None = None,
        report_every: int = 10,
    ) -> list[TaskOutcome]:
        """Stylize tasks of one model together, one stacked VGG19 pass per step, and write
        their outputs; an outcome per task, in order. Raises only FatalWorkerError.

        Coarse-to-fine tasks run their scales in step, aligned at the output size: every
        task's coarsest scale first, each scale's result the next one's start. Tasks whose
        images turn out to differ in shape at a scale run there in separate batches.
        `on_progress` hears (position in `tasks`, progress over all scales).
        """
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        flights: list[_Flight] = []
        for position, task in enumerate(tasks):
            start = time.perf_counter()
            try:
                pyramid, begun = self._load(task)
            except FatalWorkerError:
                raise
            except Exception as exc:
                outcomes[position] = self._failure(task, exc, time.perf_counter() - start)
                continue
            flights.append(_Flight(position, task, pyramid, begun, time.perf_counter() - start))
        rounds = max((len(flight.pyramid.stages) for flight in flights), default=0)
        for round_ in range(rounds):
            groups: dict[tuple[int, ...], list[tuple[_Flight, Job]]] = {}
            for flight in flights:
                flight.stage = round_ - (rounds - len(flight.pyramid.stages))
                if flight.outcome is not None or flight.stage < 0:
                    continue
                start = time.perf_counter()
                try:
                    job = self._job(flight, on_progress)
                except FatalWorkerError:
                    raise
                except Exception as exc:
                    flight.outcome = self._failure(flight.task, exc, flight.spent)
                    continue
                flight.spent += time.perf_counter() - start
                groups.setdefault(tuple(job.content.shape), []).append((flight, job))
            for group in groups.values():
                self._optimize(group, report_every)
        for flight in flights:
            outcomes[flight.position] = flight.outcome
        assert all(outcome is not None for outcome in outcomes)
        return cast(list[TaskOutcome], outcomes)

    def _optimize(self, group: list[tuple[_Flight, Job]], report_every: int) -> None:
        """One scale of a batch, in chunks that fit the device's memory (see _chunk_size),
        each optimized, then saved (last scale) or carried to the next scale.

        A chunk of several that runs out of memory lowers the cap of its kind to half of
        it and its jobs run again, fewer at a time; a task alone fails with the reason."""
        first, job = group[0]
        vgg = self.model(first.task)  # built already, by _load
        kind = _batch_kind(first.task, [job for _, job in group], self.options.cuda_graphs)
        kind = (*kind, tuple(job.content.shape))
        pending = group
        while pending:
            chunk = pending[: self._chunk_size(kind, vgg, [job for _, job in pending])]
            start = time.perf_counter()
            results: Sequence[Result | Exception] | None
            try:
                results = self._stylize(vgg, chunk, report_every)
            except torch.cuda.OutOfMemoryError as exc:
                results = None if len(chunk) > 1 else [exc.with_traceback(None)]
            except Exception as exc:  # kept without its frames, which hold the chunk's tensors
                results = [exc.with_traceback(None)] * len(chunk)
            share = (time.perf_counter() - start) / len(chunk)
            for flight, _ in chunk:
                flight.spent += share
            if results is None:  # out of the handler: the error's frames are gone
                self._lower_cap(kind, len(chunk))
                continue
            pending = pending[len(chunk) :]
            peak = self._peak_memory()
            for (flight, _), result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):  # StylizeError, or the chunk's error
                    flight.outcome = self._failure(flight.task, result, flight.spent)
                    continue
                flight.pyramid.carry(result)
                if flight.last:
                    outcome = self._finish(flight, result)
                    flight.outcome = dataclasses.replace(
                        outcome, peak_memory=peak, batch=len(chunk)
                    )

    def _stylize(
        self, vgg: VGG19Features, chunk: list[tuple[_Flight, Job]], report_every: int
    ) -> list[Result | StylizeError]:
        """Optimize a chunk's jobs together, watched for snapshots, checkpoints and stops."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        jobs = [job for _, job in chunk]
        watch = _Saver(self, [flight for flight, _ in chunk])
        return stylize_batch(vgg, jobs, report_every, graphs=self.options.cuda_graphs, watch=watch)

    def _chunk_size(self, kind: BatchKind, vgg: VGG19Features, jobs: Sequence[Job]) -> int:
        """How many of `jobs` (one shape, in order) to optimize together now: a balanced
        share of them, within the cap of their kind and shape and, where memory is
        measured, within the budget by the kind's footprint.

        A kind is calibrated at its first group of several and scaled to other shapes by
        their pixels (activations and the L-BFGS history grow with them): a gallery of
        many image shapes pays one calibration per precision, not one per shape. A
        calibration that fails leaves that shape one task at a time."""
        most = min(len(jobs), self.caps.get(kind, len(jobs)))
        if self.memory is None or most <= 1:
            return balanced_chunks(len(jobs), most)[0]
        memory_kind, pixels = kind[:-1], jobs[0].content[0, 0].numel()
        if memory_kind not in self.footprints:
            footprint = self._calibrate(vgg, jobs)
            if footprint is None:
                self.caps[kind] = 1
                return 1
            self.footprints[memory_kind] = footprint, pixels
        footprint, measured_at = self.footprints[memory_kind]
        fits = footprint.scaled(pixels / measured_at).tasks_within(self.memory.budget())
        return balanced_chunks(len(jobs), min(most, fits))[0]

    def _calibrate(self, vgg: VGG19Features, jobs: Sequence[Job]) -> Footprint | None:
        """The footprint of batches like `jobs`, from a few evaluations of one of them alone
        and of two together, their results thrown away. Two that run out of memory leave the
        peak of one; None when one did, or when the run failed otherwise: the real run will
        meet that error too, and one task at a time it fails only its own task."""
        assert self.memory is not None
        # Past a CUDA graph's capture, so that its private pool counts; L-BFGS first, as
        # its history costs a task far more than Adam's state does.
        steps = GRAPH_WARMUP + 2
        sample = sorted(jobs, key=lambda job: job.params.optimizer != "lbfgs")[:2]
        trial = [
            dataclasses.replace(  # the cold rule of its shortened budget
                job, params=job.params.model_copy(update={"steps": steps}), callback=None, stop=None
            )
            for job in sample
        ]
        peaks: list[int] = []
        for count in (1, 2):
            try:
                graphs = self.options.cuda_graphs
                run = functools.partial(stylize_batch, vgg, trial[:count], graphs=graphs)
                peaks.append(self.memory.peak(run))
            except torch.cuda.OutOfMemoryError:
                break
            except Exception:
                return None
        return Footprint.measured(*peaks) if peaks else None

    def _lower_cap(self, kind: BatchKind, ran: int) -> None:
        """A chunk of `ran` tasks of this kind ran out of memory: from now on at most half."""
        torch.cuda.empty_cache()
        cap = ran // 2
        self.caps[kind] = min(cap, self.caps.get(kind, cap))
        warn(
            f"a batch of {ran} tasks ran out of memory on {self.device}; "
            f"running at most {cap} together from now on"
        )

    def _peak_memory(self) -> int | None:
        """Bytes of device memory at the peak of the last batch; None on a CPU."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device))

    def _load(self, task: Task) -> tuple[Pyramid, Start]:
        """Read a task's images once, for all its scales, and check its sizes; and where
        it starts from."""
        p = task.params
        self.model(task)  # a weights problem stops the run before any image is read
        content = images.load_image(task.content.path, task.max_pixels)
        init, start = None, Start(p.init)
        if p.init in ("style", "image"):
            source = task.style.path if p.init == "style" else p.init_image
            assert source is not None
            init = images.load_image(source, task.max_pixels)
        elif p.init == "previous":
            init, start = _previous(task)
        pyramid = Pyramid.start(content, p, init, str(task.content.path))
        if task.after is not None:
            pyramid.follow(*_follow(task, content))
            if init is None:
                start = Start("frame", task.after_key)
        if self.options.resume:
            self._resume(task, pyramid)
        # A rerun's snapshots start anew: those past where it goes on from are stale.
        for step, path in layout.snapshots(task.output):
            if step > (pyramid.resumed_from or 0):
                layout.remove_file(path, task.folder)
        return pyramid, start

    def _resume(self, task: Task, pyramid: Pyramid) -> None:
        """Go on from the task's checkpoint, if it has a usable one (else a warning)."""
        path = layout.checkpoint_path(task.folder, task.relative_output, task.key)
        try:
            saved = checkpoint.load(path, task.key)
            pyramid.resume(
                saved.stage,
                saved.stage_steps,
                saved.image,
                saved.done,
                saved.history,
                saved.seconds,
                saved.initial,
            )
        except FileNotFoundError:
            return
        except checkpoint.CheckpointError as exc:
            warn(f"{task.label}: ignoring its checkpoint: {exc}; starting from the beginning")
        except ValueError as exc:
            where = layout.display(path)
            warn(f"{task.label}: ignoring its checkpoint {where}: {exc}; starting anew")

    def _job(self, flight: _Flight, on_progress: Callable[[int, Progress], None] | None) -> Job:
        """The optimization of a task's current scale, with this worker's cached targets."""
        task, position = flight.task, flight.position
        vgg = self.model(task)
        report = None if on_progress is None else lambda p: on_progress(position, p)
        return flight.pyramid.job(
            flight.stage, self.device, lambda size, c: self.targets(task, vgg, size, c), report
        )

    def _failure(self, task: Task, exc: Exception, seconds: float) -> TaskOutcome:
        """The failed outcome of `exc` after `seconds`, with a reason a user can act on."""
        if isinstance(exc, images.ImageError | StylizeError):
            return TaskOutcome("failed", seconds=seconds, error=str(exc))
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            self._targets.clear()
            torch.cuda.empty_cache()
            size = task.params.size
            return TaskOutcome(
                "failed",
                seconds=seconds,
                error=f"out of memory on {self.device} at size {size}; try size {size * 3 // 4}, "
                "a smaller batch_size or fewer workers_per_device",
            )
        detail = traceback.format_exception_only(exc)[-1].strip()
        return TaskOutcome("failed", seconds=seconds, error=f"internal error: {detail}")

    def _finish(self, flight: _Flight, last: Result) -> TaskOutcome:
        """Save a finished task's image and loss curve: its outcome."""
        task, pyramid, spent, begun = flight.task, flight.pyramid, flight.spent, flight.begun
        start = time.perf_counter()
        result = pyramid.combined(last)
        image = pyramid.output(last)
        try:
            metadata = output_metadata(
                key=task.key,
                recipe=task.recipe,
                params=task.params.model_dump(mode="json"),
                content=task.content.path.name,
                style=task.style.path.name,
                losses=dataclasses.asdict(result.losses),
                steps=result.steps,
                seconds=spent + time.perf_counter() - start,
                device=str(self.device),
                made_at=datetime.now(UTC),
                version=__version__,
                init=begun.init,
                start_from=begun.key,
            )
            images.save_image(images.to_image(image), task.output, metadata, root=task.folder)
            curve = _curve_json(task, result.history)
            images.save_text(curve, curve_path(task.output), root=task.folder)
        except Exception as exc:
            return self._failure(task, exc, spent + time.perf_counter() - start)
        # Done: its checkpoints, of this key and of older settings, have served.
        for path in layout.output_checkpoints(task.folder, task.relative_output):
            with contextlib.suppress(OSError):
                layout.remove_file(path, task.folder)
        return TaskOutcome(
            "done",
            losses=result.losses,
            start=begun.init,
            steps=result.steps,
            stopped=result.stopped or "",
            seconds=spent + time.perf_counter() - start,
            optimize_seconds=result.seconds,
            history=result.history,
            resumed_from=pyramid.resumed_from,
        )


class _Saver:
    """Watches one scale of a batch: snapshots every `save_every` steps, checkpoints every
    `checkpoint_every` seconds and when the batch is left by a signal or a stop."""

    def __init__(self, worker: Worker, flights: Sequence[_Flight]) -> None:
        self.worker, self.flights = worker, flights
        self.last_save = time.monotonic()
        self.seen = [0] * len(flights)  # steps at the last look, per task

    def evaluated(self, batch: BatchView) -> None:
        for i, flight in enumerate(self.flights):
            steps = batch.steps(i)
            snap = flight.task.params.save_every
            if snap and steps != self.seen[i] and (flight.pyramid.done + steps) % snap == 0:
                self._snapshot(i, batch)
            self.seen[i] = steps
        every = self.worker.options.checkpoint_every
        if every > 0 and time.monotonic() - self.last_save >= every:
            self._save_all(batch)
            self.last_save = time.monotonic()
        if self.worker.stop is not None and self.worker.stop():
            raise Stopped

    def stopped(self, batch: BatchView) -> None:
        self._save_all(batch)

    def _save_all(self, batch: BatchView) -> None:
        for i in range(len(batch)):
            self._save(i, batch)

    def _save(self, i: int, batch: BatchView) -> None:
        """Write job `i`'s checkpoint; a failure costs a warning, never the task."""
        flight = self.flights[i]
        task, pyramid = flight.task, flight.pyramid
        state = batch.state(i)
        if state is None:
            return
        try:
            saved = checkpoint.Checkpoint(
                key=task.key,
                image=state.image.detach().cpu(),
                stage=flight.stage,
                stage_steps=pyramid.stage_done + state.steps,
                done=pyramid.done + state.steps,
                history=[*pyramid.history, *state.history],
                initial=pyramid.initial or state.initial,
                losses=state.losses,
                seconds=pyramid.seconds + state.seconds,
            )
            path = layout.checkpoint_path(task.folder, task.relative_output, task.key)
            checkpoint.save(saved, path, task.folder)
        except Exception as exc:
            warn(f"{task.label}: cannot write its checkpoint: {exc}")

    def _snapshot(self, i: int, batch: BatchView) -> None:
        task, pyramid = self.flights[i].task, self.flights[i].pyramid
        state = batch.state(i)
        if state is None:
            return
        step = pyramid.done + state.steps
        metadata = snapshot_metadata(task.key, step, task.params.total_steps, state.losses.total)
        picture = images.to_image(pyramid.picture(state.image))
        try:
            path = layout.snapshot_path(task.output, step)
            images.save_image(picture, path, metadata, root=task.folder)
        except Exception as exc:
            warn(f"{task.label}: cannot write its snapshot at step {step}: {exc}")


def _curve_json(task: Task, history: list[float]) -> str:
    """The loss curve of a finished task: total loss per step, 5 significant digits."""
    curve = {"key": task.key, "total_loss": [float(f"{v:.5g}") for v in history]}
    return json.dumps(curve, separators=(",", ":"))


@dataclass(frozen=True)
class StepMessage:
    """A task's progress, every `report_every` steps."""

    worker: str
    index: int  # the task's index in the run's task list
    progress: Progress


@dataclass(frozen=True)
class DoneMessage:
    """A batch finished: an outcome per task, and the worker's counters so far."""

    worker: str
    indices: tuple[int, ...]
    outcomes: list[TaskOutcome]
    target_computations: int
    model_builds: int


@dataclass(frozen=True)
class FatalMessage:
    """A problem no task can get past: the run stops."""

    worker: str
    indices: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class StoppedMessage:
    """The worker alone was sent SIGTERM (the parent goes on): its batch saved its
    checkpoints, and it exits."""

    worker: str
    indices: tuple[int, ...]
    signum: int


Message = StepMessage | DoneMessage | FatalMessage | StoppedMessage


@dataclass(frozen=True)
class WorkerSetup:
    """What a spawned worker process needs to start."""

    device: str
    name: str
    threads: int  # torch threads (CPU workers share the cores)
    report_every: int
    options: WorkerOptions = field(default_factory=WorkerOptions)


IDLE_POLL = 1.0  # seconds between an idle worker's looks at its stop flag
# How long a worker whose parent is gone has to save its batch (one evaluation and a save)
# before it ends itself: as long as a stopping parent waits (runner._Pool.STOP_SECONDS).
ORPHAN_GRACE = 20.0
EXIT_ORPHANED = 3  # the exit code of a worker that outlived its parent by ORPHAN_GRACE


class _StopFlag:
    """Why a spawned worker must stop, if it must: SIGTERM (`signum`), or its parent gone
    (`orphaned`: killed by SIGKILL, the OOM killer or a timeout wrapper), after which no one
    reads its messages or hands it work. Polled between evaluations and while idle."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.orphaned = False

    def __call__(self) -> bool:
        return self.signum is not None or self.orphaned

    def signalled(self, signum: int, frame: object) -> None:
        self.signum = signum

    def send(self, outbox: Any, message: Message) -> None:
        """Send to the parent; a pipe that no longer takes it means the parent is gone."""
        if self.orphaned:
            return
        try:
            outbox.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError
            self.orphaned = True

    def watch_parent(self) -> None:
        """In a spawned process: a daemon thread waits on the parent's sentinel, a pipe the
        kernel closes when the parent dies, whatever killed it; it sets `orphaned`, and ends
        the process after ORPHAN_GRACE if it is still there (stuck in one long call)."""
        parent = multiprocessing.parent_process()
        if parent is None:  # run in-process (tests): the caller is the parent
            return
        sentinel = parent.sentinel

        def watch() -> None:
            mp_connection.wait([sentinel])
            self.orphaned = True
            time.sleep(ORPHAN_GRACE)
            os._exit(EXIT_ORPHANED)

        threading.Thread(target=watch, name="nst-batch parent watch", daemon=True).start()


def _next(inbox: Any, stop: _StopFlag) -> Any:
    """The inbox's next item, or None once the worker must stop. The wait wakes every
    IDLE_POLL seconds to look: a signal does not cut a blocking get short (PEP 475)."""
    while not stop():
        with contextlib.suppress(queue.Empty):
            return inbox.get(timeout=IDLE_POLL)
    return None


def worker_main(setup: WorkerSetup, inbox: Any, outbox: Any) -> None:
    """A spawned worker process: run batches of tasks from `inbox` until None, send a
    Message per event to `outbox` (its own pipe to the parent).

    SIGTERM (the parent stopping, or Slurm signalling every process of the job) sets a
    flag that the optimization checks between evaluations: the batch in flight saves its
    checkpoints and the worker exits; an idle worker exits too, telling the parent. So
    does a worker whose parent is gone, telling no one. SIGINT is ignored: the parent
    decides on Ctrl-C."""
    stop = _StopFlag()
    stop.watch_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop.signalled)
    torch.set_num_threads(setup.threads)
    worker = Worker(setup.device, setup.name, setup.options, stop=stop)
    stopped: tuple[int, ...] = ()  # the batch a stop left, if a stop did
    while (item := _next(inbox, stop)) is not None:
        indices, tasks = item

        def report(position: int, progress: Progress, indices: tuple[int, ...] = indices) -> None:
            stop.send(outbox, StepMessage(setup.name, indices[position], progress))

        try:
            outcomes = worker.run_batch(tasks, report, setup.report_every)
        except FatalWorkerError as exc:
            stop.send(outbox, FatalMessage(setup.name, indices, str(exc)))
            return
        except Stopped:
            stopped = indices
            break
        stop.send(
            outbox,
            DoneMessage(
                setup.name, indices, outcomes, worker.target_computations, worker.model_builds
            ),
        )
    if stop.orphaned:
        warn(f"{setup.name}: the run's process is gone; this worker stops")
    elif stop.signum is not None:  # busy or idle: the parent records the batch, if any
        stop.send(outbox, StoppedMessage(setup.name, stopped, stop.signum))
