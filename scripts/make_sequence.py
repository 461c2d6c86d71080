"""Make a frame sequence from a still photograph: a camera path of pan, zoom and a slight
rotation over it, as a short clip would move. The bundled sample is made with the defaults:

    python scripts/make_sequence.py examples/images/content/coffee.png examples/sequences/coffee

Each frame is an affine view of the photo (bicubic, so it stays sharp), eased in and out
so the motion starts and stops smoothly; frames are named `frame_001.jpg` ... in order.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image


def view(photo: Image.Image, size: tuple[int, int], t: float) -> Image.Image:
    """The camera at time t (0..1): centre panning left to right and a little down, zooming in
    by a fifth and turning by 3 degrees over the clip."""
    ease = (1 - math.cos(math.pi * t)) / 2
    width, height = photo.size
    scale = min(width / size[0], height / size[1]) * 0.72 / (1 + 0.2 * ease)
    angle = math.radians(3.0 * ease)
    centre_x = width * (0.38 + 0.24 * ease)
    centre_y = height * (0.47 + 0.06 * ease)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # Output pixel (x, y) -> photo pixel: rotate and scale about the frame centre, then move.
    ox, oy = size[0] / 2, size[1] / 2
    coefficients = (
        cos,
        -sin,
        centre_x - cos * ox + sin * oy,
        sin,
        cos,
        centre_y - sin * ox - cos * oy,
    )
    return photo.transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    args = parser.parse_args()
    photo = Image.open(args.photo).convert("RGB")
    args.folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.frames):
        frame = view(photo, (args.width, args.height), i / max(args.frames - 1, 1))
        frame.save(args.folder / f"frame_{i + 1:03d}.jpg", quality=92)
    print(f"{args.frames} frames of {args.width}x{args.height} in {args.folder}")


if __name__ == "__main__":
    main()
