"""Runs planned tasks on the chosen devices and records every attempt.

The parent alone writes the results CSV and reports progress; workers (in-process
for one device, spawned processes for several) stylize and write output images.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.multiprocessing as mp

from nst_batch import images, plan
from nst_batch.layout import Share
from nst_batch.plan import Task
from nst_batch.results import ResultRow, ResultsWriter, task_row
from nst_batch.stylize import Progress
from nst_batch.worker import (
    DoneMessage,
    FatalMessage,
    FatalWorkerError,
    Message,
    StepMessage,
    StoppedMessage,
    TaskOutcome,
    Worker,
    WorkerOptions,
    WorkerSetup,
    worker_main,
)


@dataclass(frozen=True)
class RunConfig:
    """How a run runs, whatever it runs: built once by the CLI and passed down."""

    devices: tuple[str, ...]  # one entry per worker (see resolve_devices)
    batch_size: int | None = None  # most tasks optimized together; None: see batch_limit
    report_every: int = 10  # steps between progress reports
    shard: Share = None  # (K, N) of a Slurm array or --shard, None for the whole plan
    worker: WorkerOptions = field(default_factory=WorkerOptions)  # how each worker runs

    @property
    def shard_label(self) -> str:
        """'K/N' for a shard's rows, '' for a whole run."""
        return f"{self.shard[0]}/{self.shard[1]}" if self.shard else ""


class Events(Protocol):
    """What a front end (the CLI's progress bar) hears of a run."""

    def task_started(self, task: Task, worker: str) -> None: ...
    def step(self, task: Task, progress: Progress) -> None: ...
    def task_finished(self, task: Task, row: ResultRow) -> None: ...


@dataclass
class RunStats:
    done: int = 0
    failed: int = 0
    interrupted: int = 0
    seconds: float = 0.0
    target_computations: int = 0
    model_builds: int = 0
    workers: int = 0  # workers started at first (1: in this process); see worker_devices
    task_seconds: float = 0.0  # summed over tasks: whole task
    optimize_seconds: float = 0.0  # summed over tasks: optimization steps only
    fatal: str = ""  # set when the run stopped on a problem no task can get past
    # CUDA only: the highest peak of device memory per (size, precision, batch), in bytes
    peak_memory: dict[tuple[int, str, int], int] = field(default_factory=dict)


class DeviceError(Exception):
    """A device the manifest or --devices names is not on this machine."""


def resolve_devices(devices: Sequence[str], workers_per_device: int = 1) -> list[str]:
    """'auto' -> every CUDA device, else the CPU; each device repeated per worker.

    DeviceError for a CUDA device this machine does not have, or MPS where it is missing.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if tuple(devices) == ("auto",):
        devices = [f"cuda:{i}" for i in range(count)] or ["cpu"]
    for device in devices:
        number = device.partition(":")[2]
        if device.startswith("cuda") and (count == 0 or int(number or 0) >= count):
            found = f"{count} CUDA device{'s' * (count != 1)}" if count else "no CUDA device"
            raise DeviceError(
                f"device {device!r}: this machine has {found}; use devices: auto or cpu"
            )
        if device == "mps" and not torch.backends.mps.is_available():
            raise DeviceError("device 'mps': Apple's Metal is not available here; use cpu")
    return [d for d in devices for _ in range(workers_per_device)]


class Interrupted(BaseException):
    """A termination signal (SIGTERM: Slurm preemption or time limit) stops the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def make_row(task: Task, outcome: TaskOutcome, device: str, worker: str, shard: str) -> ResultRow:
    losses = outcome.losses
    return task_row(
        task,
        outcome.status,
        shard,
        content_loss=None if losses is None else losses.content,
        style_loss=None if losses is None else losses.style,
        tv_loss=None if losses is None else losses.tv,
        temporal_loss=None if losses is None or not task.after else losses.temporal,
        total_loss=None if losses is None else losses.total,
        steps=outcome.steps,
        stopped=outcome.stopped,
        start=outcome.start,
        resumed_from=outcome.resumed_from,
        seconds=round(outcome.seconds, 3),
        device=device,
        worker=worker,
        error=outcome.error,
    )


def interrupted_row(
    task: Task, device: str, worker: str, shard: str, reason: BaseException
) -> ResultRow:
    why = "interrupted"
    if isinstance(reason, KeyboardInterrupt):
        why = "interrupted (SIGINT)"
    elif isinstance(reason, Interrupted):
        why = f"interrupted ({signal.Signals(reason.signum).name})"
    return task_row(task, "interrupted", shard, device=device, worker=worker, error=why)


def run_tasks(
    tasks: Sequence[Task], config: RunConfig, writer: ResultsWriter, events: Events
) -> RunStats:
    """Run every task, one row per attempt in `writer`; a failing task never stops the rest.

    A worker per entry of `config.devices`, but never more than batches can run at once
    (see worker_devices): one worker runs in this process, several in spawned processes.
    Tasks of one model and image shape are optimized together in batches of up to
    `config.batch_size` (None: see batch_limit).
    """
    start = time.perf_counter()
    limit = batch_limit(config.batch_size, config.devices, len(tasks))
    batches = plan.batches(tasks, limit, _shape_reader())
    devices = worker_devices(config.devices, len(batches) - len(_frames_before(tasks, batches)))
    recorder = _Recorder(tasks, writer, events, config.shard_label)
    recorder.stats.workers = len(devices)
    if len(devices) == 1:
        device = devices[0]
        if device == "cpu":  # torch's own count is the machine's cores: keep to the allocation
            torch.set_num_threads(min(torch.get_num_threads(), cpu_cores()))
        worker = Worker(device, f"{device}#0", config.worker)
        _run_here(tasks, batches, worker, recorder, config.report_every)
    else:
        _Pool(tasks, batches, devices, config, recorder).run()
    recorder.stats.seconds = time.perf_counter() - start
    return recorder.stats


class _Recorder:
    """Where every attempt ends: its row written, counted, and told to the front end."""

    def __init__(
        self, tasks: Sequence[Task], writer: ResultsWriter, events: Events, shard: str
    ) -> None:
        self.tasks, self.writer, self.events, self.shard = tasks, writer, events, shard
        self.stats = RunStats()

    def finished(self, index: int, outcome: TaskOutcome, device: str, worker: str) -> None:
        task = self.tasks[index]
        row = make_row(task, outcome, device, worker, self.shard)
        self.writer.write(row)
        _count(self.stats, outcome, task)
        self.events.task_finished(task, row)

    def interrupted(self, index: int, device: str, worker: str, reason: BaseException) -> None:
        self.stats.interrupted += 1
        self.writer.write(interrupted_row(self.tasks[index], device, worker, self.shard, reason))


CPU_BATCH_PIXELS = 4 * 64 * 64  # measured: batches pay on 2 CPU cores only below ~80 px
# Not measured: Metal shares the Mac's memory, and nothing here reads how much is free.
MPS_BATCH_PIXELS = 512 * 512
MAX_AUTO_BATCH = 16


def batch_limit(
    batch_size: int | None, devices: Sequence[str], task_count: int
) -> Callable[[Task], int]:
    """The most tasks of one batch: `batch_size` if given, else up to MAX_AUTO_BATCH, and
    never so many that a worker would sit idle for want of a batch. A CPU or MPS also caps
    the pixels of a batch; a CUDA worker splits each batch to fit the memory it measures
    (see Worker._chunk_size), an explicit `batch_size` too."""
    if batch_size is not None:
        return lambda task: batch_size
    spread = max(1, -(-task_count // len(devices)))
    most = min(MAX_AUTO_BATCH, spread)
    if any(d == "cpu" for d in devices):
        pixels = CPU_BATCH_PIXELS
    elif any(d == "mps" for d in devices):
        pixels = MPS_BATCH_PIXELS
    else:
        return lambda task: most
    return lambda task: max(1, min(most, pixels // task.params.size**2))


def _shape_reader() -> Callable[[Task], tuple[int, int] | None]:
    """(w, h) of a task's content at its output size, from the image header."""
    headers: dict[Path, tuple[int, int] | None] = {}

    def shape(task: Task) -> tuple[int, int] | None:
        path = task.content.path
        if path not in headers:
            headers[path] = images.oriented_size(path)
        header = headers[path]
        if header is None:
            return None
        return images.target_size(*header, task.params.size, task.params.square)

    return shape


def _run_here(
    tasks: Sequence[Task],
    batches: Sequence[tuple[int, ...]],
    worker: Worker,
    recorder: _Recorder,
    report_every: int,
) -> None:
    device = str(worker.device)
    for batch in batches:
        members = [tasks[i] for i in batch]
        for task in members:
            recorder.events.task_started(task, worker.name)
        try:
            outcomes = worker.run_batch(
                members, functools.partial(_step, recorder.events, members), report_every
            )
        except FatalWorkerError as exc:
            recorder.stats.fatal = str(exc)
            break
        except BaseException as exc:  # Ctrl-C or a termination signal: record, then stop
            for index in batch:
                recorder.interrupted(index, device, worker.name, exc)
            raise
        for index, outcome in zip(batch, outcomes, strict=True):
            recorder.finished(index, outcome, device, worker.name)
    recorder.stats.target_computations = worker.target_computations
    recorder.stats.model_builds = worker.model_builds


def _step(events: Events, batch: Sequence[Task], position: int, progress: Progress) -> None:
    events.step(batch[position], progress)


def worker_devices(devices: Sequence[str], at_once: int) -> list[str]:
    """The entries of `devices` to start workers for: all of them, or only `at_once` (at
    least one) where no more batches can run at once, picked so that every device gets a
    worker before any gets a second, and kept in the order given."""
    if len(devices) <= at_once:
        return list(devices)
    seen: dict[str, int] = {}
    rank = []  # the entry is its device's how-manieth
    for device in devices:
        rank.append(seen.get(device, 0))
        seen[device] = rank[-1] + 1
    first = sorted(range(len(devices)), key=lambda i: (rank[i], i))[: max(1, at_once)]
    return [devices[i] for i in sorted(first)]


def cpu_cores() -> int:
    """The cores this run may use: those it is pinned to, and no more than a Slurm job's
    `--cpus-per-task` (SLURM_CPUS_PER_TASK). A Slurm that allocates CPUs without pinning
    tasks to them (TaskPlugin=task/none) leaves every core in the affinity mask: two array
    tasks of one CPU each on a 2-core node would each run 2 threads and slow each other
    down severalfold."""
    pinned = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores = len(pinned) if pinned else os.cpu_count() or 1
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if allocated.isdigit() and int(allocated) > 0:
        cores = min(cores, int(allocated))
    return cores


def cpu_threads_per_worker(devices: Sequence[str]) -> int:
    """Each CPU worker's torch thread count, so that CPU workers never oversubscribe the cores."""
    cpu_workers = sum(1 for d in devices if d == "cpu") or 1
    return max(1, cpu_cores() // cpu_workers)


WAIT = ()  # the scheduler's answer while what is left waits for frames in flight


def _frames_before(
    tasks: Sequence[Task], batches: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], int]:
    """The batches that are a sequence's frame after another frame of `tasks`, each with the
    index of that frame, which must finish first: the others can all run at once."""
    position = {task.output: i for i, task in enumerate(tasks) if task.chain}
    before: dict[tuple[int, ...], int] = {}
    for batch in batches:
        after = tasks[batch[0]].after
        if after is not None and after in position:
            before[batch] = position[after]
    return before


class _Scheduler:
    """Hands out batches (tuples of task indices) so that a worker keeps to one style's
    tasks (one target set); a batch belongs to the style of its first task.

    A sequence's frame is handed out only once the frame before it has finished (done or
    failed: it then fails with the reason), and by preference to the worker that ran that
    one; until then a worker asking gets WAIT, never the frame."""

    def __init__(self, tasks: Sequence[Task], batches: Sequence[tuple[int, ...]]) -> None:
        self.tasks = tasks
        self.groups: dict[tuple[object, ...], deque[tuple[int, ...]]] = {}
        self.claimed: set[tuple[object, ...]] = set()
        self.blocked: dict[int, tuple[int, ...]] = {}  # a frame's batch, by the frame before
        self.released: dict[int, tuple[int, ...]] = {}  # ... once that one finished
        self.before = _frames_before(tasks, batches)  # the other way round
        self.taken: set[tuple[int, ...]] = set()  # released batches handed out out of turn
        for batch in batches:
            if batch in self.before:
                self.blocked[self.before[batch]] = batch
            else:
                self._queue(batch)

    def _queue(self, batch: tuple[int, ...], first: bool = False) -> None:
        queue = self.groups.setdefault(self.tasks[batch[0]].target_group, deque())
        queue.appendleft(batch) if first else queue.append(batch)

    def finished(self, index: int) -> None:
        """Task `index` is done or failed: the frame after it may go."""
        batch = self.blocked.pop(index, None)
        if batch is not None:
            self.released[index] = batch
            self._queue(batch, first=True)

    def next(
        self, current: tuple[object, ...] | None, last: tuple[int, ...] = ()
    ) -> tuple[int, ...] | None:
        """A batch for a worker of style `current` that just finished `last`; WAIT while
        only frames waiting for others are left; None when nothing is."""
        for index in last:  # the next frame of the sequence this worker is running
            batch = self.released.pop(index, None)
            if batch is not None:
                self.taken.add(batch)
                return batch
        if current is not None and (batch := self._pop(current)) is not None:
            return batch
        fresh = [g for g, q in self.groups.items() if q and g not in self.claimed]
        if fresh:  # a style nobody has started: its targets are computed once
            self.claimed.add(fresh[0])
            if (batch := self._pop(fresh[0])) is not None:
                return batch
        for group in sorted(self.groups, key=lambda g: -len(self.groups[g])):
            if (batch := self._pop(group, last=True)) is not None:
                return batch  # help with the largest remaining style
        return WAIT if self.blocked else None

    def _pop(self, group: tuple[object, ...], last: bool = False) -> tuple[int, ...] | None:
        queue = self.groups.get(group)
        while queue:
            batch = queue.pop() if last else queue.popleft()
            if batch in self.taken:  # handed out already, out of turn
                self.taken.discard(batch)
                continue
            if batch in self.before:  # no longer the next frame of anyone's sequence
                self.released.pop(self.before[batch], None)
            return batch
        return None


@dataclass
class _Slot:
    device: str
    name: str
    process: Any = None
    inbox: Any = None
    reader: Any = None  # the read end of this worker's own pipe to the parent
    batch: tuple[int, ...] | None = None  # the batch in flight
    group: tuple[object, ...] | None = None
    counters: tuple[int, int] = (0, 0)  # target computations, model builds (cumulative)
    waiting: bool = False  # idle until a frame in flight elsewhere lets the next one go
    stopped: bool = False  # its worker alone got SIGTERM: restart it once it has exited
    retired: tuple[int, int] = (0, 0)  # counters of this slot's earlier, dead processes


class _Pool:
    """One spawned worker process per entry of `devices`; the parent writes rows and events."""

    POLL_SECONDS = 0.5
    # How long a stop waits for busy workers to save their checkpoints and exit: one
    # evaluation and a save, well inside Slurm's KillWait (30 s) before its SIGKILL.
    STOP_SECONDS = 20.0

    def __init__(
        self,
        tasks: Sequence[Task],
        batches: Sequence[tuple[int, ...]],
        devices: Sequence[str],
        config: RunConfig,
        recorder: _Recorder,
    ) -> None:
        self.tasks, self.config, self.recorder = tasks, config, recorder
        self.events, self.stats = recorder.events, recorder.stats
        self.context = mp.get_context("spawn")  # CUDA cannot be initialized again after fork
        self.threads = cpu_threads_per_worker(devices)
        self.slots = [_Slot(d, f"{d}#{i}") for i, d in enumerate(devices)]
        self.scheduler = _Scheduler(tasks, batches)
        self.restarts_left = 2 * len(devices)

    def run(self) -> RunStats:
        try:
            for slot in self.slots:
                self._start(slot)
                self._assign(slot)
            check_at = time.monotonic() + self.POLL_SECONDS
            while not self.stats.fatal and any(
                s.batch is not None or s.stopped for s in self.slots
            ):
                readers = [slot.reader for slot in self.slots if slot.reader is not None]
                if readers:
                    ready = mp_connection.wait(readers, timeout=self.POLL_SECONDS)
                else:
                    ready = []
                    time.sleep(self.POLL_SECONDS)
                for reader in ready:
                    self._receive(self._slot_of(reader))
                if not ready or time.monotonic() >= check_at:  # also while others chatter
                    self._check_processes()
                    check_at = time.monotonic() + self.POLL_SECONDS
        except BaseException as exc:  # Ctrl-C or a termination signal: record, then stop
            for slot in self.slots:
                for index in slot.batch or ():
                    self.recorder.interrupted(index, slot.device, slot.name, exc)
            raise
        finally:
            self._stop()
        for slot in self.slots:
            self.stats.target_computations += slot.retired[0] + slot.counters[0]
            self.stats.model_builds += slot.retired[1] + slot.counters[1]
        return self.stats

    def _start(self, slot: _Slot) -> None:
        slot.inbox = self.context.Queue()
        # Each worker writes to its own pipe: a worker killed in mid-write can garble only
        # its own channel, never block the others (a shared Queue's lock would stay held).
        if slot.reader is not None:
            slot.reader.close()
        slot.reader, sender = self.context.Pipe(duplex=False)
        setup = WorkerSetup(
            device=slot.device,
            name=slot.name,
            threads=self.threads if slot.device == "cpu" else 1,
            report_every=self.config.report_every,
            options=self.config.worker,
        )
        slot.process = self.context.Process(
            target=worker_main,
            args=(setup, slot.inbox, sender),
            name=f"nst-batch {slot.name}",
            daemon=True,
        )
        slot.process.start()
        sender.close()  # the worker holds the only write end: its death reads as EOF here

    def _slot_of(self, reader: Any) -> _Slot:
        return next(slot for slot in self.slots if slot.reader is reader)

    def _receive(self, slot: _Slot) -> None:
        """Handle one message from the slot's worker; a closed or garbled pipe means the
        worker died, which _check_processes then turns into a failed batch and a restart."""
        try:
            message = slot.reader.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            slot.reader.close()
            slot.reader = None
            return
        self._handle(message)

    def _busy(self) -> bool:
        """Whether a worker has a batch in flight, or has stopped and not yet said so."""
        return any(slot.batch is not None or slot.stopped for slot in self.slots)

    def _assign(self, slot: _Slot, last: tuple[int, ...] = ()) -> None:
        batch = self.scheduler.next(slot.group, last)
        slot.waiting = batch == WAIT
        slot.batch = None if slot.waiting else batch
        if slot.waiting:  # only frames whose predecessors are in flight are left
            return
        if batch is None:
            slot.inbox.put(None)
            return
        members = [self.tasks[i] for i in batch]
        slot.group = members[0].target_group
        slot.inbox.put((batch, members))
        for task in members:
            self.events.task_started(task, slot.name)

    def _wake(self) -> None:
        """Give waiting workers what the last finished task let go (or send them home)."""
        for other in self.slots:
            if other.waiting and other.process is not None and other.process.is_alive():
                self._assign(other)

    def _slot(self, name: str) -> _Slot:
        return next(slot for slot in self.slots if slot.name == name)

    def _handle(self, message: Message) -> None:
        slot = self._slot(message.worker)
        if isinstance(message, StepMessage):
            self.events.step(self.tasks[message.index], message.progress)
        elif isinstance(message, DoneMessage):
            slot.counters = (message.target_computations, message.model_builds)
            batch = slot.batch or ()
            self._finish(slot, message.outcomes)
            self._assign(slot, batch)
            self._wake()
        elif isinstance(message, FatalMessage):
            self.stats.fatal = message.message
        elif isinstance(message, StoppedMessage):  # someone stopped this worker, not the run
            reason = Interrupted(message.signum)
            for index in slot.batch or ():  # none when it was idle
                self.recorder.interrupted(index, slot.device, slot.name, reason)
                self.scheduler.finished(index)  # a frame after it fails, naming it
            slot.batch, slot.stopped, slot.waiting = None, True, False

    def _finish(self, slot: _Slot, outcomes: Sequence[TaskOutcome]) -> None:
        assert slot.batch is not None
        for index, outcome in zip(slot.batch, outcomes, strict=True):
            self.recorder.finished(index, outcome, slot.device, slot.name)
            self.scheduler.finished(index)
        slot.batch = None

    def _check_processes(self) -> None:
        """A worker that died (killed, segfault, OOM killer) fails its task, not the run; one
        stopped on its own has recorded its tasks as interrupted. Either is started again."""
        for slot in self.slots:
            if slot.process.is_alive() or (slot.batch is None and not slot.stopped):
                continue
            while slot.reader is not None and slot.reader.poll():  # reports sent before dying
                self._receive(slot)
            if slot.batch is not None:
                code = slot.process.exitcode
                how = (
                    f"signal {signal.Signals(-code).name}"
                    if code and code < 0
                    else f"exit code {code}"
                )
                died = TaskOutcome(
                    "failed", error=f"worker process {slot.name} died ({how}) during this task"
                )
                self._finish(slot, [died] * len(slot.batch))
            elif not slot.stopped:
                continue
            slot.stopped = False
            slot.retired = (slot.retired[0] + slot.counters[0], slot.retired[1] + slot.counters[1])
            slot.counters, slot.group = (0, 0), None
            if self.restarts_left > 0:
                self.restarts_left -= 1
                self._start(slot)
                self._assign(slot)
            self._wake()

    def _stop(self) -> None:
        """Idle workers get None and leave; busy ones (Ctrl-C, SIGTERM, a fatal error) get
        SIGTERM, which makes each save its tasks' checkpoints after the evaluation in
        flight and exit. Whoever is still alive after STOP_SECONDS is killed."""
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                with contextlib.suppress(Exception):
                    slot.inbox.put(None)
        for slot in self.slots:
            if slot.process is not None and slot.batch is not None:
                with contextlib.suppress(Exception):
                    slot.process.terminate()
        deadline = time.monotonic() + self.STOP_SECONDS
        try:
            for slot in self.slots:
                if slot.process is not None:
                    slot.process.join(max(0.1, deadline - time.monotonic()))
        finally:  # also when a second signal cuts the wait short
            for slot in self.slots:
                if slot.process is not None and slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()


def _count(stats: RunStats, outcome: TaskOutcome, task: Task) -> None:
    if outcome.status == "done":
        stats.done += 1
    else:
        stats.failed += 1
    stats.task_seconds += outcome.seconds
    stats.optimize_seconds += outcome.optimize_seconds
    if outcome.peak_memory is not None:
        where = (task.params.size, task.params.precision, outcome.batch)
        stats.peak_memory[where] = max(stats.peak_memory.get(where, 0), outcome.peak_memory)
