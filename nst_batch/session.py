"""A gallery's lifecycle, under the command line and beside `transfer()`: prepare (load the
manifest, plan, shard, select, sort out what is up to date), run (check the output folder,
lock it, clear a killed run's leftovers, write the rows, optimize on the workers, keep the
file cache, rebuild the gallery) and report (merge the results, count the tasks by state,
rebuild the gallery). `nst_batch.run()` and `nst_batch.report()` are its public face.

Nothing here prints: what a person should see goes to a `Reporter` (the CLI's prints, the
Python API's logs). Errors that stop a run before any work are `SessionError`; another run
holding the output is `layout.Locked`. Torch is imported only when there is work to do.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nst_batch import filecache, layout, precision
from nst_batch.explain import reasons
from nst_batch.filecache import FileCache
from nst_batch.layout import Share, UnsafeWrite
from nst_batch.manifest import Manifest, ManifestError, load_manifest, parse_devices
from nst_batch.plan import (
    Task,
    frames_before,
    matching,
    parse_only,
    parse_shard,
    plan,
    slurm_shard,
    split,
    up_to_date,
)
from nst_batch.plan import shard as shard_tasks
from nst_batch.results import (
    ResultRow,
    ResultsError,
    ResultsWriter,
    check_file,
    merge,
    new_run_id,
    task_row,
    unrecorded,
    write_table,
)
from nst_batch.task import STATES, State, classify, latest_by_id
from nst_batch.weights import WeightsError

if TYPE_CHECKING:  # a run with nothing to do imports neither: torch is for optimizing
    from nst_batch.clean import Stale
    from nst_batch.gallery import Live
    from nst_batch.runner import Events, RunStats

CUDA_GRAPHS_VARIABLE = "NST_BATCH_CUDA_GRAPHS"  # 0: evaluate eagerly on CUDA too
SHOWN_FAILURES = 10  # the gallery's files that failed, named one by one; then a count

log = logging.getLogger("nst_batch")


class SessionError(Exception):
    """A usage, manifest, weights or output-folder problem: the run stopped before any work
    (or, for a run, without touching an output). str() is the sentence to show."""


class WriteFailed(SessionError):
    """The output folder could not be written in the middle of a run (a full disk while a
    results row was written): the outputs and rows finished before it are kept."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the run; the tasks in flight are recorded and checkpointed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Prepared:
    """A planned gallery: the whole plan, this process's share of it, and what is to do."""

    manifest: Manifest
    share: Share
    files: FileCache  # what the output folder's file cache knows (only a run writes it)
    whole: list[Task]  # every task of the manifest, in plan order (the page shows them)
    tasks: list[Task]  # this shard's tasks that --only selects
    todo: list[Task]  # of `tasks`, those to run
    fresh: list[Task]  # of `tasks`, those up to date
    force: bool = False
    run: str = field(default_factory=new_run_id)  # this run's id in its results rows
    # Of `todo`, the earlier frames that --only took along for a later frame it matched.
    along: list[Task] = field(default_factory=list)

    @property
    def output(self) -> Path:
        return self.manifest.output


@dataclass(frozen=True)
class GalleryWritten:
    """What became of the gallery: its page, and the files that failed (what, why); or the
    `error` that stopped it whole."""

    page: Path
    failures: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class RunSummary:
    """A run's counts, as the command's summary prints them."""

    tasks: int  # in this run's share and selection
    done: int
    skipped: int  # up to date
    failed: int
    interrupted: int
    target_computations: int
    seconds: float
    output: Path
    results: Path
    shard: str  # '2/4', or ''
    run: str  # this run's id, in each row it wrote
    orphans_removed: int = 0  # checkpoints of tasks no longer in the plan
    peak_memory: Mapping[tuple[int, str, int], int] = field(default_factory=dict)
    fatal: str = ""  # a problem no task could get past (a worker's fatal error)
    gallery: GalleryWritten | None = None


@dataclass(frozen=True)
class ReportSummary:
    """The plan's tasks by state against the results on disk."""

    tasks: list[Task]
    states: list[State]
    rows: list[ResultRow | None]  # each task's latest row, None when it has none
    results: Path | None  # the merged results file, None when there are no results yet
    gallery: GalleryWritten | None = None
    running: str = ""  # while a run holds the output: who (the counts are what it recorded)
    since: float | None = None  # ... and when it started (POSIX time)

    @property
    def counts(self) -> dict[State, int]:
        """Tasks per state (the page's cells; `missing` only the page tells)."""
        return {name: self.states.count(name) for name in STATES if name != "missing"}

    @property
    def failed(self) -> int:
        return self.counts["failed"]


class Reporter(Protocol):
    """Hears what a person should see of a session."""

    def warn(self, message: str) -> None:
        """Something went wrong that costs no task (a cache or gallery file not written)."""

    def ran(self, summary: RunSummary) -> None:
        """The work is over; the gallery is rebuilt next (then `gallery` follows)."""

    def gallery(self, written: GalleryWritten) -> None:
        """The gallery was rebuilt, or could not be."""


class LogReporter:
    """The Python API's reporter: warnings and the summary go to the `nst_batch` logger."""

    def warn(self, message: str) -> None:
        log.warning(message)

    def ran(self, summary: RunSummary) -> None:
        log.info(
            "%d tasks: %d done, %d skipped, %d failed, %d interrupted",
            summary.tasks,
            summary.done,
            summary.skipped,
            summary.failed,
            summary.interrupted,
        )

    def gallery(self, written: GalleryWritten) -> None:
        for what, why in written.failures:
            log.warning("gallery: cannot write %s: %s", what, why)


# --- prepare ---------------------------------------------------------------------------------


def load(
    manifest: str | os.PathLike[str], overrides: Sequence[str] = (), devices: str | None = None
) -> Manifest:
    """The manifest with `--set` overrides and a `--devices` value applied."""
    try:
        loaded = load_manifest(manifest, tuple(overrides))
        if devices is not None:
            loaded = replace(loaded, devices=parse_devices(devices, "--devices"))
        return loaded
    except ManifestError as exc:
        raise SessionError(str(exc)) from None


def prepare(
    manifest: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    devices: str | None = None,
    shard: str | None = None,
    only: Sequence[str] = (),
    force: bool = False,
    whole: bool = False,
    sharded: bool = True,
) -> Prepared:
    """Load and plan a gallery, and take this process's share: `shard` ('K/N'), else this
    Slurm array task's share, else everything. `whole`: the whole plan, unsorted (what
    `report` needs): no share, and nothing marked to do or up to date. `sharded=False`:
    the whole plan even in a Slurm array."""
    with _without_collection():
        loaded = load(manifest, overrides, devices)
        share = _share(shard, os.environ) if sharded and not whole else None
        files = filecache.load(loaded.output, share)  # read here; only a run writes it back
        plan_ = _plan(loaded, files)
        # Shard the whole plan, then take the subset: a task's shard never depends on --only,
        # so each shard's lock and temporaries stay its own (see docs/clusters.md).
        tasks = plan_ if share is None else shard_tasks(plan_, *share)
        along: list[Task] = []
        if only:
            tasks, along = _only(plan_, tasks, only)
        if whole:
            return Prepared(loaded, None, files, plan_, tasks, [], [], force)
        check: Callable[[Task], bool] = (
            (lambda task: False) if force else (lambda task: up_to_date(task, files))
        )
        todo, fresh = split(tasks, check)
        taken = {id(task) for task in along}
        along = [task for task in todo if id(task) in taken]
    return Prepared(loaded, share, files, plan_, tasks, todo, fresh, force, along=along)


def why(prepared: Prepared) -> dict[int, list[str]]:
    """Why each task to do would run, by id(task): its output's recorded recipe against its
    own, and its latest result in the output folder."""
    from nst_batch.images import read_metadata

    try:
        rows = merge(layout.results_files(prepared.output))
    except ResultsError as exc:
        raise SessionError(str(exc)) from None
    latest = latest_by_id(rows)
    found = {}
    for task in prepared.todo:
        metadata = read_metadata(task.output) if task.output.is_file() else None
        found[id(task)] = reasons(task, metadata, latest.get(task.id), force=prepared.force)
    return found


def _plan(manifest: Manifest, files: FileCache) -> list[Task]:
    """The plan, `precision: auto` resolved for the manifest's devices on this machine."""
    auto: precision.Resolved = "fp32"
    if any(outline.params.precision == "auto" for outline in manifest.outlines):
        auto = precision.resolve(manifest.devices)
    try:
        return plan(manifest, files, auto)
    except WeightsError as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"{manifest.path}: cannot read {exc.filename}: {exc.strerror}") from None


def _share(option: str | None, environ: Mapping[str, str]) -> Share:
    """--shard K/N, else this Slurm array task's share, else None (everything)."""
    try:
        return parse_shard(option) if option is not None else slurm_shard(environ)
    except ValueError as exc:
        raise SessionError(str(exc)) from None


def _only(
    whole: list[Task], tasks: list[Task], values: Sequence[str]
) -> tuple[list[Task], list[Task]]:
    """The tasks of `tasks` that --only selects (its globs checked against the whole plan),
    and of those the earlier frames a selected frame took along."""
    try:
        matched = matching(whole, parse_only(tuple(values)))
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    before = {id(task) for task in frames_before(whole, matched)}
    chosen = before | {id(task) for task in matched}
    selected = [task for task in tasks if id(task) in chosen]
    return selected, [task for task in selected if id(task) in before]


@contextlib.contextmanager
def _without_collection() -> Iterator[None]:
    """Python's cyclic garbage collector kept off while planning: a plan is some twenty
    objects per task and no garbage cycles, and the collector, run by allocation counts,
    would walk them all again each time they grew by a quarter (a third of the time of a
    100,000-task dry run)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- run -------------------------------------------------------------------------------------


def run_prepared(
    prepared: Prepared,
    events: Events | None = None,
    reporter: Reporter | None = None,
    report_every: int = 10,
) -> RunSummary:
    """Run the tasks to do and record what is up to date, then rebuild the gallery of the
    whole plan. `events` hears the tasks and their steps (the CLI's progress bar);
    `report_every`: steps between progress events.

    SessionError before any work (an output folder that is not ours to write, a device or
    weights problem); layout.Locked when another run holds the output; Interrupted when
    SIGTERM or SIGINT stopped it (its tasks in flight recorded and checkpointed)."""
    reporter = reporter or LogReporter()
    start = time.perf_counter()
    output = prepared.output
    if output.exists() and not output.is_dir():
        raise SessionError(f"output {output} is a file, not a folder; choose another 'output'")
    _check_output_folder(prepared)
    if prepared.todo:  # a device or weights problem stops the run before anything is written
        from nst_batch.runner import DeviceError, resolve_devices
        from nst_batch.vgg import load_weights

        try:
            resolve_devices(prepared.manifest.devices)
            load_weights(prepared.manifest.weights)
        except (DeviceError, WeightsError) as exc:
            raise SessionError(str(exc)) from None
    try:
        output.mkdir(parents=True, exist_ok=True)
        with layout.hold(output, prepared.share):
            return _run_locked(prepared, events, reporter, report_every, start)
    except (UnsafeWrite, ResultsError) as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:  # unwritable folder, disk full: finished outputs stay
        raise SessionError(f"cannot write to the output folder {output}: {exc.strerror}") from None


def _check_output_folder(prepared: Prepared) -> None:
    """SessionError before any work if a write would pass a link or the results file is not
    ours. Up-to-date outputs are only read: the outputs and curves checked are those to do."""
    output, share = prepared.output, prepared.share
    outputs = [p for task in prepared.todo for p in (task.output, layout.curve_path(task.output))]
    try:
        layout.check_writable(output, [*layout.run_files(output, share), *outputs])
        check_file(layout.results_file(output, share))
    except (UnsafeWrite, ResultsError) as exc:
        raise SessionError(str(exc)) from None


def _run_locked(
    prepared: Prepared,
    events: Events | None,
    reporter: Reporter,
    report_every: int,
    start: float,
) -> RunSummary:
    output, share, todo, fresh = prepared.output, prepared.share, prepared.todo, prepared.fresh
    results = layout.results_file(output, share)
    label = f"{share[0]}/{share[1]}" if share else ""
    remove_stale_temporaries(output, todo, share)
    # A whole run holds the folder: checkpoints of outputs the plan no longer has go.
    orphans = 0 if share else _remove_orphan_checkpoints(output, prepared.whole)
    # An up-to-date task gets a `skipped` row only where the results do not already record
    # it done with its key: a rerun with nothing to do appends nothing.
    merged = merge(layout.results_files(output))
    skips = unrecorded(fresh, merged)
    stats = None
    if todo or skips:
        with ResultsWriter(results, output, run=prepared.run) as writer:
            writer.write_all([task_row(task, "skipped", label) for task in skips])
            if todo:
                if share is None:  # a whole run's page fills as it goes (a shard's at its end)
                    events = LiveGallery(prepared, events or _Silent(), reporter)
                try:
                    stats = _optimize(prepared, writer, events, report_every)
                except OSError as exc:
                    raise WriteFailed(
                        f"cannot write to the output folder {output} during the run: "
                        f"{exc.strerror or exc}; the outputs and rows finished before it are "
                        "kept: free space (or mend the folder) and rerun to do the rest"
                    ) from None
    _remember(prepared.files, output, todo, share, reporter)
    if share is None:  # a whole run: checkpoints of finished galleries leave no folder
        layout.remove_empty_state(output)
    summary = RunSummary(
        tasks=len(todo) + len(fresh),
        done=stats.done if stats else 0,
        skipped=len(fresh),
        failed=stats.failed if stats else 0,
        interrupted=stats.interrupted if stats else 0,
        target_computations=stats.target_computations if stats else 0,
        seconds=time.perf_counter() - start,
        output=output,
        results=results,
        shard=label,
        run=prepared.run,
        orphans_removed=orphans,
        peak_memory=dict(stats.peak_memory) if stats else {},
        fatal=stats.fatal if stats else "",
    )
    reporter.ran(summary)
    if summary.fatal:
        return summary
    # A shard (or --only) runs part of the plan; the page shows the whole gallery.
    # With nothing written, the results read above are still the results: no second read.
    same = None if todo or skips else merged
    written = write_gallery(prepared.manifest, prepared.whole, prepared.files, same)
    reporter.gallery(written)
    return replace(summary, gallery=written)


def _optimize(
    prepared: Prepared, writer: ResultsWriter, events: Events | None, report_every: int
) -> RunStats:
    """Run the tasks to do on the manifest's devices: their stats. SIGTERM and SIGINT raise
    Interrupted once the tasks in flight are recorded and saved as checkpoints. The only
    part of a run that needs torch."""
    from nst_batch.runner import Interrupted as Stop
    from nst_batch.runner import RunConfig, resolve_devices, run_tasks
    from nst_batch.worker import WorkerOptions

    manifest = prepared.manifest

    def stop(signum: int, frame: object) -> None:
        raise Stop(signum)

    # SIGTERM: Slurm preemption or time limit, kill; SIGINT: Ctrl-C, also when started
    # in the background, where the shell would have it ignored.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        config = RunConfig(
            devices=tuple(resolve_devices(manifest.devices, manifest.workers_per_device)),
            batch_size=manifest.batch_size,
            report_every=report_every,
            shard=prepared.share,
            worker=WorkerOptions(
                compile=manifest.compile,
                cuda_graphs=os.environ.get(CUDA_GRAPHS_VARIABLE, "1") != "0",
                checkpoint_every=manifest.checkpoint_every,
                resume=not prepared.force,
            ),
        )
        return run_tasks(prepared.todo, config, writer, events or _Silent())
    except (KeyboardInterrupt, Stop) as exc:
        raise Interrupted(exc.signum if isinstance(exc, Stop) else signal.SIGINT) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class LiveGallery:
    """runner.Events that passes everything on and rewrites the gallery as tasks finish,
    with `index.html` saying that a run is going on (and reloading itself): at the start,
    then after a finished task once `MIN_INTERVAL` seconds have passed and at least
    `COST_FACTOR` times as long as the last write took, so that the page costs the run at
    most about 1/COST_FACTOR of its time. The gallery is incremental: a write redoes only
    the cells, pages and sheets that changed."""

    MIN_INTERVAL = 10.0
    COST_FACTOR = 50.0

    def __init__(self, prepared: Prepared, inner: Events, reporter: Reporter) -> None:
        self.prepared, self.inner, self.reporter = prepared, inner, reporter
        self.total, self.done = len(prepared.todo), 0
        self.running: dict[int, str] = {}
        self.start = time.monotonic()
        self.next = self.start
        self.writes = 0
        self.seconds = 0.0  # spent writing
        self._write()

    def task_started(self, task: Task, worker: str) -> None:
        self.running[id(task)] = task.label
        self.inner.task_started(task, worker)

    def step(self, task: Task, progress: Any) -> None:
        self.inner.step(task, progress)

    def task_finished(self, task: Task, row: ResultRow) -> None:
        self.running.pop(id(task), None)
        self.done += 1
        self.inner.task_finished(task, row)
        if time.monotonic() >= self.next and self.done < self.total:
            self._write()

    def _write(self) -> None:
        from nst_batch.gallery import Live

        began = time.monotonic()
        elapsed = began - self.start
        left = ""
        if self.done:
            seconds = elapsed / self.done * (self.total - self.done)
            minutes, secs = divmod(round(seconds), 60)
            left = f"{minutes}m{secs:02d}s"
        live = Live(self.done, self.total, tuple(sorted(self.running.values())), left)
        p = self.prepared
        written = write_gallery(p.manifest, p.whole, p.files, None, live)
        if written.error:
            self.reporter.warn(written.error)
        cost = time.monotonic() - began
        self.writes += 1
        self.seconds += cost
        self.next = began + max(self.MIN_INTERVAL, self.COST_FACTOR * cost)


class _Silent:
    """runner.Events that hears nothing."""

    def task_started(self, task: Task, worker: str) -> None:
        pass

    def step(self, task: Task, progress: Any) -> None:
        pass

    def task_finished(self, task: Task, row: ResultRow) -> None:
        pass


def _remember(
    files: FileCache, output: Path, made: list[Task], share: Share, reporter: Reporter
) -> None:
    """Keep what this run learned of its files for the next one: the input hashes and the
    keys of the outputs, those it made read back once. The cache only saves reading, so one
    that cannot be written costs a warning."""
    for task in made:
        files.output_key(task.output, task.relative_output)
    try:
        filecache.save(files, output, share)
    except (OSError, UnsafeWrite) as exc:
        reporter.warn(f"cannot write the file cache in {output}: {exc}")


def remove_stale_temporaries(output: Path, tasks: list[Task], share: Share) -> None:
    """Temporaries a killed run left: all of them when this run holds the whole folder (the
    folders of the tasks' animations too), else (a shard, beside other shards, whose gallery
    may be writing an animation) only those of its own outputs, checkpoints and file cache."""
    own = [layout.checkpoint_path(output, t.relative_output, t.key) for t in tasks]
    own.append(layout.file_cache(output, share))
    everything = share is None
    written = [t.output for t in tasks]
    if everything:
        chains = {t.chain for t in tasks if t.chain}
        written += [layout.animation_path(output, chain) for chain in sorted(chains)]
    for temp in layout.stale_temporaries(output, written, everything, own):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _remove_orphan_checkpoints(output: Path, tasks: list[Task]) -> int:
    """Remove the checkpoints of outputs that no task of the plan writes; how many."""
    removed = 0
    for path in layout.orphan_checkpoints(output, [t.relative_output for t in tasks]):
        removed += layout.remove_file(path, output)
    return removed


def write_gallery(
    manifest: Manifest,
    tasks: list[Task],
    files: FileCache,
    rows: list[ResultRow] | None = None,
    live: Live | None = None,
) -> GalleryWritten:
    """Rebuild the gallery pages, contact sheets and animations of the plan `tasks` from every
    results file in the output (or `rows`, those files merged already) and the outputs on
    disk, whose keys `files` knows.

    A gallery that cannot be written costs a warning, not the run's exit code: the outputs
    and results it would show are safe on disk, and `nst-batch report` writes it again.
    """
    from nst_batch.gallery import write_gallery as write
    from nst_batch.images import ImageError

    page = manifest.output / layout.PAGE
    try:
        if rows is None:
            rows = merge(layout.results_files(manifest.output))
        written = write(manifest, tasks, rows, files, live)
    except (OSError, ImageError, WeightsError, UnsafeWrite, ResultsError) as exc:
        return GalleryWritten(page, error=f"cannot write the gallery in {manifest.output}: {exc}")
    return GalleryWritten(written.page, [(f.what, f.why) for f in written.failures])


# --- report ----------------------------------------------------------------------------------


def report_prepared(prepared: Prepared) -> ReportSummary:
    """Merge the results on disk into <output>/results.csv, classify the selected tasks
    against them and rebuild the gallery (its outcome in the summary). Waits for no run:
    while one holds the output folder, the tasks are classified against the rows recorded
    so far, nothing is written, and the summary says who runs and since when."""
    output = prepared.output
    if output.exists() and not output.is_dir():
        raise SessionError(f"output {output} is a file, not a folder; choose another 'output'")
    if not output.is_dir():
        return classified(prepared.tasks, [], None)
    try:
        return _report_locked(prepared)
    except layout.Locked as exc:  # a run is going: answer from its rows, write nothing
        try:
            rows = merge(layout.results_files(output))
        except ResultsError as error:
            raise SessionError(str(error)) from None
        summary = classified(prepared.tasks, rows, None)
        return replace(summary, running=str(exc), since=layout.running_since(output))


def _report_locked(prepared: Prepared) -> ReportSummary:
    output = prepared.output
    try:
        with layout.hold(output, None):
            remove_stale_temporaries(output, prepared.whole, None)
            files = layout.results_files(output)
            rows = merge(files)
            results = layout.results_file(output, None)
            if files:  # shard files stay as they are: each is its shard's own attempt log
                write_table(rows, results, output)
            summary = classified(prepared.tasks, rows, results if files else None)
            written = write_gallery(prepared.manifest, prepared.whole, prepared.files, rows)
            return replace(summary, gallery=written)
    except (UnsafeWrite, ResultsError) as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"cannot write to the output folder {output}: {exc.strerror}") from None


def classified(tasks: list[Task], rows: list[ResultRow], results: Path | None) -> ReportSummary:
    """The tasks by their state against `rows` (merged results)."""
    latest = latest_by_id(rows)
    found = [latest.get(task.id) for task in tasks]
    states = [classify(task, row) for task, row in zip(tasks, found, strict=True)]
    return ReportSummary(tasks, states, found, results)


# --- accept ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """What `accept` did: the tasks whose outputs now count as made with the current
    settings, and those it could not take (no output of nst-batch's there), with why."""

    accepted: list[Task]
    refused: list[tuple[Task, str]]
    results: Path


def accept_prepared(prepared: Prepared) -> Accepted:
    """Record the existing outputs of the tasks to do as made with the current settings,
    without making them again: each output's metadata gets the task's key, recipe and
    settings and says it was accepted (from which key, when), and a `done` row with start
    `accepted` goes into the results. The pixels are not touched (JPEG and WebP are not
    encoded again). layout.Locked while a run holds the output folder."""
    from datetime import UTC, datetime

    from nst_batch import __version__
    from nst_batch.images import ImageError, read_metadata, replace_metadata
    from nst_batch.metadata import KEY_METADATA, accepted_metadata

    output = prepared.output
    results = layout.results_file(output, None)
    accepted: list[Task] = []
    refused: list[tuple[Task, str]] = []
    if not output.is_dir():
        return Accepted([], [(task, "no output yet") for task in prepared.todo], results)
    try:
        with layout.hold(output, None), ResultsWriter(results, output, run=prepared.run) as rows:
            for task in prepared.todo:
                recorded = read_metadata(task.output) if task.output.is_file() else {}
                if KEY_METADATA not in recorded:
                    why = "no output made by nst-batch" if task.output.exists() else "no output"
                    refused.append((task, why))
                    continue
                metadata = accepted_metadata(
                    recorded,
                    key=task.key,
                    recipe=task.recipe,
                    params=task.params.model_dump(mode="json"),
                    at=datetime.now(UTC),
                    version=__version__,
                )
                try:
                    replace_metadata(task.output, metadata, root=output)
                except ImageError as exc:
                    refused.append((task, str(exc)))
                    continue
                rows.write(task_row(task, "done", "", start="accepted"))
                accepted.append(task)
    except (UnsafeWrite, ResultsError) as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"cannot write to the output folder {output}: {exc.strerror}") from None
    return Accepted(accepted, refused, results)


# --- clean ----------------------------------------------------------------------------------


def clean_prepared(prepared: Prepared, remove: bool = False) -> tuple[list[Stale], int]:
    """The files in the output folder that the whole plan no longer makes, and how many of
    them were removed (none unless `remove`). Holds the folder as a whole run does, so
    layout.Locked while a run or a shard works there."""
    from nst_batch.clean import remove as remove_files
    from nst_batch.clean import stale_files

    output = prepared.output
    if not output.is_dir():
        return [], 0
    try:
        with layout.hold(output, None):
            stale = stale_files(output, prepared.whole)
            return stale, remove_files(output, stale) if remove else 0
    except OSError as exc:
        raise SessionError(f"cannot clean the output folder {output}: {exc.strerror}") from None


# --- the public API --------------------------------------------------------------------------


def _overrides(values: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """`set={"params.style_weight": 30}` (values as YAML/JSON) or ["params.style_weight=30"]."""
    import json

    if values is None:
        return []
    if isinstance(values, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in values.items()]
    return [str(value) for value in values]


def run(
    manifest: str | os.PathLike[str],
    *,
    set: Mapping[str, Any] | Sequence[str] | None = None,  # as the command line's --set
    only: Sequence[str] = (),
    devices: str | None = None,
    force: bool = False,
    shard: str | None = None,
    reporter: Reporter | None = None,
) -> RunSummary:
    """Run the gallery of a manifest from Python, as `nst-batch MANIFEST` does: only the
    tasks whose inputs or settings changed; returns the counts.

    `set`: overrides, as {"params.style_weight": 30} or ["params.style_weight=30"];
    `only`: ["content=chel*", ...] as --only; `shard`: "K/N" (default: the Slurm array's).
    Raises SessionError (nothing ran), layout.Locked (another run holds the output) or
    Interrupted (SIGTERM/SIGINT).
    """
    prepared = prepare(
        manifest, _overrides(set), devices=devices, shard=shard, only=only, force=force
    )
    return run_prepared(prepared, reporter=reporter)


def report(
    manifest: str | os.PathLike[str],
    *,
    set: Mapping[str, Any] | Sequence[str] | None = None,
    only: Sequence[str] = (),
    reporter: Reporter | None = None,
) -> ReportSummary:
    """Merge a gallery's results, count its tasks by state and rebuild its page, as
    `nst-batch report MANIFEST` does."""
    summary = report_prepared(prepare(manifest, _overrides(set), only=only, whole=True))
    if summary.gallery is not None:
        (reporter or LogReporter()).gallery(summary.gallery)
    return summary
