"""Warm starts: regenerating a gallery after a style_weight change, cold against init: previous.

A 2x2 gallery of the bundled images is made once (style_weight 10), then regenerated after
a change to style_weight 30 three ways, each from a copy of the same first run, one after
the other in this process's children (run nothing else meanwhile):

- cold, full: the usual init (content) with tolerance 0, every step of the budget;
- cold: the usual init with the default tolerance (what a plain rerun does);
- warm: --set params.init=previous, the default tolerance.

Prints each regeneration's wall time, the warm/cold time ratio, and each task's final loss
ratio warm/cold (and cold/cold-full, to show the tolerance does not cut cold runs short).
Target: warm time at most 1/3 of cold, every loss within 2% of cold's.

    .venv/bin/python scripts/bench_warm.py [--size 128] [--steps 300]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nst_batch.results import read_rows

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
COMMAND = [sys.executable, "-m", "nst_batch"]


def run(manifest: Path, *overrides: str) -> float:
    """Seconds of wall time of one `nst-batch` run (which must succeed)."""
    args = [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    subprocess.run([*COMMAND, str(manifest), "-q", *args], check=True)
    return time.perf_counter() - start


def losses(folder: Path) -> dict[tuple[str, str], float]:
    rows = read_rows(folder / "out" / "results.csv")
    return {(r.content, r.style): r.total_loss for r in rows if r.status == "done"}  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        doc = {
            "output": "out",
            "content": [str(IMAGES / "content" / n) for n in ("chelsea.png", "coffee.png")],
            "style": [str(IMAGES / "style" / n) for n in ("starry_night.jpg", "the_scream.jpg")],
            "params": {"size": args.size, "steps": args.steps, "style_weight": 10},
            "devices": "cpu",
        }
        (base / "m.yaml").write_text(yaml.safe_dump(doc))
        print(f"first run: {run(base / 'm.yaml'):.1f} s (style_weight 10)", flush=True)
        ways = {
            "cold, full": ("params.tolerance=0",),
            "cold": (),
            "warm": ("params.init=previous",),
        }
        seconds, finals = {}, {}
        for name, extra in ways.items():
            copy = Path(tmp) / name.replace(", ", "-")
            shutil.copytree(base, copy)
            seconds[name] = run(copy / "m.yaml", "params.style_weight=30", *extra)
            finals[name] = losses(copy)
            print(f"{name:>10}: {seconds[name]:.1f} s", flush=True)
    print(f"warm / cold time: {seconds['warm'] / seconds['cold']:.3f} (target <= 0.333)")
    print(f"warm / cold, full time: {seconds['warm'] / seconds['cold, full']:.3f}")
    worst = 0.0
    for task, cold in sorted(finals["cold"].items()):
        warm, full = finals["warm"][task] / cold, cold / finals["cold, full"][task]
        worst = max(worst, warm)
        print(f"  {' x '.join(task)}: loss warm/cold {warm:.4f}, cold/cold-full {full:.4f}")
    print(f"worst loss ratio warm/cold: {worst:.4f} (target <= 1.02)")


if __name__ == "__main__":
    main()
