"""A sequence's animation: `<chain>.gif` (or `.webp`, `.mp4`, `.webm`, as its `animation:`
says) beside the folder of its frames' outputs, for each such sequence in each style and
variant (a chain: `Task.chain`).

An animation is written once every frame of its chain is done on disk (its output exists
and records its task's key), and written again only when it is not up to date: when it
records another key than the chain's last frame (whose key depends on every frame before
it), another frame count, duration or rate, another clip for its sound, or when a frame's
output is newer than it. Stat calls and the file's header decide that: an up-to-date rerun
decodes nothing.

A chain with a frame that is not done on disk (failed, interrupted, outdated, missing, not
yet run), or a sequence without an animation, has none: one an earlier run left is
removed, and so is one of another kind than the manifest now asks for, so that no
animation shows frames of other settings. Only a file that records an animation is
removed: an image of someone else's (or an output) at that name is left alone.

The file's metadata (a GIF's comment, a WebP's EXIF, a video's comment tag) records its
identity, so that `images.read_metadata` knows it as ours and folders and globs never take
it as an input. A video from a video file carries that file's sound (nst_batch.video).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from nst_batch import video
from nst_batch.gallery.grid import Thumb, stamp
from nst_batch.images import IMAGE_ERRORS, MIN_FRAME_HUNDREDTHS, read_metadata, save_animation
from nst_batch.layout import AnimationKind, UnsafeWrite, animation_path, remove_file
from nst_batch.manifest import FrameSequence
from nst_batch.metadata import ANIMATION_METADATA, KEY_METADATA, animation_metadata
from nst_batch.plan import Task

KINDS: tuple[AnimationKind, ...] = ("gif", "webp", "mp4", "webm")
VIDEO_KINDS = ("mp4", "webm")  # played by a <video>, not an <img>

# What went wrong with a file: the file, the error, and what was being done ('' for a write).
Failed = Callable[[Path, BaseException, str], None]
# The metadata that says whether an animation is up to date (the rest only describes it).
_IDENTITY = (KEY_METADATA, ANIMATION_METADATA)


@dataclass(frozen=True)
class Chain:
    """A sequence's frames in one style and variant, in frame order (at least one)."""

    tasks: tuple[Task, ...]

    @property
    def name(self) -> str:
        """The folder of its outputs, relative to the output folder: `coffee__starry_night`."""
        return self.tasks[0].chain

    @property
    def sequence(self) -> FrameSequence:
        sequence = self.tasks[0].content.sequence
        assert sequence is not None  # only frames have a chain
        return sequence

    @property
    def kind(self) -> AnimationKind | None:
        """The animation its sequence asks for, None for none."""
        kind = self.sequence.animation
        return None if kind == "none" else kind

    @property
    def path(self) -> Path:
        """Its animation: `<output>/<chain>.gif` (or .webp, .mp4, .webm)."""
        return animation_path(self.tasks[0].folder, self.name, self.kind or "gif")

    @property
    def duration(self) -> int:
        """How long each frame shows, in ms: a GIF's in its whole hundredths."""
        if self.kind == "gif":
            return frame_duration(self.sequence.fps)
        return max(1, round(1000 / self.sequence.fps))

    @property
    def rate(self) -> Fraction:
        """A video's exact frame rate: its source's (30000/1001 stays so), or `fps`."""
        clip = self.sequence.video
        if clip is not None:
            return clip.rate
        return Fraction(self.sequence.fps).limit_denominator(1001)

    @property
    def sound(self) -> video.Sound | None:
        """The sound a video of it carries: its source video's, when it has one."""
        clip = self.sequence.video
        if clip is None or clip.audio is None:
            return None
        return video.Sound(clip.source, clip.span, clip.whole)


def frame_duration(fps: float) -> int:
    """1000 / fps ms, in the whole hundredths of a second a GIF holds (12 fps: 80 ms), and
    no less than browsers show as asked (20 ms: 50 frames a second at most)."""
    return max(MIN_FRAME_HUNDREDTHS, round(100 / fps)) * 10


def chains(tasks: Iterable[Task]) -> list[Chain]:
    """The chains of the sequences' frames among `tasks`, in plan order, each in frame order."""
    found: dict[str, list[Task]] = {}
    for task in tasks:
        if task.chain:
            found.setdefault(task.chain, []).append(task)
    return [
        Chain(tuple(sorted(frames, key=lambda t: t.content.frame))) for frames in found.values()
    ]


def identity(chain: Chain) -> dict[str, str]:
    """What the animation records: the key of the chain's last frame, its frame count and
    duration (a video's also its rate and the clip of its sound: these decide whether it is
    up to date), and its sequence and style."""
    last = chain.tasks[-1]
    playback = None
    if chain.kind in VIDEO_KINDS:
        clip = chain.sequence.video
        sound = None if clip is None or chain.sound is None else clip.digest
        playback = {"rate": str(chain.rate), "sound": sound}
    return animation_metadata(
        last.key, len(chain.tasks), chain.duration, chain.sequence.name, last.style.name, playback
    )


def update_animations(
    tasks: Sequence[Task], done: Callable[[Task], bool], failed: Failed
) -> dict[str, Thumb]:
    """Bring every chain's animation up to date with its frames on disk: write those missing
    or stale of chains whose frames are all `done` (their outputs record their keys), remove
    ours of the other chains, and ours of another kind. The animations there are now, by
    chain name. A file that cannot be written or removed goes to `failed` with its cause;
    the other chains go on."""
    shown: dict[str, Thumb] = {}
    for chain in chains(tasks):
        ready = chain.kind is not None and all(done(task) for task in chain.tasks)
        for kind in KINDS:
            if kind != chain.kind or not ready:
                _remove_ours(chain, kind, failed)
        if not ready:
            continue
        if not fresh(chain):
            try:
                _write(chain)
            except (*IMAGE_ERRORS, UnsafeWrite, video.VideoError, OSError) as exc:
                failed(chain.path, exc, "")
                _remove_ours(chain, chain.kind or "gif", failed)  # an old one would mislead
                continue
        now = stamp(chain.path)
        if now is not None:
            shown[chain.name] = Thumb(chain.path, now)
    return shown


def fresh(chain: Chain) -> bool:
    """Whether the chain's animation exists, is newer than each frame's output, and records
    the chain's identity. Stat calls and the GIF's header: no frame is decoded."""
    made = stamp(chain.path)
    if made is None:
        return False
    for task in chain.tasks:
        frame = stamp(task.output)
        if frame is None or frame[1] > made[1]:  # [1]: the modification time
            return False
    return _recorded(_metadata(chain.path)) == _recorded(identity(chain))


def _metadata(path: Path) -> dict[str, str]:
    """What an animation of ours records: a video's through FFmpeg, the others' Pillow."""
    if path.suffix in (".mp4", ".webm"):
        return video.read_metadata(path)
    return read_metadata(path)


def _recorded(metadata: Mapping[str, str]) -> tuple[str | None, ...]:
    return tuple(metadata.get(name) for name in _IDENTITY)


def _write(chain: Chain) -> None:
    """Write the chain's animation from its frames' outputs (ImageError, UnsafeWrite,
    VideoError, OSError)."""
    frames = [task.output for task in chain.tasks]
    root = chain.tasks[0].folder
    kind = chain.kind
    if kind == "mp4" or kind == "webm":
        video.encode(frames, chain.path, root, kind, chain.rate, identity(chain), chain.sound)
        return
    fmt: Literal["GIF", "WEBP"] = "WEBP" if kind == "webp" else "GIF"
    save_animation(frames, chain.path, chain.duration, identity(chain), root=root, fmt=fmt)


def _remove_ours(chain: Chain, kind: AnimationKind, failed: Failed) -> None:
    """Remove the chain's animation of `kind` if there is one of ours (a file that records
    an animation: an output of that name is left alone)."""
    path = animation_path(chain.tasks[0].folder, chain.name, kind)
    if stamp(path) is None or os.path.islink(path):
        return
    if ANIMATION_METADATA not in _metadata(path):
        return
    try:
        remove_file(path, chain.tasks[0].folder)
    except OSError as exc:
        failed(path, exc, "cannot remove it: ")
