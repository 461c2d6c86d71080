"""Video files: what a clip holds (`probe`), its frames decoded once into the output
folder's cache for a sequence to stylize (`decode`), and a sequence's frames encoded back
into a video with the clip's sound copied in unchanged (`encode`). What a manifest says
about videos: docs/manifest.md (videos); where the frames go: docs/layout.md.

PyAV is the one user of FFmpeg here: its wheel ships FFmpeg's libraries with their codecs
(H.264, VP9, AAC, Opus), so no `ffmpeg` binary is needed. It is imported at use: a
manifest without a video never loads it.

Frames are decoded losslessly (PNG through FFmpeg's own encoder, which is deterministic),
so that the same clip gives the same bytes and the same task keys on every rerun, and into
a folder named by the video's bytes and the part taken of it: a rerun finds them and
decodes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from nst_batch import layout

if TYPE_CHECKING:
    import av
    import numpy as np

# What a content entry takes as a video (lower case); other files are images.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".mts"}
    | {".m2ts", ".wmv", ".flv", ".3gp", ".ogv"}
)
VideoKind = Literal["mp4", "webm"]
# Playable in every current browser: H.264 in 4:2:0 (MP4), VP9 in 4:2:0 (WebM).
_CODECS: dict[VideoKind, tuple[str, dict[str, str]]] = {
    "mp4": ("libx264", {"crf": "18", "preset": "medium"}),
    "webm": ("libvpx-vp9", {"crf": "30", "b": "0", "row-mt": "1", "cpu-used": "4"}),
}
# Frame times spread more than this share of a frame's mean duration: a variable rate.
_UNEVEN = 0.25
_FORMAT = 1  # how frames are decoded; part of the cache's digest


class VideoError(Exception):
    """A video cannot be read or written; str() says what and what to do."""


@dataclass(frozen=True)
class Clip:
    """The part of a video a sequence takes: from `start` to `end` seconds (None: to its
    end), every `every`-th frame, at most `max_frames` of them, each scaled so that its
    longer side is at most `max_side` px (None: as decoded)."""

    start: float = 0.0
    end: float | None = None
    every: int = 1
    max_frames: int | None = None
    max_side: int | None = None

    @property
    def whole(self) -> bool:
        """Whether every frame is taken, so that the whole sound goes with them."""
        return self.start == 0 and self.end is None and self.max_frames is None


@dataclass(frozen=True)
class Probe:
    """What a video's first frame and headers say: the size its frames are taken at (after
    `max_side` and the rotation a phone records), the source's average frame rate, its
    length in seconds (None: unknown) and its first audio stream's codec (None: silent)."""

    width: int
    height: int
    rate: Fraction
    duration: float | None
    audio: str | None


@dataclass(frozen=True)
class Decoded:
    """A clip's frames in the cache: `frames` PNG files `width` x `height` to be played at
    `rate` frames a second (the source's average rate over `every`), covering `span`
    seconds of the source (where its sound is cut); `uneven` when the source's frame times
    were not evenly spaced (a variable frame rate: the frames are taken as decoded and play
    at the average rate)."""

    folder: Path
    frames: int
    width: int
    height: int
    rate: Fraction
    span: tuple[float, float]
    whole: bool  # every frame of the video taken: its sound is copied whole
    audio: str | None
    uneven: bool
    source: Path  # the video file

    @property
    def digest(self) -> str:
        """The cache folder's name: the video's bytes and the clip taken of it."""
        return self.folder.name

    @property
    def files(self) -> list[Path]:
        return [layout.decoded_frame(self.folder, n) for n in range(1, self.frames + 1)]


@dataclass(frozen=True)
class Sound:
    """The sound to copy into a sequence's video: the first audio stream of the video at
    `path`, whole, or its packets within `span` seconds moved to start at 0."""

    path: Path
    span: tuple[float, float]
    whole: bool


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether a content path names a video file, by its extension."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_SUFFIXES


def _av() -> Any:
    """PyAV, imported at use."""
    import av

    return av


def _errors() -> tuple[type[BaseException], ...]:
    av = _av()
    return (av.FFmpegError, OSError, ValueError, StopIteration)


# -- in: probe and decode -------------------------------------------------------------------


def digest(path: Path, clip: Clip) -> str:
    """The cache folder's name for `clip` of the video at `path`: SHA-256 of its bytes and
    the clip, 16 hex digits."""
    hashed = hashlib.sha256(json.dumps([_FORMAT, asdict(clip)], sort_keys=True).encode())
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hashed.update(block)
    return hashed.hexdigest()[:16]


def cached(root: Path, name: str, source: Path) -> Decoded | None:
    """The clip of the video `source` decoded earlier into `.nst-batch/frames/<name>/`,
    None if it is not there (a folder is only ever there complete: it is renamed into place
    once decoded)."""
    folder = layout.frames_folder(root, name)
    try:
        record = json.loads((folder / layout.FRAMES_RECORD).read_text("utf-8"))
        first, end = record["span"]
        return Decoded(
            folder=folder,
            frames=int(record["frames"]),
            width=int(record["width"]),
            height=int(record["height"]),
            rate=Fraction(record["rate"]),
            span=(float(first), float(end)),
            whole=bool(record["whole"]),
            audio=record["audio"] if isinstance(record["audio"], str) else None,
            uneven=bool(record["uneven"]),
            source=source,
        )
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def probe(path: Path, clip: Clip) -> Probe:
    """What the video at `path` holds, from its headers and first frame (which proves it
    decodes). VideoError when it is not a video FFmpeg can decode."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("it holds no video stream; give a video file")
            stream = container.streams.video[0]
            first = next(container.decode(stream))
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise VideoError("it records no frame rate; re-encode it (to H.264 MP4, say)")
            sound = container.streams.audio
            audio = sound[0].codec_context.name if sound else None
            duration = container.duration / av.time_base if container.duration else None
            width, height = _taken_size(first, clip.max_side)
            return Probe(width, height, Fraction(rate), duration, audio)
    except VideoError:
        raise
    except _errors() as exc:
        raise VideoError(
            f"it is not a video FFmpeg can decode ({_reason(exc)}); give an MP4, MOV, WebM or "
            "MKV file, or a folder of frames with 'sequence: true'"
        ) from None


def decode(path: Path, clip: Clip, root: Path, name: str, probed: Probe) -> Decoded:
    """Decode `clip` of the video at `path` into `.nst-batch/frames/<name>/` under the
    output folder `root`: `frame_000001.png` on, in decoding order, and `clip.json`. Made in
    a hidden folder beside it and renamed into place once complete, so that a killed run or
    another shard never finds half of it. VideoError when no frame is in the clip or the
    video cannot be decoded to its end."""
    final = layout.frames_folder(root, name)
    temp = final.parent / f".{name}.{secrets.token_hex(4)}.nst-batch.tmp"
    try:
        layout.check_writable(root, [temp])  # a link planted on the way is not followed
    except layout.UnsafeWrite as exc:
        raise VideoError(f"cannot decode it into {layout.display(root)}: {exc}") from None
    final.parent.mkdir(parents=True, exist_ok=True)
    temp.mkdir()
    try:
        decoded = _decode_into(path, clip, temp, probed)
        _sync_folder(temp)
        try:
            os.rename(temp, final)
        except OSError:  # another run decoded it first: theirs is the same
            shutil.rmtree(temp, ignore_errors=True)
        _sync_folder(final.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    found = cached(root, name, path)
    assert found is not None, decoded
    return found


def _decode_into(path: Path, clip: Clip, folder: Path, probed: Probe) -> Decoded:
    av = _av()
    times: list[float] = []  # each frame taken, in seconds of the source
    steps: list[float] = []  # the time between each two decoded frames in the clip
    shown = -1.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            png = av.CodecContext.create("png", "w")
            png.width, png.height, png.pix_fmt = probed.width, probed.height, "rgb24"
            index = 0  # of the frames within start..end
            for frame in container.decode(stream):
                if frame.time is not None:
                    time = frame.time
                else:  # a frame without a time (some AVI files): one frame after the last
                    time = shown + float(1 / probed.rate) if shown >= 0 else 0.0
                if time < clip.start - 1e-9:
                    continue
                if clip.end is not None and time >= clip.end:
                    break
                if shown >= 0:
                    steps.append(time - shown)
                shown = time
                index += 1
                if (index - 1) % clip.every:
                    continue
                image = _frame_rgb(frame, probed.width, probed.height)
                data = b"".join(bytes(packet) for packet in png.encode(image))
                _write_synced(layout.decoded_frame(folder, len(times) + 1), data)
                times.append(time)
                if clip.max_frames is not None and len(times) == clip.max_frames:
                    break
    except _errors() as exc:
        at = f" past {shown:.2f} s" if shown >= 0 else ""
        raise VideoError(
            f"it cannot be decoded{at} ({_reason(exc)}); re-encode it, or set 'end' before the "
            "damage"
        ) from None
    if not times:
        end = "its end" if clip.end is None else f"{clip.end:g} s"
        length = "" if probed.duration is None else f" (the video is {probed.duration:.2f} s long)"
        raise VideoError(
            f"no frame lies between {clip.start:g} s and {end}{length}; choose 'start' and "
            "'end' within it"
        )
    rate = probed.rate / clip.every
    uneven = bool(steps) and (max(steps) - min(steps)) > _UNEVEN * (sum(steps) / len(steps))
    span = (times[0], times[-1] + float(1 / rate))
    decoded = Decoded(
        folder,
        len(times),
        probed.width,
        probed.height,
        rate,
        span,
        clip.whole,
        probed.audio,
        uneven,
        path,
    )
    record = {
        "frames": decoded.frames,
        "width": decoded.width,
        "height": decoded.height,
        "rate": str(decoded.rate),
        "span": list(span),
        "whole": decoded.whole,
        "audio": decoded.audio,
        "uneven": uneven,
    }
    _write_synced(folder / layout.FRAMES_RECORD, json.dumps(record, indent=1).encode())
    return decoded


def _taken_size(frame: av.VideoFrame, max_side: int | None) -> tuple[int, int]:
    """(w, h) of a frame as taken: turned upright, then no side over `max_side`."""
    width, height = frame.width, frame.height
    if _quarter_turns(frame) % 2:
        width, height = height, width
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame upright (a phone records its
    orientation in the display matrix rather than turning the pictures)."""
    return round((frame.rotation or 0) / 90) % 4


def _frame_rgb(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """The frame in 8-bit RGB, upright, `width` x `height`."""
    turns = _quarter_turns(frame)
    if not turns:
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    import numpy as np

    w, h = (height, width) if turns % 2 else (width, height)
    rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
    upright = np.ascontiguousarray(np.rot90(rgb.to_ndarray(), k=turns))
    return _av().VideoFrame.from_ndarray(upright, format="rgb24")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StopIteration):
        return "no frame could be decoded"
    # FFmpeg's and the OS's errors say what went wrong in strerror, without the path.
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.rstrip(".")


# -- out: encode ----------------------------------------------------------------------------


def holds_sound(kind: VideoKind, codec: str) -> bool:
    """Whether a `kind` file can take the audio codec `codec` unchanged (WebM: Opus and
    Vorbis only)."""
    import io

    with _av().open(io.BytesIO(), "w", format=kind) as container:
        return codec in container.supported_codecs


def encode(
    frames: Sequence[Path],
    target: Path,
    root: Path,
    kind: VideoKind,
    rate: Fraction,
    metadata: Mapping[str, str],
    sound: Sound | None = None,
) -> None:
    """Write the image files `frames`, in order, as a video at `target` (under the output
    folder `root`, atomically and never through a link) playing `rate` frames a second:
    H.264 (MP4) or VP9 (WebM) in 4:2:0, which every browser plays, with the first audio
    stream of `sound` copied in unchanged (its packets, not decoded). A frame of another
    size is scaled to the first's, and a side of odd length loses its last pixel (4:2:0
    halves both). `metadata` goes into the file's comment as JSON (`read_metadata`).
    VideoError naming the file when it cannot be written, OSError or UnsafeWrite from the
    file system."""
    from nst_batch.images import open_output, resize

    first = open_output(frames[0])
    size = first.size
    width, height = max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2)

    def pictures() -> Iterator[np.ndarray]:
        import numpy as np

        for n, path in enumerate(frames):
            image = first if n == 0 else open_output(path)
            if image.size != size:
                image = resize(image, size)
            yield np.asarray(image)[:height, :width]

    def write(file: IO[bytes]) -> None:
        _encode(file, kind, rate, (width, height), pictures(), metadata, sound)

    try:
        layout.write_atomically(target, write, root)
    except _errors() as exc:
        if isinstance(exc, OSError) and not isinstance(exc, _av().FFmpegError):
            raise
        raise VideoError(f"cannot write {layout.display(target)} ({_reason(exc)})") from None


def _encode(
    file: IO[bytes],
    kind: VideoKind,
    rate: Fraction,
    size: tuple[int, int],
    pictures: Iterator[np.ndarray],
    metadata: Mapping[str, str],
    sound: Sound | None,
) -> None:
    # The MP4's index goes at its end: moving it first (`+faststart`) reopens the file by
    # name, and this one is a temporary written through its descriptor. Browsers play it
    # from a disk or any server that answers range requests.
    av = _av()
    codec, options = _CODECS[kind]
    source = None if sound is None else av.open(str(sound.path))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(file, "w", format=kind))
        if source is not None:
            stack.enter_context(source)
        out.metadata["comment"] = json.dumps(dict(metadata), ensure_ascii=True)
        video = out.add_stream(codec, rate=rate, options=options)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        packets: list[Any] = []  # av.Packet
        if source is not None and source.streams.audio and sound is not None:
            audio = out.add_stream_from_template(source.streams.audio[0])
            packets = _sound_packets(source, sound)
            for packet in packets:
                packet.stream = audio
        pending = iter(packets)
        waiting = next(pending, None)
        for n, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = n
            # Interleave: the sound up to this frame first, as a player reads it.
            while waiting is not None and _seconds(waiting) <= n / rate:
                out.mux(waiting)
                waiting = next(pending, None)
            out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        while waiting is not None:
            out.mux(waiting)
            waiting = next(pending, None)


def _sound_packets(source: av.container.InputContainer, sound: Sound) -> list[Any]:
    """The packets of the source's first audio stream that `sound` takes: all of them, or
    those overlapping its span, moved to start at 0. A few kB a second: kept in memory."""
    stream = source.streams.audio[0]
    base = stream.time_base
    assert base is not None  # a demuxed stream has one
    shift = 0 if sound.whole else round(sound.span[0] / base)
    taken = []
    for packet in source.demux(stream):
        if packet.pts is None or packet.size == 0:  # the demuxer's last, empty packet
            continue
        if not sound.whole:
            start, length = packet.pts * base, (packet.duration or 0) * base
            if start + length <= sound.span[0] or start >= sound.span[1]:
                continue
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        taken.append(packet)
    return taken


def _seconds(packet: Any) -> float:
    """An av.Packet's time in seconds."""
    return float(packet.pts * packet.time_base) if packet.pts is not None else 0.0


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The mapping `encode` stored in a video's comment; empty if none or unreadable."""
    try:
        with _av().open(os.fspath(path)) as container:
            comments = [v for k, v in container.metadata.items() if k.lower() == "comment"]
        stored = json.loads(comments[0]) if comments else None
    except Exception:
        return {}
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        return {}
    return stored
