"""`nst-batch clean`: exactly the files the manifest no longer makes, listed, then removed
with --yes; never an input or a file nst-batch did not write, nothing while a run holds
the output folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from conftest import CONTENT, STYLE, invoke
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
