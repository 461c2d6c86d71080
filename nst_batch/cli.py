"""The `nst-batch` command: parse, call the library, map errors to exit codes.

Exit codes: 0 every task done or up to date; 1 some task failed (the rest ran);
2 usage, manifest or weights error (nothing ran); 75 another run holds the output;
130 and 143 stopped by SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nst_batch import __version__, filecache, layout
from nst_batch.explain import made_with, reasons, shown, task_json
from nst_batch.filecache import FileCache
from nst_batch.layout import Locked, Share, UnsafeWrite
from nst_batch.manifest import Manifest, ManifestError, load_manifest, parse_devices
from nst_batch.plan import (
    Task,
    parse_only,
    parse_shard,
    plan,
    select,
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
    task_row,
    unrecorded,
    write_table,
)
from nst_batch.weights import WeightsError

if TYPE_CHECKING:  # a run with nothing to do imports neither: torch is for optimizing
    from nst_batch.progress import ConsoleEvents
    from nst_batch.runner import RunStats

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the output; try again later
CUDA_GRAPHS_VARIABLE = "NST_BATCH_CUDA_GRAPHS"  # 0: evaluate eagerly on CUDA too
TOP_LEVEL_FLAGS = ("--help", "-h", "--version")


class ManifestGroup(click.Group):
    """`nst-batch MANIFEST` runs it; `nst-batch report MANIFEST` and the like are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if first is not None and first not in self.commands and first not in TOP_LEVEL_FLAGS:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _fail(message: str) -> click.ClickException:
    return _UsageError(message)


class _UsageError(click.ClickException):
    """A ClickException with exit code 2: usage, manifest or weights error, nothing ran."""

    exit_code = EXIT_USAGE


def _load(manifest: str, overrides: tuple[str, ...], devices: str | None) -> Manifest:
    try:
        loaded = load_manifest(manifest, overrides)
        if devices is not None:
            from dataclasses import replace

            loaded = replace(loaded, devices=parse_devices(devices, "--devices"))
        return loaded
    except ManifestError as exc:
        raise _fail(str(exc)) from None


def _plan(manifest: Manifest, files: FileCache) -> list[Task]:
    try:
        return plan(manifest, files)
    except WeightsError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{manifest.path}: cannot read {exc.filename}: {exc.strerror}") from None


def _up_to_date_check(force: bool, files: FileCache) -> Callable[[Task], bool]:
    if force:
        return lambda task: False
    return lambda task: up_to_date(task, files)


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


def _raise_interrupted(signum: int, frame: object) -> None:
    from nst_batch.runner import Interrupted

    raise Interrupted(signum)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


@click.group(cls=ManifestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="nst-batch")
def main() -> None:
    """Regenerate a neural-style-transfer gallery: every content image in every style.

    \b
      nst-batch MANIFEST [OPTIONS]     run the gallery (only what changed)
      nst-batch report MANIFEST        merge results into <output>/results.csv
      nst-batch show OUTPUT_IMAGE      what an output was made from and with

    \b
    Example:
      nst-batch jobs/gallery.yaml --dry-run        what would run (-v: and why)
      nst-batch jobs/gallery.yaml                  run it; open <output>/index.html
      nst-batch jobs/gallery.yaml --set params.style_weight=50     try a setting

    Exit codes: 0 all done or up to date, 1 some task failed (the rest ran),
    2 usage, manifest or weights error (nothing ran), 75 another run holds the
    output, 130/143 stopped by SIGINT/SIGTERM.

    The manifest reference, GPUs, clusters and reliability: README.md and docs/
    in the source tree.
    """


@main.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--devices", help="auto, cpu, cuda:0,cuda:1 or cpu,cpu (overrides the manifest).")
@click.option("--force", is_flag=True, help="Redo every task, even those up to date.")
@click.option("--dry-run", is_flag=True, help="Print what would run and what is up to date.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a manifest value, e.g. --set params.style_weight=20 (repeatable).",
)
@click.option(
    "-q",
    "--quiet",
    count=True,
    help="Only errors and the summary (--dry-run: only what would run).",
)
@click.option(
    "-v", "--verbose", count=True, help="Print each task's losses as it runs (--dry-run: and why)."
)
@click.option(
    "--print-every",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="With -v, print losses every N steps.",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Run the K-th of N disjoint shares of the tasks (default in a Slurm job array: "
    "from the task's position in the array).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="KEY=GLOB",
    help="Only the tasks whose content, style or variant name matches GLOB, e.g. "
    "--only 'content=chel*' (repeatable: one key's globs OR, different keys AND).",
)
def run_command(
    manifest: str,
    devices: str | None,
    force: bool,
    dry_run: bool,
    overrides: tuple[str, ...],
    quiet: int,
    verbose: int,
    print_every: int,
    shard: str | None,
    only: tuple[str, ...],
) -> None:
    """Run the gallery described by MANIFEST (YAML): only the tasks whose inputs or
    settings changed.

    \b
    A manifest, my photos x my paintings:
      output: out/gallery
      content: photos/
      style: paintings/
      params: {size: 512, style_weight: 50}

    \b
    Examples:
      nst-batch run m.yaml --dry-run -v       (-v: why each task would run)
      nst-batch run m.yaml --only 'content=chel*' --only style=starry_night
      nst-batch run m.yaml --set params.steps=500 -v
      nst-batch run m.yaml --devices cuda:0,cuda:1
      nst-batch run m.yaml --shard 2/4        (in a Slurm array: automatic)

    Every key is in docs/manifest.md; exit codes in nst-batch --help.
    """
    with _without_collection():
        loaded = _load(manifest, overrides, devices)
        share = _shard(shard)
        files = filecache.load(loaded.output, share)  # read here; only a run writes it back
        whole = _plan(loaded, files)
        # Shard the whole plan, then take the subset: a task's shard never depends on --only,
        # so each shard's lock and temporaries stay its own (see docs/clusters.md).
        tasks = whole if share is None else shard_tasks(whole, *share)
        if only:
            tasks = _only(whole, tasks, only)
        todo, fresh = split(tasks, _up_to_date_check(force, files))
    if dry_run:
        where = f" in shard {share[0]}/{share[1]}" if share else ""
        if only:
            where += f" matching --only (of {len(whole)} planned)"
        _dry_run(loaded, tasks, todo, fresh, force, verbose - quiet)
        click.echo(f"{len(todo)} to run, {len(fresh)} up to date, {len(tasks)} in all{where}")
        return
    sys.exit(_run(loaded, whole, todo, fresh, files, verbose - quiet, print_every, share, force))


def _only(whole: list[Task], tasks: list[Task], values: tuple[str, ...]) -> list[Task]:
    """The tasks of `tasks` that --only selects; its globs are checked against the whole plan."""
    try:
        chosen = {id(task) for task in select(whole, parse_only(values))}
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return [task for task in tasks if id(task) in chosen]


def _dry_run(
    manifest: Manifest,
    tasks: list[Task],
    todo: list[Task],
    fresh: list[Task],
    force: bool,
    verbosity: int,
) -> None:
    """A line per task that would run, in plan order, and under it why; -v lists the
    up-to-date tasks too (else the last line counts them); -q leaves out the reasons."""
    fresh_ids = {id(task) for task in fresh}
    why = _reasons(manifest, todo, force) if verbosity >= 0 else {}
    for task in tasks:
        current = id(task) in fresh_ids
        if current and verbosity <= 0:
            continue
        state = "up to date" if current else "would run"
        click.echo(f"{state:>10}  {task.label}  ->  {task.relative_output}")
        for reason in why.get(id(task), ()):
            click.echo(f"{'':12}{reason}")


def _reasons(manifest: Manifest, tasks: list[Task], force: bool) -> dict[int, list[str]]:
    """Why each task would run, by id(task): its output's recorded recipe against its own,
    and its latest result in the output folder."""
    from nst_batch.images import read_metadata

    try:
        rows = merge(layout.results_files(manifest.output))
    except ResultsError as exc:
        raise _fail(str(exc)) from None
    latest = {(r.content, r.style, r.variant): r for r in rows}
    found = {}
    for task in tasks:
        metadata = read_metadata(task.output) if task.output.is_file() else None
        row = latest.get((task.content.name, task.style.name, task.variant.name))
        found[id(task)] = reasons(task, metadata, row, force=force)
    return found


def _shard(option: str | None) -> Share:
    """--shard K/N, else this Slurm array task's share, else None (everything)."""
    try:
        return parse_shard(option) if option is not None else slurm_shard(os.environ)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _run(
    manifest: Manifest,
    whole: list[Task],
    todo: list[Task],
    fresh: list[Task],
    files: FileCache,
    verbosity: int,
    every: int,
    share: Share,
    force: bool = False,
) -> int:
    """Run `todo` and record what is up to date; `whole` is the plan (the page shows it)."""
    start = time.perf_counter()
    output = manifest.output
    results = layout.results_file(output, share)
    if output.exists() and not output.is_dir():
        raise _fail(f"output {output} is a file, not a folder; choose another 'output'")
    _check_output_folder(manifest, todo, share)
    if todo:  # a device or weights problem stops the run before anything is written
        from nst_batch.runner import DeviceError, resolve_devices
        from nst_batch.vgg import load_weights

        try:
            resolve_devices(manifest.devices)
            load_weights(manifest.weights)
        except (DeviceError, WeightsError) as exc:
            raise _fail(str(exc)) from None
    try:
        output.mkdir(parents=True, exist_ok=True)
        with layout.hold(output, share):
            return _run_locked(
                manifest, whole, todo, fresh, files, verbosity, every, share, results, start, force
            )
    except Locked as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_LOCKED
    except (UnsafeWrite, ResultsError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:  # unwritable folder, disk full: finished outputs stay
        raise _fail(f"cannot write to the output folder {output}: {exc.strerror}") from None


def _check_output_folder(manifest: Manifest, todo: list[Task], share: Share) -> None:
    """Exit 2 before any work if a write would pass a link or the results file is not ours.
    Up-to-date outputs are only read: the outputs and curves checked are those of `todo`."""
    output = manifest.output
    ours = [
        layout.results_file(output, share),
        layout.lock_file(output, None),
        layout.lock_file(output, share),
        output / layout.PAGE,
        output / layout.COMPARE,
        output / layout.SHEET,
        output / layout.PAGES / "x.html",
        layout.gallery_record(output),
        output / layout.THUMBS / "outputs",
        layout.checkpoints_folder(output) / "x.pt",
        layout.file_cache(output, share),
    ]
    outputs = [path for task in todo for path in (task.output, layout.curve_path(task.output))]
    try:
        layout.check_writable(output, [*ours, *outputs])
        check_file(layout.results_file(output, share))
    except (UnsafeWrite, ResultsError) as exc:
        raise _fail(str(exc)) from None


def _run_locked(
    manifest: Manifest,
    whole: list[Task],
    todo: list[Task],
    fresh: list[Task],
    files: FileCache,
    verbosity: int,
    every: int,
    share: Share,
    results: Path,
    start: float,
    force: bool,
) -> int:
    from nst_batch.progress import ConsoleEvents

    output = manifest.output
    label = f"{share[0]}/{share[1]}" if share else ""
    _remove_stale_temporaries(output, todo, share)
    # A whole run holds the folder: checkpoints of outputs the plan no longer has go.
    orphans = 0 if share else _remove_orphan_checkpoints(output, whole)
    # An up-to-date task gets a `skipped` row only where the results do not already record
    # it done with its key: a rerun with nothing to do appends nothing.
    merged = merge(layout.results_files(output))
    skips = unrecorded(fresh, merged)
    events = ConsoleEvents(len(todo), len(fresh), verbosity, print_every=every)
    outcome = None
    if todo or skips:
        with ResultsWriter(results, output) as writer:  # errors are reported by the caller
            writer.write_all([task_row(task, "skipped", label) for task in skips])
            if todo:
                outcome = _optimize(manifest, todo, writer, events, every, share, force)
    events.close()
    if isinstance(outcome, int):  # stopped by a signal: the message is out, nothing more
        return outcome
    _remember(files, output, todo, share)
    if share is None:  # a whole run: checkpoints of finished galleries leave no folder
        layout.remove_empty_state(output)
    if outcome is not None and outcome.fatal:
        click.echo(f"Error: {outcome.fatal}", err=True)
        return EXIT_USAGE
    done, failed, interrupted = (
        (outcome.done, outcome.failed, outcome.interrupted) if outcome else (0, 0, 0)
    )
    elapsed = time.perf_counter() - start
    click.echo(
        f"{len(todo) + len(fresh)} tasks{' in shard ' + label if label else ''}: "
        f"{done} done, {len(fresh)} skipped, {failed} failed{_interrupted(interrupted)} "
        f"in {_duration(elapsed)} "
        f"({outcome.target_computations if outcome else 0} style target computations)\n"
        f"outputs: {output}\nresults: {results}",
        err=verbosity < 0,
    )
    if orphans:
        click.echo(
            f"removed {orphans} checkpoint{'s' * (orphans != 1)} of tasks no longer in the plan",
            err=verbosity < 0,
        )
    for (size, mode, batch), peak in sorted(outcome.peak_memory.items() if outcome else ()):
        click.echo(
            f"peak GPU memory at {size} px, {mode}, batch {batch}: {peak / 2**30:.2f} GiB",
            err=verbosity < 0,
        )
    # A shard (or --only) runs part of the plan; the page shows the whole gallery.
    # With nothing written, the results read above are still the results: no second read.
    same = None if todo or skips else merged
    _write_gallery(manifest, whole, files, err=verbosity < 0, rows=same)
    return EXIT_FAILED if failed or interrupted else EXIT_OK


def _interrupted(count: int) -> str:
    """', 2 interrupted (saved as checkpoints; rerun to finish them)', or nothing."""
    return f", {count} interrupted (saved as checkpoints; rerun to finish them)" if count else ""


def _optimize(
    manifest: Manifest,
    todo: list[Task],
    writer: ResultsWriter,
    events: ConsoleEvents,
    every: int,
    share: Share,
    force: bool,
) -> RunStats | int:
    """Run the tasks to do on the manifest's devices: their stats, or the exit code of a
    stop by SIGTERM or SIGINT (the tasks in flight are recorded and saved as checkpoints).
    The only part of a run that needs torch."""
    from nst_batch.runner import Interrupted, RunConfig, resolve_devices, run_tasks

    # SIGTERM: Slurm preemption or time limit, kill; SIGINT: Ctrl-C, also when started
    # in the background, where the shell would have it ignored.
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        config = RunConfig(
            devices=tuple(resolve_devices(manifest.devices, manifest.workers_per_device)),
            batch_size=manifest.batch_size,
            compile=manifest.compile,
            cuda_graphs=os.environ.get(CUDA_GRAPHS_VARIABLE, "1") != "0",
            report_every=min(every, 10),
            shard=share,
            checkpoint_every=manifest.checkpoint_every,
            resume=not force,
        )
        return run_tasks(todo, config, writer, events)
    except (KeyboardInterrupt, Interrupted) as exc:
        events.close()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        click.echo(
            f"interrupted by {signal.Signals(signum).name}: finished outputs are kept, the tasks "
            f"in flight are recorded as interrupted in {writer.path} and saved as checkpoints; "
            "rerun to finish them from there",
            err=True,
        )
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _remember(files: FileCache, output: Path, made: list[Task], share: Share) -> None:
    """Keep what this run learned of its files for the next one: the input hashes and the
    keys of the outputs, those it made read back once. The cache only saves reading, so one
    that cannot be written costs a warning."""
    for task in made:
        files.output_key(task.output, task.relative_output)
    try:
        filecache.save(files, output, share)
    except (OSError, UnsafeWrite) as exc:
        click.echo(f"warning: cannot write the file cache in {output}: {exc}", err=True)


def _remove_stale_temporaries(output: Path, tasks: list[Task], share: Share) -> None:
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


def _write_gallery(
    manifest: Manifest,
    tasks: list[Task],
    files: FileCache,
    err: bool,
    quiet: bool = False,
    rows: list[ResultRow] | None = None,
) -> None:
    """Rebuild the gallery pages, contact sheets and animations of the plan `tasks` from every
    results file in the output (or `rows`, those files merged already) and the outputs on
    disk, whose keys `files` knows.

    A gallery that cannot be written costs a warning, not the run's exit code: the outputs
    and results it would show are safe on disk, and `nst-batch report` writes it again.
    Each file that failed gets a warning with its cause; the `gallery:` line names them.
    """
    from nst_batch.gallery import write_gallery
    from nst_batch.images import ImageError

    page = manifest.output / layout.PAGE
    try:
        if rows is None:
            rows = merge(layout.results_files(manifest.output))
        written = write_gallery(manifest, tasks, rows, files)
    except (OSError, ImageError, WeightsError, UnsafeWrite, ResultsError) as exc:
        click.echo(f"warning: cannot write the gallery in {manifest.output}: {exc}", err=True)
        if not quiet:
            click.echo(f"gallery: {page} not written (see the warning above)", err=err)
        return
    failures = written.failures
    for failure in failures[:_SHOWN_FAILURES]:
        click.echo(f"warning: gallery: cannot write {failure.what}: {failure.why}", err=True)
    if len(failures) > _SHOWN_FAILURES:
        click.echo(f"warning: gallery: and {len(failures) - _SHOWN_FAILURES} more", err=True)
    if not quiet:
        failed = ", ".join(failure.what for failure in failures[:_SHOWN_FAILURES])
        if len(failures) > _SHOWN_FAILURES:
            failed += f" and {len(failures) - _SHOWN_FAILURES} more"
        note = f"; not written: {failed} (see the warnings above)" if failed else ""
        click.echo(f"gallery: {written.page}{note}", err=err)


_SHOWN_FAILURES = 10  # the gallery's files that failed, named one by one; then a count


@main.command("report")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for run.")
@click.option("--only", "only", multiple=True, metavar="KEY=GLOB", help="As for run.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged view as one JSON object.")
@click.option("-q", "--quiet", count=True, help="Only the counts and the failed tasks.")
@click.option("-v", "--verbose", count=True, help="Every task with its state.")
def report_command(
    manifest: str,
    overrides: tuple[str, ...],
    only: tuple[str, ...],
    as_json: bool,
    quiet: int,
    verbose: int,
) -> None:
    """Merge the results on disk into <output>/results.csv, summarize them, rebuild the gallery.

    A task counts as done only when its latest result was made with the settings the
    manifest has now (same task key); older results are listed as outdated. Rows of tasks
    outside the current plan (another --set, say) are kept. Waits for no run: while one
    holds the output folder, report exits 75 and changes nothing.

    Exits 1 when a task of the plan failed (its latest result, made with its current
    key), listing each with its reason. --json prints counts by state and every task
    (content, style, variant, output, state, status, losses, steps, seconds, error, key).
    """
    with _without_collection():
        loaded = _load(manifest, overrides, None)
        known = filecache.load(loaded.output, None)
        whole = _plan(loaded, known)
    tasks = _only(whole, whole, only) if only else whole
    verbosity = verbose - quiet
    output = loaded.output
    if output.exists() and not output.is_dir():
        raise _fail(f"output {output} is a file, not a folder; choose another 'output'")
    if not output.is_dir():
        _summarize(tasks, [], verbosity, as_json)
        if not as_json and verbosity >= 0:
            click.echo(f"no results yet in {output}")
        return
    try:
        with layout.hold(output, None):
            _remove_stale_temporaries(output, whole, None)
            files = layout.results_files(output)
            rows = merge(files)
            results = layout.results_file(output, None)
            if files:  # shard files stay as they are: each is its shard's own attempt log
                write_table(rows, results, output)
            failed = _summarize(tasks, rows, verbosity, as_json)
            quiet_now = as_json or verbosity < 0
            if not quiet_now:
                click.echo(f"results: {results}" if files else f"no results yet in {output}")
            _write_gallery(loaded, whole, known, err=False, quiet=quiet_now)
    except Locked as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except (UnsafeWrite, ResultsError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write to the output folder {output}: {exc.strerror}") from None
    if failed:
        sys.exit(EXIT_FAILED)


_STATE_WORDS = {"pending": "not yet run"}  # a state as report prints it, when not its name


def _summarize(
    tasks: list[Task], rows: list[ResultRow], verbosity: int = 0, as_json: bool = False
) -> int:
    """Counts of the plan's tasks by their state against the results (the page's cells),
    and the tasks worth a look (-v: every task); the number of failed tasks."""
    from nst_batch.gallery.grid import STATES, state

    latest = {(r.content, r.style, r.variant): r for r in rows}
    found = [latest.get((t.content.name, t.style.name, t.variant.name)) for t in tasks]
    states = [state(t, row) for t, row in zip(tasks, found, strict=True)]
    count = {name: states.count(name) for name in STATES if name != "missing"}
    if as_json:
        view = {
            "total": len(tasks),
            "counts": count,
            "tasks": [task_json(*each) for each in zip(tasks, states, found, strict=True)],
        }
        click.echo(json.dumps(view, indent=2))
        return count["failed"]
    click.echo(
        f"{len(tasks)} tasks planned: {count['done']} done, "
        f"{count['failed']} failed, {count['interrupted']} interrupted, "
        f"{count['outdated']} outdated, {count['pending']} not yet run"
    )
    listed = {"failed"} if verbosity < 0 else {"failed", "interrupted", "pending", "outdated"}
    # By kind, the failures first (plan order within); -v: every task in plan order.
    order = ("failed", "interrupted", "pending", "outdated") if verbosity <= 0 else ("every",)
    for kind in order:
        for task, now, row in zip(tasks, states, found, strict=True):
            if (now == kind and now in listed) or kind == "every":
                label = f"{_STATE_WORDS.get(now, now)}:"
                why = (
                    f": {row.error}" if row is not None and now != "outdated" and row.error else ""
                )
                click.echo(f"  {label:<12} {task.label}{why}")
    return count["failed"]


@main.command("show")
@click.argument("image", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
def show_command(image: str, as_json: bool) -> None:
    """What an output IMAGE was made from and with, from its metadata: its key, inputs,
    effective settings, losses, steps, time, device, date and nst-batch version.

    \b
    Example:
      nst-batch show out/gallery/chelsea__starry_night.jpg
    """
    from nst_batch.images import oriented_size, read_metadata

    path = Path(image)
    if not path.exists():
        raise _fail(f"{layout.display(image)}: no such file")
    if path.is_dir():
        raise _fail(f"{layout.display(image)} is a folder, not an image")
    if oriented_size(path) is None:
        raise _fail(f"{layout.display(image)} is not an image nst-batch can read")
    metadata = read_metadata(path)
    if layout.KEY_METADATA not in metadata:
        raise _fail(
            f"{layout.display(image)} has no nst-batch metadata: it was not made by nst-batch, "
            "or a tool that rewrote it dropped its metadata"
        )
    info = made_with(path, metadata)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for name, value in shown(info):
        click.echo(f"{name:<11}{value}".rstrip())
