"""Planning and up-to-date reruns of a big gallery: N content images x 1 style, tiny.

    PYTHONPATH=. .venv/bin/python scripts/bench_plan.py [--tasks 10000] [--folder /tmp/bench]

Makes N distinct 64x48 PNG contents and a style, and an output folder already holding a
valid output for every task (written directly, with the metadata a run records, so that
no optimization is needed), without results or file cache. Then times, each as its own
process, with its peak memory: a dry run before any run (every input hashed, every
output's header read), an up-to-date run (it writes the skipped rows and the file
cache), a dry run and an up-to-date rerun after it, and the same rerun without the
gallery step (which rebuilds the page and the contact sheet from every output).
Wall-clock times: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_batch import images, layout  # noqa: E402
from nst_batch.layout import KEY_METADATA, RECIPE_METADATA  # noqa: E402
from nst_batch.manifest import load_manifest  # noqa: E402
from nst_batch.plan import plan  # noqa: E402

NST_BATCH = [sys.executable, "-m", "nst_batch"]
WITHOUT_GALLERY = [
    sys.executable,
    "-c",
    "import sys; from nst_batch import cli; cli._write_gallery = lambda *a, **k: None; "
    "cli.main(sys.argv[1:])",
]


def make_gallery(folder: Path, tasks: int) -> Path:
    """The manifest of `tasks` contents x 1 style, with every output made and up to date,
    and neither results nor a file cache (kept from an earlier time: outputs only)."""
    for kind in ("content", "style"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for i in range(tasks):
        path = folder / "content" / f"c{i:06d}.png"
        if not path.exists():
            Image.new("RGB", (64, 48), (i % 256, i // 256 % 256, i // 65536)).save(path)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "style" / "s.png")
    manifest = folder / "gallery.yaml"
    doc = {
        "output": "out",
        "content": "content/",
        "style": "style/",
        "params": {"size": 48, "steps": 2},
        "devices": "cpu",
        "max_tasks": max(tasks, 20_000),
    }
    manifest.write_text(yaml.safe_dump(doc))
    output = Image.new("RGB", (48, 36), (90, 90, 90))
    loaded = load_manifest(manifest)
    for task in plan(loaded):
        if images.read_metadata(task.output).get(KEY_METADATA) == task.key:
            continue
        recipe = json.dumps(task.recipe, sort_keys=True, separators=(",", ":"))
        metadata = {KEY_METADATA: task.key, RECIPE_METADATA: recipe}
        images.save_image(output, task.output, metadata, root=task.folder)
    for path in (*layout.results_files(loaded.output), *layout.file_caches(loaded.output)):
        path.unlink()
    return manifest


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one process, which must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/nst-batch-bench-plan"))
    args = parser.parse_args()
    folder = args.folder / str(args.tasks)
    manifest = str(make_gallery(folder, args.tasks))
    steps = [
        ("dry run, nothing cached", [*NST_BATCH, manifest, "--dry-run", "-q"]),
        ("first up-to-date run", [*NST_BATCH, manifest, "-q"]),
        ("dry run", [*NST_BATCH, manifest, "--dry-run", "-q"]),
        ("up-to-date rerun", [*NST_BATCH, manifest, "-q"]),
        ("... without the gallery step", [*WITHOUT_GALLERY, manifest, "-q"]),
    ]
    print(f"{args.tasks} tasks in {folder}")
    for name, command in steps:
        wall, peak = timed(command)
        print(f"{name:<30} {wall:7.2f} s {peak:8.0f} MB")


if __name__ == "__main__":
    main()
