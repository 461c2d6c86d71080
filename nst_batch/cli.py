"""The `nst-batch` command: options, messages and exit codes over `session`, which owns a
run's lifecycle. Exit codes: see `main`'s help and docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nst_batch import __version__, layout, session
from nst_batch.explain import made_with, shown, task_json
from nst_batch.layout import Locked
from nst_batch.session import (
    GalleryWritten,
    Interrupted,
    Prepared,
    ReportSummary,
    RunSummary,
    SessionError,
    WriteFailed,
)
from nst_batch.task import STATE_WORDS

if TYPE_CHECKING:  # a run with nothing to do imports no torch
    from nst_batch.progress import ConsoleEvents

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_WRITE = 74  # EX_IOERR: the output folder failed during the run (a full disk)
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the output; try again later
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
      nst-batch clean MANIFEST         files the manifest no longer makes (--yes: remove)
      nst-batch accept MANIFEST        take existing outputs as made with current settings

    \b
    Example:
      nst-batch jobs/gallery.yaml --dry-run        what would run, and why
      nst-batch jobs/gallery.yaml                  run it; open <output>/index.html
      nst-batch jobs/gallery.yaml --set params.style_weight=50     try a setting

    Exit codes: 0 all done or up to date, 1 some task failed (the rest ran),
    2 usage, manifest or weights error (nothing ran), or a fault no task could get
    past (a worker's fatal error: the tasks finished before it are kept), 74 the
    output folder could not be written during the run (a full disk: finished outputs
    and rows are kept), 75 another run holds the output, 130/143 stopped by
    SIGINT/SIGTERM.

    The manifest reference, GPUs, clusters and reliability: README.md and docs/
    in the source tree.
    """


@main.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--devices", help="auto, cpu, cuda:0,cuda:1 or cpu,cpu (overrides the manifest).")
@click.option("--force", is_flag=True, help="Redo every task, even those up to date.")
@click.option("-n", "--dry-run", is_flag=True, help="Print what would run, and why; run nothing.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --dry-run: the plan as one JSON object, each task with its state and reasons.",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help="With --dry-run: exit 1 when some task would run, 0 when all are up to date.",
)
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
    "-v",
    "--verbose",
    count=True,
    help="Print each task's losses as it runs (--dry-run: the up-to-date tasks too).",
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
    as_json: bool,
    exit_code: bool,
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
      nst-batch run m.yaml --dry-run -v       (-v: the up-to-date tasks too)
      nst-batch run m.yaml -n --exit-code -q  (cron: exit 1 when there is work)
      nst-batch run m.yaml --only 'content=chel*' --only style=starry_night
      nst-batch run m.yaml --set params.steps=500 -v
      nst-batch run m.yaml --devices cuda:0,cuda:1
      nst-batch run m.yaml --shard 2/4        (in a Slurm array: automatic)

    Every key is in docs/manifest.md; exit codes in nst-batch --help.
    """
    try:
        prepared = session.prepare(
            manifest, overrides, devices=devices, shard=shard, only=only, force=force
        )
    except SessionError as exc:
        raise _fail(str(exc)) from None
    if (as_json or exit_code) and not dry_run:
        raise _fail("--json and --exit-code go with --dry-run (-n)")
    if prepared.along and not as_json and verbose - quiet >= 0:
        count = len(prepared.along)
        frames = "frame" if count == 1 else "frames"
        click.echo(
            f"note: --only takes {count} earlier {frames} along: a frame starts from the "
            "one before it, made with the current settings",
            err=True,
        )
    if dry_run and as_json:
        click.echo(json.dumps(_plan_json(prepared), indent=2))
    elif dry_run:
        share = prepared.share
        where = f" in shard {share[0]}/{share[1]}" if share else ""
        if only:
            where += f" matching --only (of {len(prepared.whole)} planned)"
        _dry_run(prepared, verbose - quiet)
        click.echo(
            f"{len(prepared.todo)} to run, {len(prepared.fresh)} up to date, "
            f"{len(prepared.tasks)} in all{where}"
        )
    if dry_run:
        sys.exit(EXIT_FAILED if exit_code and prepared.todo else EXIT_OK)
    sys.exit(_run(prepared, verbose - quiet, print_every))


def _plan_json(prepared: Prepared) -> dict[str, object]:
    """The dry run for scripts: counts, and every selected task with its state and reasons."""
    fresh = {id(task) for task in prepared.fresh}
    try:
        why = session.why(prepared)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    share = prepared.share
    return {
        "total": len(prepared.tasks),
        "to_run": len(prepared.todo),
        "up_to_date": len(prepared.fresh),
        "planned": len(prepared.whole),
        "shard": f"{share[0]}/{share[1]}" if share else "",
        "tasks": [
            {
                "content": task.content.name,
                "style": task.style.name,
                "variant": task.variant.name,
                "output": task.relative_output,
                "key": task.key,
                "state": "up to date" if id(task) in fresh else "would run",
                "reasons": why.get(id(task), []),
            }
            for task in prepared.tasks
        ],
    }


def _dry_run(prepared: Prepared, verbosity: int) -> None:
    """A line per task that would run, in plan order, and under it why; -v lists the
    up-to-date tasks too (else the last line counts them); -q leaves out the reasons."""
    fresh_ids = {id(task) for task in prepared.fresh}
    try:
        why = session.why(prepared) if verbosity >= 0 else {}
    except SessionError as exc:
        raise _fail(str(exc)) from None
    for task in prepared.tasks:
        current = id(task) in fresh_ids
        if current and verbosity <= 0:
            continue
        state = "up to date" if current else "would run"
        click.echo(f"{state:>10}  {task.label}  ->  {task.relative_output}")
        for reason in why.get(id(task), ()):
            click.echo(f"{'':12}{reason}")


def _run(prepared: Prepared, verbosity: int, every: int) -> int:
    """Run the prepared gallery with a progress bar; the exit code."""
    from nst_batch.progress import ConsoleEvents

    budget = sum(task.params.steps for task in prepared.todo)
    events = ConsoleEvents(
        len(prepared.todo), len(prepared.fresh), verbosity, print_every=every, steps=budget
    )
    reporter = _Printer(events, verbosity)
    try:
        summary = session.run_prepared(prepared, events, reporter, report_every=min(every, 10))
    except WriteFailed as exc:
        events.close()
        click.echo(f"Error: {exc}", err=True)
        return EXIT_WRITE
    except SessionError as exc:
        raise _fail(str(exc)) from None
    except Locked as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_LOCKED
    except Interrupted as exc:
        events.close()
        results = layout.results_file(prepared.output, prepared.share)
        click.echo(
            f"interrupted by {signal.Signals(exc.signum).name}: finished outputs are kept, the "
            f"tasks in flight are recorded as interrupted in {results} and saved as "
            "checkpoints; rerun to finish them from there",
            err=True,
        )
        return 128 + exc.signum
    finally:
        events.close()
    if summary.fatal:
        return EXIT_USAGE
    return EXIT_FAILED if summary.failed or summary.interrupted else EXIT_OK


class _Printer:
    """session.Reporter for the command line: the summary, warnings and the gallery line."""

    def __init__(self, events: ConsoleEvents | None, verbosity: int, quiet: bool = False) -> None:
        self.events, self.verbosity, self.quiet = events, verbosity, quiet

    def warn(self, message: str) -> None:
        if self.events is not None:
            self.events.close()
        click.echo(f"warning: {message}", err=True)

    def ran(self, summary: RunSummary) -> None:
        if self.events is not None:
            self.events.close()
        if summary.fatal:
            click.echo(f"Error: {summary.fatal}", err=True)
            return
        err = self.verbosity < 0
        shard = f" in shard {summary.shard}" if summary.shard else ""
        click.echo(
            f"{summary.tasks} tasks{shard}: {summary.done} done, {summary.skipped} skipped, "
            f"{summary.failed} failed{_interrupted(summary.interrupted)} "
            f"in {_duration(summary.seconds)} "
            f"({summary.target_computations} style target computations)\n"
            f"outputs: {summary.output}\nresults: {summary.results}",
            err=err,
        )
        orphans = summary.orphans_removed
        if orphans:
            click.echo(
                f"removed {orphans} checkpoint{'s' * (orphans != 1)} of tasks no longer in the "
                "plan",
                err=err,
            )
        for (size, mode, batch), peak in sorted(summary.peak_memory.items()):
            click.echo(
                f"peak GPU memory at {size} px, {mode}, batch {batch}: {peak / 2**30:.2f} GiB",
                err=err,
            )

    def gallery(self, written: GalleryWritten) -> None:
        """Each file that failed gets a warning with its cause; the `gallery:` line names
        them (not printed when quiet)."""
        err = self.verbosity < 0
        if written.error:
            click.echo(f"warning: {written.error}", err=True)
            if not self.quiet:
                click.echo(f"gallery: {written.page} not written (see the warning above)", err=err)
            return
        failures = written.failures
        for what, why in failures[:SHOWN]:
            click.echo(f"warning: gallery: cannot write {what}: {why}", err=True)
        if len(failures) > SHOWN:
            click.echo(f"warning: gallery: and {len(failures) - SHOWN} more", err=True)
        if not self.quiet:
            failed = ", ".join(what for what, _ in failures[:SHOWN])
            if len(failures) > SHOWN:
                failed += f" and {len(failures) - SHOWN} more"
            note = f"; not written: {failed} (see the warnings above)" if failed else ""
            click.echo(f"gallery: {written.page}{note}", err=err)


SHOWN = session.SHOWN_FAILURES


def _interrupted(count: int) -> str:
    """', 2 interrupted (saved as checkpoints; rerun to finish them)', or nothing."""
    return f", {count} interrupted (saved as checkpoints; rerun to finish them)" if count else ""


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
    holds the output folder, report answers from the results recorded so far, says that a
    run is in progress and since when, and writes nothing.

    Exits 1 when a task of the plan failed (its latest result, made with its current
    key), listing each with its reason. --json prints counts by state and every task
    (content, style, variant, output, state, status, losses, steps, seconds, error, key,
    run), and `running` while a run holds the output.
    """
    try:
        prepared = session.prepare(manifest, overrides, only=only, whole=True)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    verbosity = verbose - quiet
    quiet_now = as_json or verbosity < 0
    try:
        summary = session.report_prepared(prepared)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    _summarize(summary, verbosity, as_json)
    if summary.running and not as_json:
        since = ""
        if summary.since is not None:
            started = datetime.fromtimestamp(summary.since, UTC)
            since = f" since {started:%Y-%m-%d %H:%M:%S} UTC"
        click.echo(
            f"a run is in progress{since} ({summary.running.partition(':')[0]}): these are "
            "the results it has recorded so far; nothing was written",
            err=quiet_now,
        )
    if not quiet_now:
        if summary.results is not None:
            click.echo(f"results: {summary.results}")
        else:
            click.echo(f"no results yet in {prepared.output}")
    if summary.gallery is not None:
        _Printer(None, 0, quiet=quiet_now).gallery(summary.gallery)
    if summary.failed:
        sys.exit(EXIT_FAILED)


def _summarize(summary: ReportSummary, verbosity: int = 0, as_json: bool = False) -> None:
    """Counts of the plan's tasks by their state against the results (the page's cells),
    and the tasks worth a look (-v: every task)."""
    count = summary.counts
    found = list(zip(summary.tasks, summary.states, summary.rows, strict=True))
    if as_json:
        view = {
            "total": len(summary.tasks),
            "counts": count,
            "tasks": [task_json(*each) for each in found],
            "running": {"who": summary.running, "since": summary.since}
            if summary.running
            else None,
        }
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(
        f"{len(summary.tasks)} tasks planned: {count['done']} done, "
        f"{count['failed']} failed, {count['interrupted']} interrupted, "
        f"{count['outdated']} outdated, {count['pending']} {STATE_WORDS['pending']}"
    )
    listed = {"failed"} if verbosity < 0 else {"failed", "interrupted", "pending", "outdated"}
    # By kind, the failures first (plan order within); -v: every task in plan order.
    order = ("failed", "interrupted", "pending", "outdated") if verbosity <= 0 else ("every",)
    for kind in order:
        for task, now, row in found:
            if (now == kind and now in listed) or kind == "every":
                label = f"{STATE_WORDS.get(now, now)}:"
                why = (
                    f": {row.error}" if row is not None and now != "outdated" and row.error else ""
                )
                click.echo(f"  {label:<12} {task.label}{why}")


@main.command("accept")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for run.")
@click.option("--only", "only", multiple=True, metavar="KEY=GLOB", help="As for run.")
def accept_command(manifest: str, overrides: tuple[str, ...], only: tuple[str, ...]) -> None:
    """Take the existing outputs as made with the current settings, without making them
    again: after an upgrade changed the algorithm's version, or a change you know does not
    matter. Each output's metadata then records the current key and settings and that it
    was accepted (`nst-batch show` says so), and results.csv gets a `done` row with start
    `accepted`; a rerun calls them up to date. The pixels are not touched.

    \b
    Example:
      nst-batch m.yaml -n --set params.tv_weight=0.001   (would redo every task)
      nst-batch accept m.yaml --set params.tv_weight=0.001 --only style=starry_night

    Exits 1 when a task to do has no output to accept (it needs a run).
    """
    try:
        prepared = session.prepare(manifest, overrides, only=only, sharded=False)
        outcome = session.accept_prepared(prepared)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    except Locked as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    for task in outcome.accepted:
        click.echo(f"  accepted     {task.label}  ->  {task.relative_output}")
    for task, why in outcome.refused:
        click.echo(f"  not accepted {task.label}: {why}")
    count = len(outcome.accepted)
    click.echo(
        f"{count} output{'s' * (count != 1)} accepted as made with the current settings, "
        f"{len(prepared.fresh)} already up to date"
        + (
            f", {len(outcome.refused)} without an output to accept (run them)"
            if outcome.refused
            else ""
        )
        + f"\nresults: {outcome.results}"
    )
    if outcome.refused:
        sys.exit(EXIT_FAILED)


@main.command("clean")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for run.")
@click.option("--yes", is_flag=True, help="Remove the files listed (else only list them).")
def clean_command(manifest: str, overrides: tuple[str, ...], yes: bool) -> None:
    """List the files in the output folder that the manifest no longer makes, and remove
    them with --yes: outputs of a removed content, style or variant, their loss curves,
    snapshots and thumbnails, animations, checkpoints, flow cache entries and the frames
    decoded from a video clip no content entry takes any more.

    Only files nst-batch wrote (by their metadata or their place under .nst-batch/ and
    thumbs/), never an input; nothing while a run holds the output folder (exit 75).

    \b
    Example:
      nst-batch clean m.yaml          what a rerun would leave behind
      nst-batch clean m.yaml --yes    remove it
    """
    try:
        prepared = session.prepare(manifest, overrides, whole=True)
        stale, removed = session.clean_prepared(prepared, remove=yes)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    except Locked as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    root = prepared.output
    for item in stale:
        click.echo(f"  {item.kind:<11}{layout.display(item.path.relative_to(root))}")
    size = sum(item.path.stat().st_size for item in stale if not yes and item.path.exists())
    if yes:
        click.echo(f"removed {removed} file{'s' * (removed != 1)} the manifest no longer makes")
    elif stale:
        click.echo(
            f"{len(stale)} file{'s' * (len(stale) != 1)} ({size / 2**20:.1f} MiB) the manifest "
            "no longer makes; remove them with --yes"
        )
    else:
        click.echo(f"nothing to clean in {root}")


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
    from nst_batch.metadata import KEY_METADATA

    path = Path(image)
    if not path.exists():
        raise _fail(f"{layout.display(image)}: no such file")
    if path.is_dir():
        raise _fail(f"{layout.display(image)} is a folder, not an image")
    if oriented_size(path) is None:
        raise _fail(f"{layout.display(image)} is not an image nst-batch can read")
    metadata = read_metadata(path)
    if KEY_METADATA not in metadata:
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
