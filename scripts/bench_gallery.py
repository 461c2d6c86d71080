"""A 2x2 gallery run by nst-batch once, against one nst-batch process per pair.

The per-pair run is what a user of a single-image script does: every pair pays for
process start, imports, the model and the style targets again. Both runs happen
here, side by side, at each size. Then, inside one in-process batch run, the share
of each task's time spent outside its optimization steps (load, targets, save).

    python scripts/bench_gallery.py [--sizes 64 128] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CONTENTS = [EXAMPLES / "content" / "chelsea.png", EXAMPLES / "content" / "coffee.png"]
STYLES = [EXAMPLES / "style" / "starry_night.jpg", EXAMPLES / "style" / "the_scream.jpg"]
NST_BATCH = [sys.executable, "-m", "nst_batch"]


def write_manifest(
    folder: Path, name: str, contents: list[Path], styles: list[Path], size: int, steps: int
) -> Path:
    path = folder / f"{name}.yaml"
    doc = {
        "output": f"out-{name}",
        "content": [str(p) for p in contents],
        "style": [str(p) for p in styles],
        "devices": "cpu",
        "params": {"size": size, "steps": steps},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_seconds(repeats: int, manifests: list[Path]) -> float:
    """Median over repeats of the time to run each manifest in its own nst-batch process."""
    runs = [
        sum(timed([*NST_BATCH, str(m), "--force", "-q"]) for m in manifests) for _ in range(repeats)
    ]
    return statistics.median(runs)


def overhead_share(manifest: Path) -> tuple[float, float]:
    """(share of task time outside optimization, mean task seconds) of an in-process run."""
    from nst_batch.manifest import load_manifest
    from nst_batch.plan import plan
    from nst_batch.results import ResultsWriter
    from nst_batch.runner import RunConfig, run_tasks

    class Quiet:
        def task_started(self, *_: object) -> None: ...
        def step(self, *_: object) -> None: ...
        def task_finished(self, *_: object) -> None: ...

    loaded = load_manifest(manifest)
    tasks = plan(loaded)
    loaded.output.mkdir(parents=True, exist_ok=True)
    with ResultsWriter(loaded.output / "results.csv") as writer:
        stats = run_tasks(tasks, RunConfig(devices=("cpu",)), writer, Quiet())
    outside = stats.task_seconds - stats.optimize_seconds
    return outside / stats.task_seconds, stats.task_seconds / len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"2x2 gallery, {args.steps} steps, CPU; seconds (lower is better)")
        print(f"{'size':>6} {'batch':>8} {'per pair':>9} {'ratio':>6}")
        for size in args.sizes:
            batch = write_manifest(folder, f"batch{size}", CONTENTS, STYLES, size, args.steps)
            batch_s = median_seconds(args.repeats, [batch])
            pairs = [
                write_manifest(folder, f"p{size}_{i}{j}", [content], [style], size, args.steps)
                for i, content in enumerate(CONTENTS)
                for j, style in enumerate(STYLES)
            ]
            pair_s = median_seconds(args.repeats, pairs)
            print(f"{size:>6} {batch_s:>8.1f} {pair_s:>9.1f} {pair_s / batch_s:>5.2f}x")
        size = max(args.sizes)
        manifest = write_manifest(folder, f"inproc{size}", CONTENTS, STYLES, size, args.steps)
        share, per_task = overhead_share(manifest)
        print(
            f"in-process batch at {size} px: {per_task:.2f} s per task, "
            f"{share:.1%} of it outside the optimization steps (load, targets, save)"
        )


if __name__ == "__main__":
    main()
