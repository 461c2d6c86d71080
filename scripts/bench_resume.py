"""Resume benchmark: one task run uninterrupted, and stopped by SIGTERM halfway then rerun.

    PYTHONPATH=. .venv/bin/python scripts/bench_resume.py [--size 128] [--steps 200]

Prints, side by side: the uninterrupted run's time and loss; the stopped run's time and the
step its checkpoint holds; the rerun's time, the step it resumed from and its loss. Then the
rerun/uninterrupted time ratio (target <= 0.6), the final loss ratio (target within 3%),
and the cost of checkpointing: one save measured at the task's size, 512 px and 1024 px,
and the share of an uninterrupted run that saving every `checkpoint_every` seconds costs
(target < 1%). Run it on a quiet machine: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import csv
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_batch import checkpoint  # noqa: E402
from nst_batch.manifest import DEFAULT_CHECKPOINT_EVERY  # noqa: E402
from nst_batch.stylize import Losses  # noqa: E402

CONTENT = REPO / "examples/images/content/chelsea.png"
STYLE = REPO / "examples/images/style/starry_night.jpg"


def manifest(folder: Path, size: int, steps: int, every: float) -> Path:
    doc = {
        "output": "out",
        "content": [str(CONTENT)],
        "style": [str(STYLE)],
        "params": {"size": size, "steps": steps},
        "devices": "cpu",
        "checkpoint_every": every,
    }
    path = folder / "gallery.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def last_row(folder: Path) -> dict[str, str]:
    with open(folder / "out" / "results.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def run(path: Path, stop_after: float | None = None) -> tuple[float, int]:
    """Wall seconds and exit code of one `nst-batch` run, SIGTERM after `stop_after` s."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_batch", str(path), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if stop_after is not None:
        try:
            process.wait(stop_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    if process.returncode not in (0, 143):
        raise SystemExit(f"nst-batch failed ({process.returncode}):\n{err}")
    return time.perf_counter() - start, process.returncode


def save_cost(size: int, folder: Path, repeats: int = 5) -> float:
    """Seconds of one checkpoint save of a size x (3/4 size) image (history of 1000 steps)."""
    image = torch.rand(1, 3, size * 3 // 4, size)
    losses = Losses(1.0, 1.0, 0.0, 2.0)
    saved = checkpoint.Checkpoint("0" * 24, image, 0, 500, 500, [1.0] * 500, losses, losses, 9.0)
    path = folder / ".nst-batch" / "checkpoints" / f"{size}.pt"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        checkpoint.save(saved, path, folder)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=float, default=DEFAULT_CHECKPOINT_EVERY)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole, stopped = Path(a), Path(b)
        wall, _ = run(manifest(whole, args.size, args.steps, args.every))
        full = last_row(whole)
        path = manifest(stopped, args.size, args.steps, args.every)
        first, code = run(path, stop_after=wall / 2)
        if code != 143:
            raise SystemExit("the stopped run finished before its SIGTERM; use more --steps")
        again, _ = run(path)
        rerun = last_row(stopped)
        costs = {n: save_cost(n, whole) for n in sorted({args.size, 512, 1024})}
    loss_full, loss_rerun = float(full["total_loss"]), float(rerun["total_loss"])
    threads = torch.get_num_threads()
    print(f"{args.size} px, {args.steps} steps, one task on the CPU ({threads} threads)")
    print(f"{'run':<16}{'wall s':>8}{'task s':>8}{'steps':>7}{'resumed':>9}{'loss':>12}")
    print(
        f"{'uninterrupted':<16}{wall:8.1f}{float(full['seconds']):8.1f}{full['steps']:>7}"
        f"{'':>9}{loss_full:12.5g}"
    )
    print(f"{'stopped':<16}{first:8.1f}{'':>8}{'':>7}{'':>9}{'':>12}")
    print(
        f"{'rerun':<16}{again:8.1f}{float(rerun['seconds']):8.1f}{rerun['steps']:>7}"
        f"{rerun['resumed_from']:>9}{loss_rerun:12.5g}"
    )
    task_ratio = float(rerun["seconds"]) / float(full["seconds"])
    print(f"rerun / uninterrupted time: {again / wall:.3f} wall, {task_ratio:.3f} task (<= 0.6)")
    print(f"final loss, rerun / uninterrupted: {loss_rerun / loss_full:.4f} (target within 3%)")
    for n, cost in costs.items():
        print(f"one checkpoint save at {n} px: {cost * 1000:.1f} ms")
    saves = math.floor(float(full["seconds"]) / args.every) if args.every else 0
    overhead = saves * costs[args.size] / float(full["seconds"])
    print(
        f"checkpointing every {args.every:g} s: {saves} saves, {overhead:.3%} of the "
        f"uninterrupted run (target < 1%)"
    )
    for n in (512, 1024):
        print(
            f"  at {n} px: at most {costs[n] / args.every:.3%} of any run's time"
            if args.every
            else ""
        )


if __name__ == "__main__":
    main()
