"""Video files: a clip decoded into a sequence's frames (cached, lossless, the same bytes
every time), part of it taken, its refusals, and real runs through the command that write
a browser-playable MP4 with the clip's sound copied unchanged, a WebM and an animated WebP."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import CONTENT, REPO, STYLE
from PIL import Image

from nst_batch import layout, video
from nst_batch.cli import main
from nst_batch.manifest import load_manifest
from nst_batch.metadata import ANIMATION_METADATA, KEY_METADATA
from nst_batch.plan import plan
from nst_batch.results import read_rows

STARRY = STYLE / "starry_night.jpg"
NST_BATCH = Path(sys.executable).parent / "nst-batch"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_clip = _script("make_clip").make_clip


def clip(folder: Path, name: str = "walk.mp4", seconds: float = 0.5, **options: Any) -> Path:
    """A clip of the camera path over the cat, 64x48 at 8 fps, with a tone unless told."""
    return make_clip(
        CONTENT / "chelsea.png", folder / "clips" / name, seconds, 8, (64, 48), **options
    )


def write(tmp_path: Path, entry: dict[str, Any] | None = None, **doc: Any) -> Path:
    base: dict[str, Any] = {
        "output": "out",
        "content": [entry or {"path": "clips/walk.mp4", "animation": "mp4"}],
        "style": [str(STARRY)],
        "params": {"size": 48, "steps": 2},
        "devices": "cpu",
    }
    base.update(doc)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def streams(path: Path) -> dict[str, Any]:
    """What a test compares of a video: its streams' codecs, rate, size, frames, duration, and
    its sound's sample rate and packets' bytes."""
    with av.open(str(path)) as container:
        picture = container.streams.video[0]
        frames = list(container.decode(picture))
        found: dict[str, Any] = {
            "video": picture.codec_context.name,
            "pix_fmt": picture.codec_context.pix_fmt,
            "rate": picture.average_rate,
            "size": (picture.width, picture.height),
            "frames": len(frames),
            "duration": container.duration / av.time_base,
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            sound = container.streams.audio[0]
            found["audio"] = sound.codec_context.name
            found["sample_rate"] = sound.sample_rate
            found["packets"] = [bytes(p) for p in container.demux(sound) if p.size]
    return found


# -- in: a clip as a sequence -------------------------------------------------------------


def test_a_video_is_a_sequence_of_its_frames_decoded_once(tmp_path: Path) -> None:
    clip(tmp_path)
    manifest = load_manifest(write(tmp_path))
    names = [spec.name for spec in manifest.contents]
    assert names == [f"walk/frame_{n:06d}" for n in range(1, 5)]  # 0.5 s at 8 fps
    sequence = manifest.contents[0].sequence
    assert sequence is not None and sequence.video is not None
    assert (sequence.name, sequence.frames, sequence.fps) == ("walk", 4, 8.0)
    assert sequence.video.audio == "aac" and not sequence.video.uneven
    folder = sequence.video.folder
    assert folder.parent == tmp_path / "out" / ".nst-batch" / "frames"
    assert [spec.path for spec in manifest.contents] == sequence.video.files
    assert Image.open(manifest.contents[0].path).size == (64, 48)
    tasks = plan(manifest)
    assert [t.relative_output for t in tasks] == [
        f"walk__starry_night/frame_{n:06d}.jpg" for n in range(1, 5)
    ]
    for before, after in itertools.pairwise(tasks):  # chained as a folder's frames are
        assert after.after_key == before.key
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = load_manifest(write(tmp_path))  # a rerun finds the frames: nothing decoded
    assert [t.key for t in plan(again)] == [t.key for t in tasks]
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert len(list(folder.parent.iterdir())) == 1


def test_frames_decode_to_the_same_bytes_every_time(tmp_path: Path) -> None:
    clip(tmp_path)
    first = load_manifest(write(tmp_path))
    second = load_manifest(write(tmp_path, output="elsewhere"))
    assert [s.path.read_bytes() for s in first.contents] == [
        s.path.read_bytes() for s in second.contents
    ]
    assert [t.key for t in plan(first)] == [t.key for t in plan(second)]


def test_start_end_every_and_limits_take_part_of_a_clip(tmp_path: Path) -> None:
    clip(tmp_path, seconds=1.0)  # frames at 0, 1/8 ... 7/8 s
    entry = {"path": "clips/walk.mp4", "start": 0.25, "end": 0.8, "every": 2, "max_side": 32}
    manifest = load_manifest(write(tmp_path, entry))
    sequence = manifest.contents[0].sequence
    assert sequence is not None and sequence.video is not None
    assert sequence.frames == 3  # 0.25, 0.5, 0.75 s
    assert sequence.video.rate == Fraction(4) and sequence.fps == 4.0
    assert sequence.video.span == (0.25, 1.0) and not sequence.video.whole
    assert Image.open(manifest.contents[0].path).size == (32, 24)
    capped = load_manifest(write(tmp_path, {"path": "clips/walk.mp4", "max_frames": 2}))
    assert len(capped.contents) == 2
    # The first frames of a longer take are the same frames: same keys, nothing redone.
    whole = plan(load_manifest(write(tmp_path)))
    assert [t.key for t in plan(capped)] == [t.key for t in whole][:2]


def test_a_variable_frame_rate_clip_is_taken_as_decoded_at_its_average_rate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clips" / "walk.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as out:  # frames at 0, 1, 3, 4, 7, 8 (1/8 s)
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 8)
        for n, pts in enumerate((0, 1, 3, 4, 7, 8)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * n, np.uint8), "rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 8)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        average = container.streams.video[0].average_rate
    manifest = load_manifest(write(tmp_path, {"path": "clips/walk.mp4"}))
    sequence = manifest.contents[0].sequence
    assert sequence is not None and sequence.video is not None
    assert sequence.frames == 6 and sequence.video.uneven
    assert sequence.video.rate == average


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_a_clip_recorded_turned_is_decoded_upright(tmp_path: Path, degrees: int) -> None:
    # A phone held upright stores its pictures turned and records the turn in the display
    # matrix (ffprobe: "rotation of -90.00 degrees"): the pictures turned counter-clockwise
    # by that angle are upright, as a player shows them.
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix (set_display_rotation)")
    stored = np.zeros((48, 64, 3), np.uint8)  # quadrants: red, green / blue, white
    stored[:24, :32], stored[:24, 32:] = (255, 0, 0), (0, 255, 0)
    stored[24:, :32], stored[24:, 32:] = (0, 0, 255), (255, 255, 255)
    path = tmp_path / "clips" / "walk.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(degrees)
        for n in range(2):
            frame = av.VideoFrame.from_ndarray(stored, "rgb24")
            frame.pts = n
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        turned = next(container.decode(video=0)).rotation  # written as a phone does
    assert turned % 360 == degrees % 360
    manifest = load_manifest(write(tmp_path, {"path": "clips/walk.mp4"}))
    upright = np.asarray(Image.open(manifest.contents[0].path).convert("RGB")).astype(int)
    desired = np.rot90(stored, k=degrees // 90).astype(int)
    assert upright.shape == desired.shape
    assert np.abs(upright - desired).mean() < 8  # H.264 blurs the quadrants' edges only
    if degrees == -90:  # the phone's case, spelled out: a quarter turn clockwise
        assert upright.shape == (64, 48, 3)
        top_left, bottom_right = upright[8, 8], upright[-8, -8]
        assert top_left[2] > 200 > top_left[0]  # stored bottom-left: blue
        assert bottom_right[1] > 200 > bottom_right[0]  # stored top-right: green
    half = load_manifest(write(tmp_path, {"path": "clips/walk.mp4", "max_side": 32}))
    size = (24, 32) if degrees % 180 else (32, 24)  # upright first, then scaled
    assert Image.open(half.contents[0].path).size == size


def test_a_pattern_with_a_videos_extension_takes_each_video_as_a_sequence(
    tmp_path: Path,
) -> None:
    clip(tmp_path, "a.mp4")  # 4 frames
    clip(tmp_path, "b.mp4", seconds=0.25, sound=False)  # 2 frames
    clip(tmp_path, "c.webm")  # another extension: not matched
    entries = ["clips/*.mp4", {"path": "clips/b.mp4", "every": 2}]  # b: its own entry
    manifest = load_manifest(write(tmp_path, content=entries))
    sequences = {spec.sequence for spec in manifest.contents}
    assert {(s.name, s.frames) for s in sequences if s is not None} == {("a", 4), ("b", 1)}
    assert len(list((tmp_path / "out" / ".nst-batch" / "frames").iterdir())) == 2
    # A video of ours (an animation with its key) where the pattern looks is not an input.
    (frame,) = [spec.path for spec in manifest.contents if spec.name == "b/frame_000001"]
    ours = tmp_path / "clips" / "a__starry_night.mp4"
    video.encode([frame], ours, tmp_path / "clips", "mp4", Fraction(8), {KEY_METADATA: "k"})
    again = load_manifest(write(tmp_path, content=entries, output="clips"))
    assert {spec.name.split("/")[0] for spec in again.contents} == {"a", "b"}


def test_a_pattern_of_videos_is_refused_before_decoding_when_names_clash(tmp_path: Path) -> None:
    clip(tmp_path, "walk.mp4")
    clip(tmp_path, "x/walk.mp4")
    manifest = write(tmp_path, {"path": "clips/**/*.mp4"})
    clips = tmp_path / "clips"
    assert (
        f"{manifest}: content[0] 'clips/**/*.mp4': the videos {clips / 'walk.mp4'} and "
        f"{clips / 'x' / 'walk.mp4'} would both be the sequence 'walk'; rename one, or list each "
        "as an entry of its own with a 'name:'"
    ) in refused(tmp_path, manifest)
    manifest = write(tmp_path, {"path": "clips/**/*.mp4", "name": "walk"})
    assert (
        f"{manifest}: content[0] 'clips/**/*.mp4': 'name' needs a single video, but it matches 2"
    ) in refused(tmp_path, manifest)
    assert not (tmp_path / "out" / ".nst-batch" / "frames").exists()


def test_the_shipped_video_job_takes_the_sample_clip_small(tmp_path: Path) -> None:
    shipped = REPO / "jobs" / "video.yaml"
    manifest = load_manifest(shipped, [f"output={tmp_path / 'out'}"])
    sequence = manifest.contents[0].sequence
    assert sequence is not None and sequence.video is not None
    assert (sequence.name, sequence.frames, sequence.animation) == ("coffee", 36, "mp4")
    assert (sequence.video.width, sequence.video.height, sequence.video.rate) == (128, 96, 12)
    assert sequence.video.whole and sequence.video.audio == "aac"  # its sound goes with it
    assert [spec.name for spec in manifest.styles] == ["starry_night"]
    assert manifest.contents[0].path.is_relative_to(tmp_path / "out" / ".nst-batch" / "frames")


# -- refusals -----------------------------------------------------------------------------


def refused(tmp_path: Path, manifest: Path) -> str:
    result = CliRunner().invoke(main, [str(manifest), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert not list((tmp_path / "out").glob("*/frame_*")), "no frame decoded"
    return result.output


def test_a_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "clips" / "walk.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"not a video at all\n" * 20)
    manifest = write(tmp_path)
    output = refused(tmp_path, manifest)
    assert (
        f"{manifest}: content[0] 'clips/walk.mp4': it is not a video FFmpeg can decode "
        "(Invalid data found when processing input"
    ) in output
    assert (
        "give an MP4, MOV, WebM or MKV file, or a folder of frames with 'sequence: true'" in output
    )


def test_a_file_with_only_sound_is_refused(tmp_path: Path) -> None:
    sound = tmp_path / "clips" / "walk.mp4"
    sound.parent.mkdir()
    with av.open(str(sound), "w") as out:
        audio = out.add_stream("aac", rate=22_050)
        audio.layout = "mono"
        piece = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "flt", "mono")
        piece.sample_rate, piece.pts = 22_050, 0
        out.mux([*audio.encode(piece), *audio.encode(None)])
    manifest = write(tmp_path)
    assert (
        f"{manifest}: content[0] 'clips/walk.mp4': it holds no video stream; give a video file"
    ) in refused(tmp_path, manifest)


@pytest.mark.parametrize(
    ("entry", "doc", "message"),
    [
        (
            None,
            {"style": ["clips/walk.mp4"]},
            "style[0] 'clips/walk.mp4': a video cannot be a style: a style is one picture; save "
            "a frame of it as an image and give that",
        ),
        (
            {"path": "clips/walk.mp4", "start": 2.0},
            {},
            "content[0] 'clips/walk.mp4': no frame lies between 2 s and its end (the video is "
            "0.50 s long); choose 'start' and 'end' within it",
        ),
        (
            {"path": "clips/walk.mp4", "start": 0.4, "end": 0.2},
            {},
            "content[0] 'clips/walk.mp4': 'end' (0.2 s) is not after 'start' (0.4 s); give an "
            "end after the start, or leave it out to take the video to its end",
        ),
        (
            None,
            {"max_pixels": 2000},
            "content[0] 'clips/walk.mp4': its frames are 64x48 px (3,072 pixels), over "
            "max_pixels (2,000); set 'max_side' on the entry (such as 1280) to scale them "
            "down, or raise max_pixels",
        ),
        (
            {"path": "clips/walk.mp4", "fps": 4},
            {},
            "content[0] 'clips/walk.mp4': a video plays at its own frame rate; remove 'fps' "
            "(take fewer frames with 'every')",
        ),
        (
            {"path": "clips/walk.mp4", "animation": "webm"},
            {},
            "content[0] 'clips/walk.mp4': its sound is aac, which a WEBM file cannot hold "
            "unchanged; use 'animation: mp4', or 'gif' or 'webp' (without sound)",
        ),
        (
            {"path": str(CONTENT / "chelsea.png"), "every": 2},
            {},
            f"content[0] '{CONTENT / 'chelsea.png'}': 'every' takes part of a video file "
            "(.mp4, .mov, .webm, .mkv ...), and "
            f"'{CONTENT / 'chelsea.png'}' is not one; remove it",
        ),
        (
            {"path": "clips/*"},
            {},
            "content[0] 'clips/*': the pattern matches no image, but 1 video (.mp4): a pattern "
            "ending in a video's extension, such as 'clips/*.mp4', takes each video as a "
            "sequence of its frames",
        ),
        (
            {"path": "clips/*.mov"},
            {},
            "content[0] 'clips/*.mov': the pattern matches no video",
        ),
        (
            None,
            {"pairs": [{"content": "clips/walk.mp4", "style": str(STARRY)}]},
            "pairs[0].content 'clips/walk.mp4': a video cannot be a pair's content: list videos "
            "under content: (with style:)",
        ),
    ],
)
def test_a_video_that_cannot_work_is_refused_before_any_work(
    tmp_path: Path, entry: dict[str, Any] | None, doc: dict[str, Any], message: str
) -> None:
    clip(tmp_path)
    if "pairs" in doc:
        doc = {**doc, "content": None, "style": None}
    manifest = write(tmp_path, entry, **doc)
    if "pairs" in doc:
        text = yaml.safe_load(manifest.read_text())
        del text["content"], text["style"]
        manifest.write_text(yaml.safe_dump(text))
    assert f"{manifest}: {message}" in refused(tmp_path, manifest)


def test_a_clip_too_large_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    clip(tmp_path)
    manifest = write(tmp_path, max_pixels=2000)
    refused(tmp_path, manifest)
    assert not (tmp_path / "out" / ".nst-batch" / "frames").exists() or not any(
        (tmp_path / "out" / ".nst-batch" / "frames").iterdir()
    )
    # max_side brings it within the limit: 32x24 = 768 pixels.
    entry = {"path": "clips/walk.mp4", "max_side": 32}
    assert len(load_manifest(write(tmp_path, entry, max_pixels=2000)).contents) == 4


# -- out: real runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mp4_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 0.5 s clip with its tone stylized through the installed command, as an MP4."""
    folder = tmp_path_factory.mktemp("mp4")
    clip(folder)
    manifest = write(folder)
    done = subprocess.run([str(NST_BATCH), str(manifest), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_an_mp4_out_plays_in_a_browser_with_the_clips_sound(mp4_run: Path) -> None:
    rows = read_rows(mp4_run / "out" / "results.csv")
    assert [r.status for r in rows] == ["done"] * 4
    made = streams(mp4_run / "out" / "walk__starry_night.mp4")
    source = streams(mp4_run / "clips" / "walk.mp4")
    assert (made["video"], made["pix_fmt"]) == ("h264", "yuv420p")  # what browsers play
    assert made["rate"] == source["rate"] == 8
    assert made["frames"] == 4 and made["size"] == (48, 36)
    assert made["duration"] == pytest.approx(0.5, abs=0.05)
    assert (made["audio"], made["sample_rate"]) == (source["audio"], source["sample_rate"])
    assert made["packets"] == source["packets"]  # copied, not encoded again
    recorded = video.read_metadata(mp4_run / "out" / "walk__starry_night.mp4")
    assert recorded[KEY_METADATA] == rows[-1].key
    assert json.loads(recorded[ANIMATION_METADATA])["rate"] == "8"
    page = (mp4_run / "out" / "index.html").read_text()
    assert '<video src="walk__starry_night.mp4"' in page
    assert "autoplay muted loop playsinline></video>" in page


@pytest.mark.slow
def test_a_rerun_decodes_nothing_and_redoes_nothing(
    mp4_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = mp4_run / "out"
    animation = out / "walk__starry_night.mp4"
    before = animation.stat().st_mtime_ns

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(video, "decode", no_decoding)
    monkeypatch.setattr(video, "probe", no_decoding)
    monkeypatch.chdir(mp4_run)
    result = CliRunner().invoke(main, [str(mp4_run / "m.yaml")])
    assert result.exit_code == 0, result.output
    assert "4 tasks: 0 done, 4 skipped, 0 failed" in result.output
    assert animation.stat().st_mtime_ns == before  # up to date: not written again


@pytest.mark.slow
def test_another_animation_replaces_ours_without_redoing_a_frame(mp4_run: Path) -> None:
    out = mp4_run / "out"
    manifest = write(mp4_run, {"path": "clips/walk.mp4", "animation": "webp"})
    result = CliRunner().invoke(main, [str(manifest)])
    assert result.exit_code == 0, result.output
    assert "4 tasks: 0 done, 4 skipped, 0 failed" in result.output
    assert not (out / "walk__starry_night.mp4").exists()  # ours, of another kind: removed
    with Image.open(out / "walk__starry_night.webp") as webp:
        assert (webp.format, webp.n_frames, webp.mode) == ("WEBP", 4, "RGB")
        webp.seek(1)
        webp.load()
        assert webp.info["duration"] == 125  # 8 fps
    rows = read_rows(out / "results.csv")
    from nst_batch.images import read_metadata

    assert read_metadata(out / "walk__starry_night.webp")[KEY_METADATA] == rows[-1].key
    page = (out / "index.html").read_text()
    assert '<img src="walk__starry_night.webp"' in page and "<video" not in page
    cleaned = CliRunner().invoke(main, ["clean", str(manifest), "--yes"])
    assert cleaned.exit_code == 0, cleaned.output
    assert "removed 0 files" in cleaned.output  # the planned WebP is no stale output
    assert (out / "walk__starry_night.webp").is_file()


def test_a_webm_carries_an_opus_sound_unchanged(tmp_path: Path) -> None:
    source = clip(tmp_path, "walk.webm")
    manifest = load_manifest(write(tmp_path, {"path": "clips/walk.webm", "animation": "webm"}))
    sequence = manifest.contents[0].sequence
    assert sequence is not None and sequence.video is not None and sequence.video.audio == "opus"
    target = tmp_path / "out" / "walk.webm"
    clip_ = sequence.video
    sound = video.Sound(source, clip_.span, clip_.whole)
    video.encode(clip_.files, target, tmp_path / "out", "webm", clip_.rate, {"k": "v"}, sound)
    made, given = streams(target), streams(source)
    assert (made["video"], made["pix_fmt"], made["frames"]) == ("vp9", "yuv420p", 4)
    assert (made["audio"], made["sample_rate"]) == ("opus", given["sample_rate"])
    assert made["packets"] == given["packets"]
    assert video.read_metadata(target) == {"k": "v"}


def test_a_part_of_a_clip_carries_the_sound_of_that_part(tmp_path: Path) -> None:
    source = clip(tmp_path, seconds=1.0)
    entry = {"path": "clips/walk.mp4", "start": 0.5}
    sequence = load_manifest(write(tmp_path, entry)).contents[0].sequence
    assert sequence is not None and sequence.video is not None
    taken = sequence.video
    target = tmp_path / "out" / "part.mp4"
    sound = video.Sound(source, taken.span, taken.whole)
    video.encode(taken.files, target, tmp_path / "out", "mp4", taken.rate, {}, sound)
    made, given = streams(target), streams(source)
    assert made["frames"] == 4
    assert 0 < len(made["packets"]) < len(given["packets"])
    assert set(made["packets"]) <= set(given["packets"])  # whole packets, unchanged
    assert made["duration"] == pytest.approx(0.5, abs=0.06)


def test_planning_without_a_video_does_not_import_pyav(tmp_path: Path) -> None:
    manifest = write(tmp_path, {"path": str(CONTENT / "chelsea.png")})
    code = (
        "import sys; from nst_batch.manifest import load_manifest; from nst_batch.plan import "
        f"plan; plan(load_manifest({str(manifest)!r})); print('av' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_bundled_clip_is_small_and_has_a_sound_track() -> None:
    sample = REPO / "examples" / "videos" / "coffee.mp4"
    assert os.path.getsize(sample) < 300_000
    found = streams(sample)
    assert (found["video"], found["audio"], found["rate"], found["frames"]) == (
        "h264",
        "aac",
        12,
        36,
    )
    assert layout.is_decoded_frame(".nst-batch/frames/0123abcd/frame_000001.png")


@pytest.mark.slow
def test_a_frame_not_done_removes_the_video(mp4_run: Path) -> None:
    out = mp4_run / "out"
    manifest = write(mp4_run)  # animation: mp4 again
    result = CliRunner().invoke(main, ["report", str(manifest)])
    assert result.exit_code == 0, result.output
    assert (out / "walk__starry_night.mp4").is_file()  # written again, all frames done
    assert not (out / "walk__starry_night.webp").exists()
    (out / "walk__starry_night" / "frame_000003.jpg").unlink()
    result = CliRunner().invoke(main, ["report", str(manifest)])
    assert result.exit_code == 0, result.output
    assert not (out / "walk__starry_night.mp4").exists()  # would show a frame that is gone
    assert (out / ".nst-batch" / "frames").is_dir()  # the decoded frames stay
