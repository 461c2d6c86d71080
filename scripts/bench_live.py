"""Live gallery benchmark: what rewriting the gallery during a run costs the run.

    .venv/bin/python scripts/bench_live.py [--size 128] [--steps 100] [--rounds 2]

Runs every bundled photo in every bundled painting (examples/images: 4 x 4) from scratch,
in this process, with the page rewritten as tasks finish (session.LiveGallery, as every
whole run does) and with those rewrites turned off, alternating, `--rounds` times each,
each into a fresh output folder. Prints each run's wall time and, for the live runs, the
seconds the rewrites took and how many there were; then the ratio of the mean live run to
the mean run without (noisier than the rewrites' own share of the run). The gallery
written at the end of a run is the same in both. Target on the CPU at 128 px: at most 2%.
Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from nst_batch import session

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    spent: list[float] = []  # seconds of each live rewrite of the current run
    original = session.LiveGallery._write

    def timed(self: session.LiveGallery) -> None:
        began = time.perf_counter()
        original(self)
        spent.append(time.perf_counter() - began)

    def skipped(self: Any) -> None:
        pass

    walls: dict[str, list[float]] = {"live": [], "off": []}
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for mode in ("live", "off") if round_ % 2 == 0 else ("off", "live"):
                folder = Path(work) / f"{mode}-{round_}"
                folder.mkdir()
                manifest = folder / "gallery.yaml"
                doc = {
                    "output": "out",
                    "content": str(IMAGES / "content"),
                    "style": str(IMAGES / "style"),
                    "devices": ["cpu"],
                    "params": {"size": args.size, "steps": args.steps},
                }
                manifest.write_text(yaml.safe_dump(doc))
                spent.clear()
                session.LiveGallery._write = timed if mode == "live" else skipped  # type: ignore[method-assign]
                began = time.perf_counter()
                summary = session.run(manifest)
                wall = time.perf_counter() - began
                session.LiveGallery._write = original  # type: ignore[method-assign]
                assert summary.done == summary.tasks, summary
                walls[mode].append(wall)
                extra = f", {len(spent)} rewrites in {sum(spent):.2f} s" if mode == "live" else ""
                print(f"{mode:4} round {round_ + 1}: {summary.done} tasks in {wall:.1f} s{extra}")
    live, off = statistics.mean(walls["live"]), statistics.mean(walls["off"])
    print(f"live / off: {live / off:.3f}x ({live:.1f} s against {off:.1f} s, mean of each)")


if __name__ == "__main__":
    main()
