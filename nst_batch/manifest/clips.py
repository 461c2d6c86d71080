"""A video file as a content entry: its clip (start, end, every n-th frame, limits) checked,
decoded once into the output folder's frame cache (`nst_batch.video`), and its frames made
into a sequence's `ImageSpec`s, as a folder of frames would be. See docs/manifest.md
(videos).

Everything that would make the video's tasks fail is refused here, before any work: a file
FFmpeg cannot decode, frames over `max_pixels`, a clip with no frame, a sound the chosen
animation cannot hold unchanged.
"""

from __future__ import annotations

from pathlib import Path

from nst_batch import layout, video
from nst_batch.manifest.errors import ManifestError
from nst_batch.manifest.schema import FrameSequence, ImageSpec, _Entry

# The entry keys that take part of a video, and so belong to video entries alone.
CLIP_KEYS = ("start", "end", "every", "max_frames", "max_side")


def is_clip_entry(item: _Entry) -> bool:
    """Whether an entry names a video file (by its extension)."""
    return isinstance(item.path, str) and video.is_video(item.path)


def refuse_clip_keys(where: str, item: _Entry) -> None:
    """ManifestError for an entry that is not a video but says which part of one to take."""
    given = [key for key in CLIP_KEYS if key in item.model_fields_set]
    if given:
        raise ManifestError(
            f"{where}: '{given[0]}' takes part of a video file (.mp4, .mov, .webm, .mkv ...), "
            f"and '{item.path}' is not one; remove it"
        )


def refuse_video(where: str, item: _Entry, use: str) -> None:
    """ManifestError for a video where only a picture can be: a style, a pair's content."""
    paths = item.path if isinstance(item.path, list) else [item.path]
    for path in paths:
        if video.is_video(path):
            raise ManifestError(f"{where} '{path}': a video cannot be {use}")


def clip_frames(
    where: str, file: Path, name: str, item: _Entry, output: Path, max_pixels: int
) -> list[ImageSpec]:
    """The frames of the video `file` as a sequence named `name`: decoded into the output
    folder's cache unless they are there already. `where` names the entry in messages."""
    if "fps" in item.model_fields_set:
        raise ManifestError(
            f"{where}: a video plays at its own frame rate; remove 'fps' (take fewer frames "
            "with 'every')"
        )
    if item.start is not None and item.end is not None and item.end <= item.start:
        raise ManifestError(
            f"{where}: 'end' ({item.end:g} s) is not after 'start' ({item.start:g} s); give an "
            "end after the start, or leave it out to take the video to its end"
        )
    clip = video.Clip(item.start or 0.0, item.end, item.every, item.max_frames, item.max_side)
    try:
        name_of_clip = video.digest(file, clip)
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read {file} ({exc.strerror})") from None
    decoded = video.cached(output, name_of_clip, file)
    try:
        if decoded is None:
            probed = video.probe(file, clip)
            _check(where, item, probed.width, probed.height, probed.audio, max_pixels)
            decoded = video.decode(file, clip, output, name_of_clip, probed)
    except video.VideoError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except OSError as exc:
        raise ManifestError(
            f"{where}: cannot decode it into {layout.display(output)} ({exc.strerror}); check "
            "that the output folder is writable"
        ) from None
    _check(where, item, decoded.width, decoded.height, decoded.audio, max_pixels)
    sequence = FrameSequence(name, decoded.frames, item.animation, float(decoded.rate), decoded)
    return [
        ImageSpec(frame, f"{name}/{frame.stem}", dict(item.params), (), sequence, number)
        for number, frame in enumerate(decoded.files)
    ]


def _check(
    where: str, item: _Entry, width: int, height: int, audio: str | None, max_pixels: int
) -> None:
    """The frames fit `max_pixels`, and the chosen animation holds the sound unchanged."""
    if width * height > max_pixels:
        raise ManifestError(
            f"{where}: its frames are {width}x{height} px ({width * height:,} pixels), over "
            f"max_pixels ({max_pixels:,}); set 'max_side' on the entry (such as 1280) to "
            "scale them down, or raise max_pixels"
        )
    kind = item.animation
    if audio is not None and kind in ("mp4", "webm") and not video.holds_sound(kind, audio):
        other = "webm" if kind == "mp4" else "mp4"
        raise ManifestError(
            f"{where}: its sound is {audio}, which a {kind.upper()} file cannot hold unchanged; "
            f"use 'animation: {other}', or 'gif' or 'webp' (without sound)"
        )
