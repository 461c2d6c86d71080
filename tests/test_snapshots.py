"""Progress snapshots (`save_every`): at the right steps, valid images, never outputs or inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CONTENT, STYLE, invoke
from PIL import Image

from nst_batch import layout
from nst_batch.images import read_metadata
from nst_batch.manifest import ManifestError, load_manifest
from nst_batch.metadata import KEY_METADATA, SNAPSHOT_METADATA
from nst_batch.plan import plan


def _run(manifest: Path, *args: str) -> str:
    result = invoke(manifest, *args)
    assert result.exit_code == 0, result.output
    return result.output


def _snapshots(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.step*.jpg"))


@pytest.mark.slow
def test_snapshots_appear_at_the_right_steps_as_valid_images(
    write_manifest: Callable[..., Path],
) -> None:
    manifest = write_manifest(params={"steps": 9, "save_every": 4})
    out = manifest.parent / "out"
    _run(manifest)
    tasks = plan(load_manifest(manifest))
    expected = sorted(
        f"{Path(t.relative_output).stem}.step{n:04d}.jpg" for t in tasks for n in (4, 8)
    )
    assert _snapshots(out) == expected
    task = tasks[0]
    for step, path in layout.snapshots(task.output):
        with Image.open(path) as image:
            image.load()
            assert image.size == Image.open(task.output).size
        recorded = read_metadata(path)
        assert recorded[KEY_METADATA] == task.key
        assert json.loads(recorded[SNAPSHOT_METADATA])["step"] == step
    page = (out / "index.html").read_text()
    assert f'href="{Path(task.relative_output).stem}.step0004.jpg">4</a>' in page


def test_save_every_is_not_part_of_the_key(write_manifest: Callable[..., Path]) -> None:
    keys = [t.key for t in plan(load_manifest(write_manifest()))]
    watched = plan(load_manifest(write_manifest(params={"save_every": 2})))
    assert [t.key for t in watched] == keys


def test_snapshots_are_never_planned_as_inputs(write_manifest: Callable[..., Path]) -> None:
    # The output folder inside the content folder, taken by a recursive glob: a rerun
    # plans the same tasks, though the folder now holds outputs and snapshots.
    photos = write_manifest().parent / "photos"
    photos.mkdir()
    (photos / "chelsea.png").write_bytes((CONTENT / "chelsea.png").read_bytes())
    manifest = write_manifest(
        content="photos/**/*",
        style=[str(STYLE / "the_scream.jpg")],
        output="photos/out",
        params={"steps": 4, "save_every": 2},
    )
    first = plan(load_manifest(manifest))
    _run(manifest)
    out = photos / "out"
    assert _snapshots(out) == [
        "chelsea__the_scream.step0002.jpg",
        "chelsea__the_scream.step0004.jpg",
    ]
    # a snapshot stripped of its metadata still counts as ours, by its name
    stripped = out / "chelsea__the_scream.step0002.jpg"
    Image.open(stripped).save(stripped)
    assert KEY_METADATA not in read_metadata(stripped)
    again = plan(load_manifest(manifest))
    assert [t.content.name for t in again] == [t.content.name for t in first] == ["chelsea"]


@pytest.mark.slow
def test_a_rerun_of_the_task_removes_its_old_snapshots(write_manifest: Callable[..., Path]) -> None:
    manifest = write_manifest(params={"steps": 8, "save_every": 3})
    out = manifest.parent / "out"
    _run(manifest)
    assert len(_snapshots(out)) == 8  # steps 3 and 6 of 4 tasks
    _run(manifest)  # up to date: nothing reruns, the snapshots stay
    assert len(_snapshots(out)) == 8
    _run(write_manifest(params={"steps": 8, "save_every": 4}), "--force")
    assert {n.split(".")[1] for n in _snapshots(out)} == {"step0004", "step0008"}
    _run(write_manifest(params={"steps": 8}), "--force")  # snapshots off: the old ones go
    assert _snapshots(out) == []


def test_an_output_named_like_a_snapshot_is_refused(write_manifest: Callable[..., Path]) -> None:
    manifest = write_manifest(name="{style}/{content}.step0100")
    with pytest.raises(ManifestError, match="named like a progress snapshot"):
        load_manifest(manifest)
