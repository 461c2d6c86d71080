"""Scale benchmark: planning, up-to-date reruns and the gallery step at 1,000 to 100,000 tasks.

    PYTHONPATH=. .venv/bin/python scripts/bench_scale.py [--tasks 1000 10000 100000]

For each N it synthesizes N small content images (64x48 PNG, each different) and one style,
with a manifest of N content x 1 style at size 48. Outputs are then made valid cheaply, here:
each output is a small JPEG carrying its task key, as a finished run leaves it, and the
results file gets a `done` row per task. Then, each in a fresh `nst-batch` process, measured
by wall time and peak resident memory (the child's own, from wait4):

- `--dry-run` before any output exists, and again once every output is up to date;
- a first up-to-date rerun, which builds the gallery (thumbnails, pages, sheets) once;
- a second up-to-date rerun: the steady state of a cron job with nothing to do, and the
  same without the gallery step (planning and the up-to-date check alone);
- after one task changes (its output rewritten, a new `done` row), a rerun: the gallery
  step's cost is that rerun's time less the rerun without the gallery step.

Above 10,000 tasks (`--full-above`, default 10,000) only the dry-runs and the up-to-date
path run, as the targets ask: the reruns without the gallery step (the first writes the
file cache), so that no gallery of 100,000 thumbnails is built.

Targets (2-core CPU): 10,000 tasks dry-run <= 3 s and <= 250 MB;
up-to-date rerun of 10,000 tasks <= 5 s (moonshot 2 s); the gallery step after one task
changes <= 1 s; 100,000 tasks dry-run <= 20 s, growing about 10x from 10,000. Run it on a
quiet machine: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_batch.layout import results_file  # noqa: E402
from nst_batch.manifest import load_manifest  # noqa: E402
from nst_batch.metadata import KEY_METADATA  # noqa: E402
from nst_batch.plan import Task, plan  # noqa: E402
from nst_batch.results import ResultRow, ResultsWriter, task_row, write_table  # noqa: E402

EXIF_IMAGE_DESCRIPTION = 0x010E  # where nst-batch keeps a JPEG output's metadata


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_mb: float


def synthesize(folder: Path, count: int) -> Path:
    """`count` different 64x48 PNGs under folder/content and one style; the manifest's path."""
    contents = folder / "content"
    contents.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (64, 48), (i % 251, (i // 251) % 251, 90))
        image.putpixel((i % 64, (i // 64) % 48), (255, 255, 255))
        image.save(contents / f"c{i:06d}.png", compress_level=1)
    style = folder / "style.png"
    Image.effect_mandelbrot((64, 64), (-2.0, -1.5, 1.0, 1.5), 50).convert("RGB").save(style)
    doc = {
        "output": "out",
        "content": ["content"],
        "style": ["style.png"],
        "params": {"size": 48, "steps": 2},
        "devices": "cpu",
        "max_tasks": max(count, 20_000),
    }
    path = folder / "gallery.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def write_output(task: Task, shade: int) -> None:
    """A valid output for `task`: a small JPEG recording the task's key, as runs save them."""
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = json.dumps({KEY_METADATA: task.key})
    task.output.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 36), (shade, 120, 60)).save(task.output, exif=exif.tobytes())


def done_row(task: Task, loss: float) -> ResultRow:
    return task_row(
        task,
        "done",
        "",
        content_loss=loss / 2,
        style_loss=loss / 2,
        tv_loss=0.0,
        total_loss=loss,
        steps=2,
        start="content",
        seconds=0.1,
        device="cpu",
        worker="cpu#0",
    )


def finish_every_task(manifest_path: Path) -> list[Task]:
    """Outputs and `done` rows for the whole plan, as a finished run leaves them."""
    manifest = load_manifest(manifest_path)
    tasks = plan(manifest)
    for task in tasks:
        write_output(task, 40)
    rows = [done_row(task, 1000.0 + i) for i, task in enumerate(tasks)]
    write_table(rows, results_file(manifest.output, None), manifest.output)
    return tasks


def change_one_task(manifest_path: Path, task: Task) -> None:
    """One task changes: its output is rewritten and a new `done` row records new losses."""
    time.sleep(0.01)  # a new mtime on coarse-grained file systems
    write_output(task, 200)
    manifest = load_manifest(manifest_path)
    with ResultsWriter(results_file(manifest.output, None), manifest.output) as writer:
        writer.write(done_row(task, 5.0))


# nst-batch with the gallery step left out: what planning and the up-to-date check cost alone.
WITHOUT_GALLERY = (
    "import sys; from pathlib import Path; from nst_batch import cli, session; "
    "session.write_gallery = lambda *a, **k: session.GalleryWritten(Path('left out')); "
    "cli.main(sys.argv[1:])"
)


def measure(manifest_path: Path, *options: str, gallery: bool = True) -> Measure:
    """Wall time and peak memory of one `nst-batch` process; exits on a failure."""
    start = time.perf_counter()
    command = ["-m", "nst_batch"] if gallery else ["-c", WITHOUT_GALLERY]
    process = subprocess.Popen(
        [sys.executable, *command, str(manifest_path), "-q", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=manifest_path.parent,
    )
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"nst-batch {' '.join(options)} failed ({process.returncode}):\n{err}")
    return Measure(seconds, usage.ru_maxrss / 1024)


def bench(count: int, full: bool) -> dict[str, Measure]:
    with tempfile.TemporaryDirectory() as tmp:
        manifest_path = synthesize(Path(tmp), count)
        found = {"dry-run, nothing done": measure(manifest_path, "--dry-run")}
        tasks = finish_every_task(manifest_path)
        found["dry-run, all up to date"] = measure(manifest_path, "--dry-run")
        if not full:  # the up-to-date path alone: no gallery of 100,000 thumbnails
            found["first rerun, no gallery"] = measure(manifest_path, gallery=False)
            found["up-to-date rerun, no gallery"] = measure(manifest_path, gallery=False)
            return found
        found["first rerun (gallery built)"] = measure(manifest_path)
        found["up-to-date rerun"] = measure(manifest_path)
        found["... without the gallery step"] = measure(manifest_path, gallery=False)
        if full:
            change_one_task(manifest_path, tasks[len(tasks) // 2])
            found["rerun, one task changed"] = measure(manifest_path)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--full-above", type=int, default=10_000, dest="full_limit")
    args = parser.parse_args()
    results = {n: bench(n, n <= args.full_limit) for n in args.tasks}
    print(f"{'tasks':>8}  {'step':<30}{'wall s':>8}{'peak MB':>9}")
    for n, found in results.items():
        for step, m in found.items():
            print(f"{n:>8}  {step:<30}{m.seconds:8.2f}{m.peak_mb:9.0f}")
        if "rerun, one task changed" in found:
            alone = found["... without the gallery step"].seconds
            gallery = found["rerun, one task changed"].seconds - alone
            print(f"{n:>8}  {'gallery step, one task changed':<30}{gallery:8.2f}")
    if 10_000 in results and 100_000 in results:
        pairs = [
            ("dry-run, nothing done",) * 2,
            ("dry-run, all up to date",) * 2,
            ("... without the gallery step", "up-to-date rerun, no gallery"),
        ]
        for step, big in pairs:
            growth = results[100_000][big].seconds / results[10_000][step].seconds
            print(f"growth 10,000 -> 100,000 tasks, {step}: {growth:.1f}x (goal about 10x)")


if __name__ == "__main__":
    main()
