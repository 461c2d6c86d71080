"""Runs tasks on one device: the VGG19 stack built once, style targets cached per style.

A `Worker` is used in-process for a single device and inside each spawned process
when several devices are busy at once (see runner.py). It never raises for a task:
every outcome, good or bad, comes back as a `TaskOutcome`.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch

from nst_batch import images
from nst_batch.plan import KEY_METADATA, Task, curve_path
from nst_batch.stylize import (
    Job,
    Progress,
    Result,
    StyleTargets,
    StylizeError,
    style_targets,
    stylize_batch,
)
from nst_batch.vgg import VGG19Features, build_vgg19
from nst_batch.weights import WeightsError

TARGET_CACHE_SIZE = 16  # style target sets kept per worker (a few MB each)


@dataclass(frozen=True)
class TaskOutcome:
    status: Literal["done", "failed"]
    content_loss: float | None = None
    style_loss: float | None = None
    tv_loss: float | None = None
    total_loss: float | None = None
    steps: int | None = None
    seconds: float = 0.0  # the whole task: load, targets, optimization, save
    optimize_seconds: float = 0.0
    error: str = ""
    history: list[float] = field(default_factory=list)
    peak_memory: int | None = None  # bytes, CUDA: the peak of the batch the task ran in
    batch: int = 1  # tasks optimized together with this one, itself included


class FatalWorkerError(Exception):
    """A problem no task can get past (the weights cannot be loaded): stop the run."""


class Worker:
    def __init__(self, device: str, name: str, compile: bool = False) -> None:
        self.device = torch.device(device)
        self.name = name
        self.compile = compile
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # a gallery reuses each shape many times
        self._models: dict[tuple[object, ...], VGG19Features] = {}
        self._targets: OrderedDict[tuple[object, ...], StyleTargets] = OrderedDict()
        self.target_computations = 0
        self.model_builds = 0

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
            if self.compile:  # traced once per shape, then reused by every task of that shape
                model.forward = torch.compile(model.forward, dynamic=False)  # type: ignore[method-assign]
            self._models[key] = model
            self.model_builds += 1
        return self._models[key]

    def targets(self, task: Task, vgg: VGG19Features) -> StyleTargets:
        key = task.target_group
        if key in self._targets:
            self._targets.move_to_end(key)
            return self._targets[key]
        style = images.load_image(task.style.path, task.max_pixels)
        size = images.scaled_style_size(style.size, task.params.size, task.params.style_scale)
        tensor = images.to_tensor(images.resize(style, size)).to(self.device)
        self._targets[key] = style_targets(vgg, tensor, task.params)
        self.target_computations += 1
        while len(self._targets) > TARGET_CACHE_SIZE:
            self._targets.popitem(last=False)
        return self._targets[key]

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

        Tasks whose contents turn out to differ in shape run in separate batches.
        `on_progress` hears (position in `tasks`, progress).
        """
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        by_shape: dict[tuple[int, ...], list[tuple[int, Job, float]]] = {}
        for i, task in enumerate(tasks):
            start = time.perf_counter()
            try:
                job = self._prepare(task, i, on_progress)
            except FatalWorkerError:
                raise
            except Exception as exc:
                outcomes[i] = self._failure(task, exc, time.perf_counter() - start)
                continue
            prepared = time.perf_counter() - start
            by_shape.setdefault(tuple(job.content.shape), []).append((i, job, prepared))
        for group in by_shape.values():
            start = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                results = stylize_batch(
                    self.model(tasks[group[0][0]]), [job for _, job, _ in group], report_every
                )
            except FatalWorkerError:
                raise
            except Exception as exc:
                share = (time.perf_counter() - start) / len(group)
                for i, _, prepared in group:
                    outcomes[i] = self._failure(tasks[i], exc, prepared + share)
                continue
            share = (time.perf_counter() - start) / len(group)
            peak = self._peak_memory()
            for (i, _, prepared), result in zip(group, results, strict=True):
                outcome = self._finish(tasks[i], result, prepared + share)
                outcomes[i] = dataclasses.replace(outcome, peak_memory=peak, batch=len(group))
        assert all(outcome is not None for outcome in outcomes)
        return cast(list[TaskOutcome], outcomes)

    def _peak_memory(self) -> int | None:
        """Bytes of device memory at the peak of the last batch; None on a CPU."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device))

    def _prepare(
        self, task: Task, position: int, on_progress: Callable[[int, Progress], None] | None
    ) -> Job:
        """Load the task's images and targets at the output size."""
        p = task.params
        vgg = self.model(task)
        content_image = images.load_image(task.content.path, task.max_pixels)
        size = images.target_size(*content_image.size, p.size, p.square)
        if min(size) < images.MIN_SIDE:
            raise images.ImageError(
                f"{task.content.path}: at size {p.size} it becomes {size[0]}x{size[1]}, under "
                f"the minimum of {images.MIN_SIDE} pixels on a side; raise size, crop the "
                "image, or set square: true"
            )
        content = images.to_tensor(images.resize(content_image, size)).to(self.device)
        targets = self.targets(task, vgg)
        init = None
        if p.init in ("style", "image"):
            source = task.style.path if p.init == "style" else p.init_image
            assert source is not None
            init_image = images.resize(images.load_image(source, task.max_pixels), size)
            init = images.to_tensor(init_image).to(self.device)
        callback = None
        if on_progress is not None:

            def callback(progress: Progress) -> None:
                on_progress(position, progress)

        return Job(content, targets, p, init, callback)

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

    def _finish(self, task: Task, result: Result | StylizeError, spent: float) -> TaskOutcome:
        """Save a finished task's image and loss curve: its outcome. `spent`: the task's
        own preparation plus its share of the batch's time."""
        if isinstance(result, StylizeError):
            return self._failure(task, result, spent)
        start = time.perf_counter()
        try:
            metadata = {
                KEY_METADATA: task.key,
                "nst-batch:params": json.dumps(task.params.model_dump(mode="json"), sort_keys=True),
                "nst-batch:source": json.dumps(
                    {"content": task.content.path.name, "style": task.style.path.name}
                ),
            }
            images.save_image(images.to_image(result.image), task.output, metadata)
            images.save_text(_curve_json(task, result.history), curve_path(task.output))
        except Exception as exc:
            return self._failure(task, exc, spent + time.perf_counter() - start)
        losses = result.losses
        return TaskOutcome(
            "done",
            content_loss=losses.content,
            style_loss=losses.style,
            tv_loss=losses.tv,
            total_loss=losses.total,
            steps=result.steps,
            seconds=spent + time.perf_counter() - start,
            optimize_seconds=result.seconds,
            history=result.history,
        )


def _curve_json(task: Task, history: list[float]) -> str:
    """The loss curve of a finished task: total loss per step, 5 significant digits."""
    curve = {"key": task.key, "total_loss": [float(f"{v:.5g}") for v in history]}
    return json.dumps(curve, separators=(",", ":"))


def worker_main(
    device: str,
    name: str,
    threads: int,
    inbox: Any,
    outbox: Any,
    report_every: int,
    compile: bool = False,
) -> None:
    """A spawned worker process: run batches of tasks from `inbox` until None, report to
    `outbox`.

    Messages out: ("step", name, index, Progress), ("done", name, indices, [TaskOutcome],
    target_computations, model_builds), ("fatal", name, indices, message).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C
    torch.set_num_threads(threads)
    worker = Worker(device, name, compile)
    while (item := inbox.get()) is not None:
        indices, tasks = item

        def report(position: int, progress: Progress, indices: tuple[int, ...] = indices) -> None:
            outbox.put(("step", name, indices[position], progress))

        try:
            outcomes = worker.run_batch(tasks, report, report_every)
        except FatalWorkerError as exc:
            outbox.put(("fatal", name, indices, str(exc)))
            return
        outbox.put(
            ("done", name, indices, outcomes, worker.target_computations, worker.model_builds)
        )
