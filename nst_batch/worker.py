"""Runs tasks on one device: the VGG19 stack built once, style targets cached per style.

A `Worker` is used in-process for a single device and inside each spawned process
when several devices are busy at once (see runner.py). It never raises for a task:
every outcome, good or bad, comes back as a `TaskOutcome`.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nst_batch import images
from nst_batch.params import LAYER_NAMES
from nst_batch.plan import KEY_METADATA, Task, curve_path
from nst_batch.stylize import Progress, StyleTargets, StylizeError, style_targets, stylize
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


class FatalWorkerError(Exception):
    """A problem no task can get past (the weights cannot be loaded): stop the run."""


class Worker:
    def __init__(self, device: str, name: str) -> None:
        self.device = torch.device(device)
        self.name = name
        self._models: dict[tuple[object, ...], VGG19Features] = {}
        self._targets: OrderedDict[tuple[object, ...], StyleTargets] = OrderedDict()
        self.target_computations = 0
        self.model_builds = 0

    def model(self, task: Task) -> VGG19Features:
        p = task.params
        layers = tuple(sorted({*p.content_layers, *p.style_layers}, key=LAYER_NAMES.index))
        key = (task.weights, p.pooling, layers)
        if key not in self._models:
            try:
                self._models[key] = build_vgg19(task.weights, layers, p.pooling, self.device)
            except WeightsError as exc:
                raise FatalWorkerError(str(exc)) from None
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
        start = time.perf_counter()
        try:
            return self._run(task, start, on_progress, report_every)
        except FatalWorkerError:
            raise
        except (images.ImageError, StylizeError) as exc:
            return TaskOutcome("failed", seconds=time.perf_counter() - start, error=str(exc))
        except torch.cuda.OutOfMemoryError:
            self._targets.clear()
            torch.cuda.empty_cache()
            size = task.params.size
            return TaskOutcome(
                "failed",
                seconds=time.perf_counter() - start,
                error=f"out of memory on {self.device} at size {size}; try size {size * 3 // 4} "
                "or fewer workers_per_device",
            )
        except Exception as exc:
            detail = traceback.format_exception_only(exc)[-1].strip()
            return TaskOutcome(
                "failed", seconds=time.perf_counter() - start, error=f"internal error: {detail}"
            )

    def _run(
        self,
        task: Task,
        start: float,
        on_progress: Callable[[Progress], None] | None,
        report_every: int,
    ) -> TaskOutcome:
        p = task.params
        vgg = self.model(task)
        content_image = images.load_image(task.content.path, task.max_pixels)
        size = images.target_size(*content_image.size, p.size, p.square)
        content = images.to_tensor(images.resize(content_image, size)).to(self.device)
        targets = self.targets(task, vgg)
        init = None
        if p.init in ("style", "image"):
            source = task.style.path if p.init == "style" else p.init_image
            assert source is not None
            init_image = images.resize(images.load_image(source, task.max_pixels), size)
            init = images.to_tensor(init_image).to(self.device)
        result = stylize(
            vgg,
            content,
            targets,
            p,
            init_image=init,
            callback=on_progress,
            report_every=report_every,
        )
        metadata = {
            KEY_METADATA: task.key,
            "nst-batch:params": json.dumps(p.model_dump(mode="json"), sort_keys=True),
            "nst-batch:source": json.dumps(
                {"content": task.content.path.name, "style": task.style.path.name}
            ),
        }
        images.save_image(images.to_image(result.image), task.output, metadata)
        losses = result.losses
        images.save_text(_curve_json(task, result.history), curve_path(task.output))
        return TaskOutcome(
            "done",
            content_loss=losses.content,
            style_loss=losses.style,
            tv_loss=losses.tv,
            total_loss=losses.total,
            steps=result.steps,
            seconds=time.perf_counter() - start,
            optimize_seconds=result.seconds,
            history=result.history,
        )


def _curve_json(task: Task, history: list[float]) -> str:
    """The loss curve of a finished task: total loss per step, 5 significant digits."""
    curve = {"key": task.key, "total_loss": [float(f"{v:.5g}") for v in history]}
    return json.dumps(curve, separators=(",", ":"))


def worker_main(
    device: str, name: str, threads: int, inbox: Any, outbox: Any, report_every: int
) -> None:
    """A spawned worker process: run tasks from `inbox` until None, report to `outbox`.

    Messages out: ("step", name, index, Progress), ("done", name, index, TaskOutcome,
    target_computations, model_builds), ("fatal", name, index, message).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C
    torch.set_num_threads(threads)
    worker = Worker(device, name)
    while (item := inbox.get()) is not None:
        index, task = item

        def report(progress: Progress, index: int = index) -> None:
            outbox.put(("step", name, index, progress))

        try:
            outcome = worker.run(task, report, report_every)
        except FatalWorkerError as exc:
            outbox.put(("fatal", name, index, str(exc)))
            return
        outbox.put(("done", name, index, outcome, worker.target_computations, worker.model_builds))
