"""`nst-batch clean`: exactly the files the manifest no longer makes, listed, then removed
with --yes; never an input or a file nst-batch did not write, nothing while a run holds
the output folder."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import yaml
from conftest import CONTENT, REPO, STYLE, invoke
from PIL import Image

from nst_batch import layout


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_clean_lists_then_removes_exactly_what_the_plan_no_longer_makes(write_manifest):
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu", format="png")
    assert invoke(manifest).exit_code == 0
    root = manifest.parent / "out"
    # Beside the gallery: a user's own picture, an input kept in the output folder, an
    # orphan checkpoint and a flow cache entry of a sequence that is gone.
    Image.new("RGB", (40, 30), "red").save(root / "mine.png")
    shutil.copy(CONTENT / "coffee.png", root / "coffee-input.png")
    orphan = layout.checkpoint_path(root, "gone__starry_night.png", "ab12")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"checkpoint")
    flow = layout.flow_path(root, "0" * 32 + ".npz")
    flow.parent.mkdir(parents=True, exist_ok=True)
    flow.write_bytes(b"flow")

    doc = yaml.safe_load(manifest.read_text())
    doc["style"] = [str(STYLE / "starry_night.jpg")]  # the_scream leaves the gallery
    doc["content"] = [str(CONTENT / "chelsea.png"), str(root / "coffee-input.png")]
    manifest.write_text(yaml.safe_dump(doc))
    before = _files(root)

    listed = invoke("clean", manifest)
    assert listed.exit_code == 0, listed.output
    gone = {
        "chelsea__the_scream.png",
        "chelsea__the_scream.png.json",
        "coffee__the_scream.png",
        "coffee__the_scream.png.json",
        "coffee__starry_night.png",  # coffee is now 'coffee-input': another output name
        "coffee__starry_night.png.json",
        "thumbs/outputs/chelsea__the_scream.png.jpg",
        "thumbs/outputs/coffee__the_scream.png.jpg",
        "thumbs/outputs/coffee__starry_night.png.jpg",
        "thumbs/style/the_scream.jpg",
        "thumbs/content/coffee.jpg",
        str(orphan.relative_to(root)),
        str(flow.relative_to(root)),
    }
    shown = {line.split()[-1] for line in listed.output.splitlines() if line.startswith("  ")}
    assert shown == gone
    assert "13 files" in listed.output and "remove them with --yes" in listed.output
    assert _files(root) == before  # listing removes nothing

    removed = invoke("clean", manifest, "--yes")
    assert removed.exit_code == 0 and "removed 13 files" in removed.output
    assert _files(root) == before - gone
    assert {"mine.png", "coffee-input.png", "chelsea__starry_night.png"} <= _files(root)
    assert not (root / layout.STATE / layout.FLOW).exists()  # emptied folders go too
    assert "nothing to clean" in invoke("clean", manifest).output
    dry = invoke(manifest, "-n")
    assert "1 to run, 1 up to date" in dry.output  # coffee-input is new; chelsea is kept


def test_clean_waits_for_no_run_and_changes_nothing_during_one(write_manifest) -> None:
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu")
    assert invoke(manifest).exit_code == 0
    root = manifest.parent / "out"
    doc = yaml.safe_load(manifest.read_text())
    doc["style"] = doc["style"][:1]
    manifest.write_text(yaml.safe_dump(doc))
    before = _files(root)
    with layout.hold(root, None):
        held = invoke("clean", manifest, "--yes")
    assert held.exit_code == 75 and "lock" in held.output
    assert _files(root) == before


def _make_clip(path: Path) -> Path:
    """A silent 0.5 s clip, 64x48 at 8 fps (4 frames), by scripts/make_clip.py."""
    spec = importlib.util.spec_from_file_location("make_clip", REPO / "scripts" / "make_clip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_clip(CONTENT / "chelsea.png", path, 0.5, 8, (64, 48), sound=False)


def test_clean_removes_the_frames_of_a_clip_no_entry_takes_any_more(
    write_manifest, tmp_path: Path
) -> None:
    _make_clip(tmp_path / "clips" / "walk.mp4")
    entry = {"path": "clips/walk.mp4", "animation": "mp4"}
    manifest = write_manifest(content=[entry], style=[str(STYLE / "starry_night.jpg")])
    root = manifest.parent / "out"
    frames = root / layout.STATE / layout.FRAMES
    assert "nothing to clean" in invoke("clean", manifest).output  # it decodes the clip
    (taken,) = frames.iterdir()
    # A decoding killed before its rename, and files that are not ours, beside it.
    killed = frames / f".{taken.name}.0123abcd.nst-batch.tmp"
    killed.mkdir()
    shutil.copy(taken / "frame_000001.png", killed / "frame_000001.png")
    (frames / "notes.txt").write_text("mine")
    (frames / "mine").mkdir()
    shutil.copy(taken / "frame_000001.png", frames / "mine" / "frame_000001.png")
    (taken / "notes.txt").write_text("mine too")

    manifest.write_text(manifest.read_text().replace("animation: mp4", "every: 2"))
    listed = invoke("clean", manifest)
    assert listed.exit_code == 0, listed.output
    (now,) = set(frames.glob("[0-9a-f]*")) - {taken}  # every 2nd frame: another digest
    assert (now / layout.FRAMES_RECORD).is_file()
    stale = {
        *(f"{taken.name}/frame_{n:06d}.png" for n in range(1, 5)),
        f"{taken.name}/{layout.FRAMES_RECORD}",
        f"{killed.name}/frame_000001.png",
    }
    shown = {line.split()[-1] for line in listed.output.splitlines() if line.startswith("  ")}
    assert shown == {f".nst-batch/frames/{name}" for name in stale}
    assert all(line.split()[0] == "frames" for line in listed.output.splitlines()[:-1])
    assert "6 files" in listed.output

    removed = invoke("clean", manifest, "--yes")
    assert removed.exit_code == 0 and "removed 6 files" in removed.output, removed.output
    assert not killed.exists()  # emptied: gone
    assert _files(taken) == {"notes.txt"}  # not ours: kept, and so is its folder
    assert (frames / "notes.txt").is_file() and (frames / "mine" / "frame_000001.png").is_file()
    assert len(list(now.glob("frame_*.png"))) == 2  # every 2nd of 4: taken, kept
    assert "nothing to clean" in invoke("clean", manifest).output

    # No video at all any more: the frames it took are stale too.
    write_manifest(content=[str(CONTENT / "chelsea.png")], style=[str(STYLE / "starry_night.jpg")])
    removed = invoke("clean", manifest, "--yes")
    assert "removed 3 files" in removed.output, removed.output
    assert not now.exists()
