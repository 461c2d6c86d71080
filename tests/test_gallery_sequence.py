"""Tests of sequences in the gallery: a row per sequence, a cell per chain of frames, and the
chain's animation (`<chain>.gif`).

The hand-made gallery has a 4-frame sequence `clip` (frames of four colours) and a still
image, in two styles; its outputs are solid-colour images carrying their task keys, written
without style transfer. One real run at the end makes a 4-frame sequence at 48 px.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from conftest import CONTENT, STYLE, invoke, write_manifest_in
from PIL import Image
from test_gallery import LAYOUT, PageReader, _near, _row

from nst_batch.gallery import GalleryFiles, write_gallery
from nst_batch.gallery.animation import frame_duration
from nst_batch.images import read_metadata, save_image
from nst_batch.layout import PAGE, SHEET
from nst_batch.manifest import Manifest, ManifestError, load_manifest
from nst_batch.metadata import ANIMATION_METADATA, KEY_METADATA
from nst_batch.plan import Task, plan
from nst_batch.results import ResultRow, ResultsWriter, merge

FRAMES = ((200, 40, 40), (40, 160, 40), (40, 40, 200), (220, 200, 40))  # each frame's colour
STILL = (120, 120, 120)
STYLES = ("starry_night", "the_scream")


# --- a hand-made gallery ------------------------------------------------------------------


def _frames(folder: Path) -> Path:
    """A folder of four 64 x 48 frames, named so that natural order differs from sorted order."""
    frames = folder / "clip"
    frames.mkdir(parents=True, exist_ok=True)
    for number, colour in zip((1, 2, 9, 10), FRAMES, strict=True):
        Image.new("RGB", (64, 48), colour).save(frames / f"f{number}.png")
    return frames


def _manifest(folder: Path, **fields: Any) -> Manifest:
    """The `_frames` clip (a GIF at 10 fps) and chelsea x STYLES, at 64 px and 8 steps."""
    _frames(folder)
    clip = {"path": "clip/", "sequence": True, "animation": "gif", "fps": 10}
    doc = {
        "content": [clip, str(CONTENT / "chelsea.png")],
        "style": [str(STYLE / f"{name}.jpg") for name in STYLES],
        **fields,
    }
    return load_manifest(write_manifest_in(folder, **doc))


def _finish(task: Task, colour: Sequence[int] | None = None, **values: Any) -> ResultRow:
    """A done task: a solid-colour output carrying its key, and its row."""
    if colour is None:
        colour = FRAMES[task.content.frame] if task.content.sequence else STILL
    save_image(Image.new("RGB", (64, 48), tuple(colour)), task.output, {KEY_METADATA: task.key})
    numbers = {"content_loss": 10.0, "style_loss": 20.0, "tv_loss": 0.0, "total_loss": 30.0}
    return _row(task, **{"status": "done", **numbers, "steps": 8, "seconds": 1.5, **values})


def _chain(tasks: Sequence[Task], style: str) -> list[Task]:
    """The frames of `clip` in `style`, in order."""
    frames = [t for t in tasks if t.content.sequence is not None and t.style.name == style]
    return sorted(frames, key=lambda t: t.content.frame)


def _still(tasks: Sequence[Task], style: str) -> Task:
    (found,) = [t for t in tasks if t.content.sequence is None and t.style.name == style]
    return found


@dataclass
class Made:
    manifest: Manifest
    tasks: list[Task]
    rows: list[ResultRow]
    files: GalleryFiles | None = None

    @property
    def out(self) -> Path:
        return self.manifest.output

    def gif(self, style: str = "starry_night") -> Path:
        return self.out / f"clip__{style}.gif"

    def write(self) -> GalleryFiles:
        with ResultsWriter(self.out / "results.csv") as writer:
            writer.write_all(self.rows)
        self.rows = []
        self.files = write_gallery(self.manifest, self.tasks, merge([self.out / "results.csv"]))
        return self.files

    def page(self) -> PageReader:
        return PageReader((self.out / PAGE).read_text(encoding="utf-8"))


def make_gallery(folder: Path, **fields: Any) -> Made:
    """Every frame done in starry_night, two of four in the_scream; the still done in both."""
    manifest = _manifest(folder, **fields)
    tasks = plan(manifest)
    rows = [_finish(t) for t in _chain(tasks, "starry_night")]
    rows += [_finish(t) for t in _chain(tasks, "the_scream")[:2]]
    rows += [_finish(_still(tasks, style)) for style in STYLES]
    made = Made(manifest, tasks, rows)
    made.write()
    return made


@pytest.fixture
def made(tmp_path: Path) -> Made:
    return make_gallery(tmp_path)


def _gif_frames(path: Path) -> list[tuple[tuple[int, int, int], int]]:
    """(centre colour, duration in ms) of each frame of a GIF."""
    seen = []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            rgb = gif.convert("RGB")
            seen.append((rgb.getpixel((rgb.width // 2, rgb.height // 2)), gif.info["duration"]))
    return seen


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


# --- the animation ------------------------------------------------------------------------


def test_a_done_chain_gets_an_animation_of_its_frames_in_order(made: Made) -> None:
    assert made.files is not None and made.files.failures == ()
    gif = made.gif()
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.size == (64, 48)
        assert image.n_frames == 4
        assert image.info["loop"] == 0  # forever
    seen = _gif_frames(gif)
    assert [duration for _, duration in seen] == [100] * 4  # 10 fps
    for (colour, _), wanted in zip(seen, FRAMES, strict=True):  # f1, f2, f9, f10
        assert _near(colour, wanted, tolerance=4)
    assert not made.gif("the_scream").exists()  # two frames of four: no animation
    assert not list(made.out.rglob("*.tmp"))


def test_frame_durations_are_whole_hundredths_browsers_keep() -> None:
    assert frame_duration(12) == 80  # 83.3 ms, as GIF can hold it
    assert frame_duration(10) == 100
    assert frame_duration(24) == 40
    assert frame_duration(120) == 20  # browsers would show 10 ms frames for 100 ms


def test_the_animation_records_its_chain_and_is_never_an_input(tmp_path: Path) -> None:
    made = make_gallery(tmp_path)
    last = _chain(made.tasks, "starry_night")[-1]
    metadata = read_metadata(made.gif())
    assert metadata[KEY_METADATA] == last.key
    assert metadata[ANIMATION_METADATA] == '{"duration": 100, "frames": 4}'
    # The output folder is the sequence's own folder: the animation lands among the frames.
    doc = yaml.safe_load(made.manifest.path.read_text())
    doc["output"] = "clip"
    made.manifest.path.write_text(yaml.safe_dump(doc))
    inside = load_manifest(made.manifest.path)
    tasks = plan(inside)
    rows = [_finish(t) for t in _chain(tasks, "starry_night")]
    again = Made(inside, tasks, rows)
    again.write()
    assert again.gif().is_file() and (tmp_path / "clip" / "clip__starry_night.gif").is_file()
    reloaded = load_manifest(made.manifest.path)
    assert [spec.path.name for spec in reloaded.contents] == [
        "f1.png",
        "f2.png",
        "f9.png",
        "f10.png",
        "chelsea.png",
    ]
    assert [t.key for t in plan(reloaded)] == [t.key for t in tasks]


def test_an_input_where_an_animation_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    shutil.copyfile(STYLE / "starry_night.jpg", tmp_path / "starry_night.jpg")
    Image.new("RGB", (64, 48)).save(tmp_path / "out" / "clip__starry_night.gif")
    with pytest.raises(ManifestError, match=r"clip__starry_night\.gif would be overwritten"):
        _manifest(
            tmp_path,
            style=[str(tmp_path / "starry_night.jpg"), "out/clip__starry_night.gif"],
        )


def test_an_up_to_date_rerun_does_not_rewrite_the_animation(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _identity(made.gif())
    page = _identity(made.out / PAGE)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date animation was written again")

    monkeypatch.setattr("nst_batch.gallery.animation.save_animation", refuse)
    assert made.write().failures == ()
    assert _identity(made.gif()) == before
    assert _identity(made.out / PAGE) == page


def test_a_newer_frame_output_rebuilds_the_animation(made: Made) -> None:
    before = _identity(made.gif())
    second = _chain(made.tasks, "starry_night")[1]
    save_image(
        Image.new("RGB", (64, 48), (255, 255, 255)), second.output, {KEY_METADATA: second.key}
    )
    made.write()
    assert _identity(made.gif()) != before
    assert _near(_gif_frames(made.gif())[1][0], (255, 255, 255), tolerance=4)


def test_another_frame_rate_rebuilds_the_animation(tmp_path: Path) -> None:
    made = make_gallery(tmp_path)
    slower = load_manifest(made.manifest.path, ["content.0.fps=5"])
    made.manifest, made.tasks = slower, plan(slower)  # the keys stay: fps is not a setting
    made.write()
    assert [duration for _, duration in _gif_frames(made.gif())] == [200] * 4


def test_a_failed_frame_leaves_no_animation(made: Made) -> None:
    assert made.gif().is_file()
    # New settings: three frames redone, the last failed, its old output still there.
    changed = load_manifest(made.manifest.path, ["params.steps=9"])
    tasks = plan(changed)
    chain = _chain(tasks, "starry_night")
    made.manifest, made.tasks = changed, tasks
    made.rows = [_finish(t) for t in chain[:3]]
    made.rows.append(_row(chain[3], status="failed", error="out of memory on cpu"))
    made.write()
    assert not made.gif().exists()  # the old one would show other settings' frames
    cells = made.page().cells
    assert cells[0].state == "failed"
    assert "3 of 4 frames done; f10 failed: out of memory on cpu" in cells[0].text
    assert cells[0].images == []


def test_a_missing_frame_output_leaves_no_animation(made: Made) -> None:
    _chain(made.tasks, "starry_night")[2].output.unlink()
    made.write()
    assert not made.gif().exists()
    cell = made.page().cells[0]
    assert cell.state == "missing" and "3 of 4 frames done; f9 missing" in cell.text


def test_an_image_of_someone_else_at_the_animation_is_left_alone(made: Made) -> None:
    theirs = made.gif("the_scream")  # that chain is not done: ours would be removed
    Image.new("RGB", (64, 48), (1, 2, 3)).save(theirs)
    made.write()
    assert theirs.is_file() and KEY_METADATA not in read_metadata(theirs)


def test_an_animation_that_cannot_be_written_is_a_failure_of_its_own(made: Made) -> None:
    made.gif().unlink()
    made.gif().mkdir()  # a folder where the file goes
    files = made.write()
    (failure,) = files.failures
    assert failure.what == "clip__starry_night.gif"
    assert "Cannot save" in failure.why and "clip__starry_night.gif" in failure.why
    cell = made.page().cells[0]  # the rest is written: the first frame stands in
    assert cell.state == "done" and "first of 4 frames" in cell.text
    assert [unquote(link) for link in cell.links] == ["clip__starry_night/f1.jpg"]
    assert cell.images[0].startswith("thumbs/outputs/clip__starry_night/f1.jpg")


def test_a_whole_run_removes_the_temporaries_of_animations(tmp_path: Path) -> None:
    # clip/starry_night.gif beside the frames' folder clip/starry_night/: clip/ holds no output
    made = make_gallery(tmp_path, name="{content}/{style}")
    torn = made.out / "clip" / ".starry_night.gif.0123abcd.nst-batch.tmp"
    assert (made.out / "clip" / "starry_night.gif").is_file()
    torn.write_bytes(b"torn")
    result = invoke("report", made.manifest.path)
    assert result.exit_code == 0, result.output
    assert not torn.exists()


# --- the page and the contact sheet -------------------------------------------------------


def test_a_row_per_sequence_with_its_chains_aggregated(made: Made) -> None:
    page = made.page()
    assert page.headers == ["starry_night", "the_scream", "clip", "chelsea"]
    text = (made.out / PAGE).read_text()
    assert '<div class="frames">4 frames</div>' in text
    assert len(page.cells) == 2 * 2
    done, partial = page.cells[0], page.cells[1]
    assert done.state == "done"
    assert done.links == ["clip__starry_night.gif"] and done.images == ["clip__starry_night.gif"]
    assert "animation of 4 frames; losses of the last frame" in done.text
    assert "total 30" in done.text
    assert partial.state == "pending" and "2 of 4 frames done" in partial.text
    assert partial.images == []
    # Counts are of tasks: 8 frames and 2 stills.
    assert "10 tasks: 8 done, 2 pending." in text


def test_every_image_and_link_of_a_sequence_resolves(made: Made) -> None:
    page = made.page()
    for url in page.images + page.links:
        assert "://" not in url and not url.startswith("/")
        assert (made.out / unquote(url)).is_file(), url


def test_the_page_follows_a_frame_that_finishes(made: Made) -> None:
    before = (made.out / PAGE).read_bytes()
    chain = _chain(made.tasks, "the_scream")
    made.rows = [_finish(chain[2])]
    made.write()
    page = made.page()
    assert (made.out / PAGE).read_bytes() != before  # the record saw a frame's new state
    assert "3 of 4 frames done" in page.cells[1].text
    made.rows = [_finish(chain[3])]
    made.write()
    assert made.page().cells[1].state == "done" and made.gif("the_scream").is_file()
    assert "10 tasks: 10 done." in (made.out / PAGE).read_text()


def test_the_contact_sheet_shows_a_sequence_by_its_first_frame(made: Made) -> None:
    with Image.open(made.out / SHEET) as sheet:
        assert sheet.size == LAYOUT.size(2, 2, 1)  # two rows: the sequence and the still
        rgb = sheet.convert("RGB")
    x, y = LAYOUT.slot(0, 1, 1)
    centre = (x + LAYOUT.cell // 2, y + LAYOUT.cell // 2)
    assert _near(rgb.getpixel(centre), FRAMES[0])
    x, y = LAYOUT.slot(0, 1, 2)  # two frames of four: a grey box
    assert _near(rgb.getpixel((x + 8, y + 8)), (200, 200, 200))


def test_report_counts_frames_as_the_page_does(made: Made) -> None:
    result = invoke("report", made.manifest.path)
    assert result.exit_code == 0, result.output
    assert "10 tasks planned: 8 done, 0 failed, 0 interrupted, 0 outdated, 2 not yet run" in (
        result.output
    )


def test_the_comparison_groups_a_sequence_too(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, sweep={"style_weight": [5, 10]})
    tasks = plan(manifest)
    made = Made(manifest, tasks, [_finish(t) for t in tasks if t.variant.name.endswith("-5")])
    made.write()
    text = (made.out / "compare.html").read_text()
    compare = PageReader(text)
    assert len(compare.cells) == 2 * 2 * 2  # (clip, chelsea) x 2 styles, 2 variants each
    assert compare.cells[0].state == "done"
    assert compare.cells[0].links == ["clip__starry_night__style_weight-5.gif"]
    assert compare.cells[1].state == "pending" and "0 of 4 frames done" in compare.cells[1].text
    for url in compare.images + compare.links:
        assert (made.out / unquote(url.split("#")[0])).is_file(), url


# --- through the command line -------------------------------------------------------------


@pytest.mark.slow
def test_a_real_sequence_run_makes_its_animation(tmp_path: Path) -> None:
    frames = tmp_path / "coffee"
    frames.mkdir()
    source = Path(__file__).resolve().parent.parent / "examples" / "sequences" / "coffee"
    for number in range(1, 5):
        shutil.copyfile(source / f"frame_{number:03d}.jpg", frames / f"frame_{number:03d}.jpg")
    manifest = write_manifest_in(
        tmp_path,
        content=[{"path": "coffee/", "sequence": True, "animation": "gif"}],
        style=[str(STYLE / "starry_night.jpg")],
        params={"size": 48, "steps": 2},
        devices="cpu",
    )
    result = invoke(manifest, "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    gif = out / "coffee__starry_night.gif"
    with Image.open(gif) as image:
        assert image.n_frames == 4 and image.info["duration"] == 80 and image.info["loop"] == 0
    page = PageReader((out / PAGE).read_text())
    assert page.headers == ["starry_night", "coffee"]
    (cell,) = page.cells
    assert cell.state == "done" and cell.links == ["coffee__starry_night.gif"]
    before = _identity(gif)
    again = invoke(manifest, "-q")
    assert again.exit_code == 0, again.output
    assert _identity(gif) == before
    assert [t.content.name for t in plan(load_manifest(manifest))] == [
        f"coffee/frame_{number:03d}" for number in range(1, 5)
    ]
