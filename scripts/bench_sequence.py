"""Sequence benchmark: a frame folder stylized as independent frames and as a sequence.

    PYTHONPATH=. .venv/bin/python scripts/bench_sequence.py [--frames 12] [--size 128]
        [--steps 150] [--temporal-weights 0 1e6 ...] [--video]

Runs the bundled sample (examples/sequences/coffee, its first `--frames` frames) in one
style three or more ways, one after the other in this process's time: every frame on its
own (a plain folder entry), then as a sequence (`sequence: true`) at each temporal weight
given (0: the warm start along the flow only). For each it prints the warping error (the
mean |S_t - warp(S_t-1)| over the pixels the content frames' flow can be trusted for, in
0..1 units, averaged over consecutive pairs), the mean style and content loss per frame,
and the time per frame; then the ratios of each sequence run to the independent frames.
Targets at the default temporal weight: at most a third of the independent frames'
warping error (moonshot a fifth), style loss per frame within 10%, time per frame no more.
`--strip` writes a picture: a few frames of each run one above the other.

`--video` gives the frames as a video file instead: encoded into an MP4 (H.264, near
lossless), the sequence runs take it as their content (`path: clip.mp4`), and the
independent frames and the warping error use its frames as decoded (docs/manifest.md,
videos), so that every run stylizes the same pictures.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_batch import flow, video  # noqa: E402
from nst_batch.manifest import natural_key  # noqa: E402
from nst_batch.params import TEMPORAL_WEIGHT  # noqa: E402

FRAMES = REPO / "examples/sequences/coffee"
STYLE = REPO / "examples/images/style/starry_night.jpg"
FPS = 12  # the folder's frame rate: a frame entry's default fps, make_clip.py's
CRF = 12  # H.264 near lossless: the runs measure the sequence, not the encoder


@dataclass(frozen=True)
class Outcome:
    label: str
    outputs: list[Path]
    warping_error: float
    style_loss: float
    content_loss: float
    seconds_per_frame: float


def copy_frames(frames: list[Path], clip: Path) -> None:
    """The image files `frames` copied into the folder `clip`, by their names."""
    clip.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        (clip / frame.name).write_bytes(frame.read_bytes())


def encode_clip(frames: list[Path], path: Path) -> str:
    """The image files `frames` as an H.264 MP4 at `path`, FPS frames a second, in 4:4:4
    where the encoder takes it (4:2:0 halves the colours' resolution); its settings, in
    words."""
    import av

    formats = {f.name for f in av.codec.Codec("libx264", "w").video_formats or []}
    pix_fmt = "yuv444p" if "yuv444p" in formats else "yuv420p"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS), options={"crf": str(CRF)})
        stream.width, stream.height = Image.open(frames[0]).size
        stream.pix_fmt = pix_fmt
        for i, frame in enumerate(frames):
            picture = np.asarray(Image.open(frame).convert("RGB"))  # (H, W, 3) uint8
            encoded = av.VideoFrame.from_ndarray(picture, format="rgb24")
            encoded.pts = i
            out.mux(stream.encode(encoded.reformat(format=pix_fmt)))
        out.mux(stream.encode(None))
    return f"H.264 (libx264), crf {CRF}, {pix_fmt}, {FPS} fps"


def decode_clip(path: Path, root: Path) -> list[Path]:
    """The whole video at `path` decoded as a run with the output folder `root` decodes it,
    into that folder's frame cache: its frames, in order."""
    clip = video.Clip()
    return video.decode(path, clip, root, video.digest(path, clip), video.probe(path, clip)).files


def run(
    folder: Path,
    label: str,
    entry: dict[str, object],
    frames: list[Path],
    args: argparse.Namespace,
    temporal_weight: float | None = None,
) -> Outcome:
    """One nst-batch run of the content `entry` (a path relative to `folder`) in one style,
    with `temporal_weight` if given; its warping error along the content `frames` it
    stylized."""
    params: dict[str, object] = {"size": args.size, "steps": args.steps}
    if temporal_weight is not None:
        params["temporal_weight"] = temporal_weight
    doc = {
        "output": f"out-{label}",
        "content": [entry],
        "style": [str(STYLE)],
        "params": params,
        "devices": "cpu",
    }
    manifest = folder / f"{label}.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nst_batch", str(manifest), "-q"], check=True)
    wall = time.perf_counter() - start
    with open(folder / f"out-{label}" / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    rows.sort(key=lambda r: natural_key(r["output"]))
    outputs = [folder / f"out-{label}" / r["output"] for r in rows]
    return Outcome(
        label,
        outputs,
        flow.sequence_warping_error(frames, outputs),
        sum(float(r["style_loss"]) for r in rows) / len(rows),
        sum(float(r["content_loss"]) for r in rows) / len(rows),
        wall / len(rows),
    )


def strip(outcomes: list[Outcome], path: Path, picks: int = 4) -> None:
    """Frames 1, ..., of each run side by side, one run per row."""
    first = Image.open(outcomes[0].outputs[0])
    w, h = first.size
    step = max(1, (len(outcomes[0].outputs) - 1) // (picks - 1))
    sheet = Image.new("RGB", (w * picks, h * len(outcomes)), "white")
    for row, outcome in enumerate(outcomes):
        for col in range(picks):
            index = min(col * step, len(outcome.outputs) - 1)
            sheet.paste(Image.open(outcome.outputs[index]).convert("RGB"), (col * w, row * h))
    sheet.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--temporal-weights", type=float, nargs="+", default=[0.0, TEMPORAL_WEIGHT])
    parser.add_argument("--strip", type=Path)
    parser.add_argument(
        "--video", action="store_true", help="give the frames as an MP4 (H.264) file"
    )
    args = parser.parse_args()
    frames = sorted(FRAMES.glob("frame_*.jpg"), key=lambda p: natural_key(p.name))[: args.frames]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.video:
            mp4 = folder / "clip.mp4"
            settings = encode_clip(frames, mp4)
            frames = decode_clip(mp4, folder)
        copy_frames(frames, folder / "clip")
        outcomes = [run(folder, "independent", {"path": "clip"}, frames, args)]
        for weight in args.temporal_weights:
            label = f"sequence-{weight:g}"
            entry: dict[str, object] = {"path": "clip", "sequence": True}
            content = frames
            if args.video:
                # The run decodes the video into its own cache: the same digest (the same
                # video, the whole of it), so the same paths under its output folder.
                entry = {"path": mp4.name}
                content = [folder / f"out-{label}" / f.relative_to(folder) for f in frames]
            outcomes.append(run(folder, label, entry, content, args, weight))
            pairs = zip(content, frames, strict=True)
            assert all(a.read_bytes() == b.read_bytes() for a, b in pairs), f"{label}: other frames"
        print(
            f"{len(frames)} frames at {args.size} px, {args.steps} steps, {STYLE.stem}, on the CPU"
        )
        if args.video:
            print(f"frames from an MP4 ({settings}), as decoded, for every run")
        print(f"{'run':<22}{'warp err':>10}{'style':>12}{'content':>12}{'s/frame':>9}")
        for o in outcomes:
            print(
                f"{o.label:<22}{o.warping_error:10.4f}{o.style_loss:12.4g}"
                f"{o.content_loss:12.4g}{o.seconds_per_frame:9.2f}"
            )
        base = outcomes[0]
        for o in outcomes[1:]:
            print(
                f"{o.label}: warping error {o.warping_error / base.warping_error:.3f}x "
                f"(<= 0.333), style loss {o.style_loss / base.style_loss:.3f}x (within 10%), "
                f"time per frame {o.seconds_per_frame / base.seconds_per_frame:.3f}x (<= 1)"
            )
        if args.strip:
            strip(outcomes, args.strip)
            print(f"picture: {args.strip}")


if __name__ == "__main__":
    main()
