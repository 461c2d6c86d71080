"""One gallery with 1 worker and with N workers, side by side, and the ratio.

On a CPU the N workers split the cores (each gets cores/N threads), so expect a ratio
near 1: the point is that worker processes cost nothing. On a machine with several
GPUs, compare `--devices cuda:0` with `--devices cuda:0,cuda:1,...`.

    python scripts/bench_workers.py [--size 128] [--steps 100] [--devices cpu,cpu]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--devices", default="cpu,cpu", help="the N-worker run's devices")
    args = parser.parse_args()
    single = args.devices.split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "gallery.yaml"
        manifest.write_text(
            yaml.safe_dump(
                {
                    "output": "out",
                    "content": [
                        str(EXAMPLES / "content" / n) for n in ("chelsea.png", "coffee.png")
                    ],
                    "style": [
                        str(EXAMPLES / "style" / n) for n in ("starry_night.jpg", "the_scream.jpg")
                    ],
                    "params": {"size": args.size, "steps": args.steps},
                }
            )
        )
        times = {}
        for devices in (single, args.devices):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "nst_batch",
                    str(manifest),
                    "--force",
                    "-q",
                    "--devices",
                    devices,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            times[devices] = time.perf_counter() - start
    print(f"2x2 gallery at {args.size} px, {args.steps} steps")
    for devices, seconds in times.items():
        print(f"  --devices {devices:<20} {seconds:6.1f} s")
    workers = len(args.devices.split(","))
    print(f"  ratio 1 worker / {workers} workers: {times[single] / times[args.devices]:.2f}")


if __name__ == "__main__":
    main()
