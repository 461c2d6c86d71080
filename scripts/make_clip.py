"""Make a short video clip with a sound track from a still photograph: the camera path of
`make_sequence.py` (pan, zoom, a slight rotation) as H.264 frames, and a sine tone that
fades in and out as its sound (AAC in an MP4, Opus in a WebM). The bundled sample is made
with the defaults:

    python scripts/make_clip.py examples/images/content/coffee.png examples/videos/coffee.mp4

Tests make their own, smaller, with `make_clip()`. PyAV writes it (no ffmpeg binary).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sequence import view

# Per container: video codec, audio codec, audio sample rate (Opus runs at 48 kHz).
CODECS = {".mp4": ("libx264", "aac", 22_050), ".webm": ("libvpx-vp9", "libopus", 48_000)}


def tone(seconds: float, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    """A sine of `hz` at a fifth of full scale, faded in and out over a tenth of a second
    each: (1, samples) float32, mono."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    fade = np.clip(np.minimum(t, seconds - t) / 0.1, 0, 1)
    return (0.2 * fade * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None]


def make_clip(
    photo: Path,
    path: Path,
    seconds: float = 3.0,
    fps: int = 12,
    size: tuple[int, int] = (160, 120),
    sound: bool = True,
) -> Path:
    """Write `seconds` of the camera path over `photo` at `fps` frames a second, `size`
    (w, h, even), with a tone as its sound unless `sound` is False, to `path` (.mp4 or
    .webm)."""
    video_codec, audio_codec, sample_rate = CODECS[path.suffix.lower()]
    still = Image.open(photo).convert("RGB")
    frames = round(seconds * fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        out.metadata["title"] = f"{photo.name}, a camera path, {seconds:g} s"
        video = out.add_stream(video_codec, rate=Fraction(fps), options={"crf": "28"})
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        audio = out.add_stream(audio_codec, rate=sample_rate) if sound else None
        if audio is not None:
            audio.layout = "mono"
        for i in range(frames):
            picture = np.asarray(view(still, size, i / max(frames - 1, 1)))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        if audio is not None:
            samples = tone(seconds, sample_rate)
            step = 960 if audio_codec == "libopus" else 1024  # the encoder's frame size
            for start in range(0, samples.shape[1], step):
                chunk = np.ascontiguousarray(samples[:, start : start + step])
                piece = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                piece.sample_rate, piece.pts = sample_rate, start
                out.mux(audio.encode(piece))
            out.mux(audio.encode(None))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("path", type=Path, help="the clip to write: .mp4 or .webm")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--silent", action="store_true", help="no sound track")
    args = parser.parse_args()
    size = (args.width, args.height)
    make_clip(args.photo, args.path, args.seconds, args.fps, size, not args.silent)
    kind = "silent" if args.silent else "with a tone"
    print(f"{args.seconds:g} s at {args.fps} fps, {args.width}x{args.height}, {kind}: {args.path}")


if __name__ == "__main__":
    main()
