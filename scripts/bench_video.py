"""Video benchmark: what decoding a clip and encoding its stylized frames cost beside
stylizing them.

    PYTHONPATH=. .venv/bin/python scripts/bench_video.py [--seconds 10] [--fps 12]
        [--size 256] [--steps 150] [--keep DIR]

Makes a clip of the bundled coffee photo (scripts/make_clip.py: `--seconds` at `--fps`, the
longer side `--size` px, with a sound track), then times, one after the other in this
process's time: decoding it into the frame cache (loading the manifest into an empty
output folder), stylizing its frames as a sequence (`nst-batch`, in a subprocess, with the
frames already decoded and no animation), and encoding the outputs into an MP4 with the
clip's sound copied in. Prints each time and the ratio of decoding plus encoding to the
stylization. Target on the CPU at 256 px for 10 s: at most 5%.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nst_batch import video
from nst_batch.manifest import load_manifest

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "examples/images/content/coffee.png"
STYLE = REPO / "examples/images/style/starry_night.jpg"

sys.path.insert(0, str(REPO / "scripts"))
from make_clip import make_clip  # noqa: E402  (a script beside this one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--size", type=int, default=256, help="the clip's longer side, px")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-video-"))
    folder.mkdir(parents=True, exist_ok=True)
    width = args.size - args.size % 2
    height = round(args.size * 3 / 4) // 2 * 2  # the photo's 3:2, cropped to 4:3 by the view
    clip = make_clip(PHOTO, folder / "clip.mp4", args.seconds, args.fps, (width, height))
    doc = {
        "output": "out",
        "content": [{"path": "clip.mp4"}],
        "style": [str(STYLE)],
        "params": {"size": args.size, "steps": args.steps},
        "devices": "cpu",
    }
    manifest = folder / "bench.yaml"
    manifest.write_text(yaml.safe_dump(doc))

    start = time.perf_counter()
    loaded = load_manifest(manifest)  # decodes into out/.nst-batch/frames/
    decoding = time.perf_counter() - start
    sequence = loaded.contents[0].sequence
    assert sequence is not None and sequence.video is not None
    clip_frames = sequence.video

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nst_batch", str(manifest), "-q"], check=True)
    stylizing = time.perf_counter() - start
    with open(folder / "out" / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    outputs = [folder / "out" / r["output"] for r in rows]
    assert len(outputs) == clip_frames.frames, "every frame stylized"

    start = time.perf_counter()
    sound = video.Sound(clip, clip_frames.span, clip_frames.whole)
    target = folder / "out" / "bench.mp4"
    video.encode(outputs, target, folder / "out", "mp4", clip_frames.rate, {}, sound)
    encoding = time.perf_counter() - start

    frames = clip_frames.frames
    print(f"clip: {args.seconds:g} s at {args.fps} fps, {width}x{height}, {frames} frames")
    print(f"decode:   {decoding:8.2f} s  ({1000 * decoding / frames:.1f} ms a frame)")
    print(f"stylize:  {stylizing:8.2f} s  ({stylizing / frames:.2f} s a frame, {args.steps} steps)")
    print(f"encode:   {encoding:8.2f} s  ({1000 * encoding / frames:.1f} ms a frame)")
    share = (decoding + encoding) / stylizing
    print(f"decode + encode / stylize: {100 * share:.2f}% (target at most 5%)")
    print(f"files in {folder}")


if __name__ == "__main__":
    main()
