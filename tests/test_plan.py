"""Tests of nst_batch.plan: the task cross product, its order, task keys and up-to-date checks."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CONTENT, STYLE
from PIL import Image

from nst_batch.images import read_metadata, save_image
from nst_batch.manifest import load_manifest
from nst_batch.params import Params
from nst_batch.plan import (
    KEY_METADATA,
    Task,
    parse_shard,
    plan,
    shard,
    slurm_shard,
    split,
    task_key,
    up_to_date,
)

WriteManifest = Callable[..., Path]

THREE_CONTENTS = [str(CONTENT / n) for n in ("chelsea.png", "coffee.png", "rocket.jpg")]


def _keys(tasks: list[Task]) -> dict[tuple[str, str, str], str]:
    return {(t.content.name, t.style.name, t.variant.name): t.key for t in tasks}


def _plan(path: Path, overrides: tuple[str, ...] = ()) -> list[Task]:
    return plan(load_manifest(path, overrides))


def _changed(before: list[Task], after: list[Task]) -> set[tuple[str, str, str]]:
    old, new = _keys(before), _keys(after)
    assert old.keys() == new.keys()
    return {name for name in old if old[name] != new[name]}


def _tiny(path: Path, key: str | None) -> None:
    metadata = {KEY_METADATA: key} if key is not None else None
    save_image(Image.new("RGB", (4, 3), (200, 30, 60)), path, metadata)


# --- the cross product and its order ------------------------------------------------------


def test_cross_product_size_and_order(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(content=THREE_CONTENTS, sweep={"style_weight": [10, 100]})
    )
    tasks = plan(manifest)

    assert len(tasks) == 3 * 2 * 2
    assert len(manifest.contents) * len(manifest.styles) * len(manifest.variants) == len(tasks)
    combos = {(t.content.name, t.style.name, t.variant.name) for t in tasks}
    assert combos == set(
        itertools.product(
            ["chelsea", "coffee", "rocket"],
            ["starry_night", "the_scream"],
            ["style_weight-10", "style_weight-100"],
        )
    )
    # all tasks of one style are adjacent, styles in manifest order
    styles = [t.style.name for t in tasks]
    assert [name for name, _ in itertools.groupby(styles)] == ["starry_night", "the_scream"]
    # within a style: variant, then content, in manifest order
    assert [(t.variant.name, t.content.name) for t in tasks[:6]] == [
        ("style_weight-10", "chelsea"),
        ("style_weight-10", "coffee"),
        ("style_weight-10", "rocket"),
        ("style_weight-100", "chelsea"),
        ("style_weight-100", "coffee"),
        ("style_weight-100", "rocket"),
    ]


def test_tasks_carry_outputs_params_and_weights(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(format="png"))
    tasks = plan(manifest)

    assert [t.relative_output for t in tasks] == [
        "chelsea__starry_night.png",
        "coffee__starry_night.png",
        "chelsea__the_scream.png",
        "coffee__the_scream.png",
    ]
    for task in tasks:
        assert task.output == manifest.output / task.relative_output
        assert task.output.is_absolute()
        assert (task.params.size, task.params.steps) == (64, 8)
        assert task.weights == "original"
        assert task.max_pixels == manifest.max_pixels
        assert len(task.key) == 24
        int(task.key, 16)  # hex
    assert tasks[0].label == "chelsea x starry_night"
    assert len({t.key for t in tasks}) == len(tasks)


def test_tasks_of_one_style_share_style_targets(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest())
    groups = [t.target_group for t in tasks]
    assert groups[0] == groups[1] != groups[2] == groups[3]


def test_style_stays_adjacent_when_content_overrides_split_its_targets(
    write_manifest: WriteManifest,
) -> None:
    # a different size per content means different style targets within one style
    content = [
        str(CONTENT / "chelsea.png"),
        {"path": str(CONTENT / "coffee.png"), "params": {"size": 96}},
        str(CONTENT / "rocket.jpg"),
    ]
    tasks = _plan(write_manifest(content=content))
    assert [(t.style.name, t.content.name) for t in tasks] == [
        ("starry_night", "chelsea"),
        ("starry_night", "rocket"),
        ("starry_night", "coffee"),
        ("the_scream", "chelsea"),
        ("the_scream", "rocket"),
        ("the_scream", "coffee"),
    ]
    assert len({t.target_group for t in tasks}) == 4


def test_variant_label(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest(sweep={"tv_weight": [0, 1]}))
    assert tasks[2].label == "chelsea x starry_night [tv_weight-1]"


# --- task keys ----------------------------------------------------------------------------


def test_keys_are_stable_across_plans(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    first, second = _plan(path), _plan(path)
    assert _keys(first) == _keys(second)
    assert [t.key for t in first] == [t.key for t in second]


def test_keys_do_not_depend_on_the_manifest_location(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    here = _plan(write_manifest())
    (tmp_path / "other").mkdir()
    there = _plan(write_manifest(name="other/gallery.yaml"))
    assert _keys(here) == _keys(there)


def test_keys_change_with_a_param(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    before = _plan(path)
    assert _changed(before, _plan(path, ("params.style_weight=20",))) == set(_keys(before))
    assert _changed(before, _plan(path, ("params.seed=1",))) == set(_keys(before))
    # spelling the default out is not a change
    default = f"params.style_weight={Params().style_weight!r}"
    assert _changed(before, _plan(path, (default,))) == set()


def test_keys_change_with_the_content_bytes(write_manifest: WriteManifest, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    shutil.copyfile(CONTENT / "coffee.png", photo)
    path = write_manifest(content=[str(CONTENT / "chelsea.png"), str(photo)])
    before = _plan(path)

    image = Image.open(photo).convert("RGB")
    image.putpixel((0, 0), (0, 255, 0))
    image.save(photo)
    stat = photo.stat()  # move the clock on, in case both writes fell in one mtime tick
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = _plan(path)

    assert _changed(before, after) == {
        ("photo", "starry_night", ""),
        ("photo", "the_scream", ""),
    }


def test_keys_follow_bytes_not_paths(write_manifest: WriteManifest, tmp_path: Path) -> None:
    copy = tmp_path / "copies" / "chelsea.png"
    copy.parent.mkdir()
    shutil.copyfile(CONTENT / "chelsea.png", copy)
    original = _plan(write_manifest())
    copied = _plan(write_manifest(content=[str(copy), str(CONTENT / "coffee.png")]))
    assert _keys(original) == _keys(copied)


def test_keys_change_with_the_weights_source(write_manifest: WriteManifest, tmp_path: Path) -> None:
    original = _plan(write_manifest())
    torchvision = _plan(write_manifest(weights="torchvision"))
    assert _changed(original, torchvision) == set(_keys(original))

    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"first state dict")
    path = write_manifest(weights="vgg.pth")
    first = _plan(path)
    assert _changed(original, first) == set(_keys(original))
    assert _changed(torchvision, first) == set(_keys(original))

    weights.write_bytes(b"second state dict, longer")
    assert _changed(first, _plan(path)) == set(_keys(original))


def test_keys_change_with_the_init_image(write_manifest: WriteManifest, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    shutil.copyfile(CONTENT / "astronaut.png", init)
    path = write_manifest(params={"init": "image", "init_image": "init.png"})
    before = _plan(path)
    assert before[0].params.init_image == str(init.resolve())

    shutil.copyfile(CONTENT / "chelsea.png", init)
    assert _changed(before, _plan(path)) == set(_keys(before))


def test_one_style_override_changes_only_that_styles_keys(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    before = _plan(path)
    after = _plan(path, ("style.1.params.style_weight=5",))
    assert _changed(before, after) == {
        ("chelsea", "the_scream", ""),
        ("coffee", "the_scream", ""),
    }

    overridden = write_manifest(
        name="per_style.yaml",
        style=[
            str(STYLE / "starry_night.jpg"),
            {"path": str(STYLE / "the_scream.jpg"), "params": {"style_weight": 5}},
        ],
    )
    assert _keys(_plan(overridden)) == _keys(after)


def test_task_key_function() -> None:
    content, style = CONTENT / "chelsea.png", STYLE / "the_scream.jpg"
    key = task_key(content, style, Params(size=64), "original")
    assert key == task_key(content, style, Params(size=64), "original")
    assert key != task_key(style, content, Params(size=64), "original")
    assert key != task_key(content, style, Params(size=65), "original")
    assert key != task_key(content, style, Params(size=64), "torchvision")


# --- up to date ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_up_to_date(write_manifest: WriteManifest, fmt: str) -> None:
    task = _plan(write_manifest(format=fmt))[0]
    assert not task.output.exists()
    assert up_to_date(task, read_metadata) is False

    _tiny(task.output, task.key)
    assert read_metadata(task.output)[KEY_METADATA] == task.key
    assert up_to_date(task, read_metadata) is True

    _tiny(task.output, "0" * 24)
    assert up_to_date(task, read_metadata) is False

    _tiny(task.output, None)  # an image without our metadata
    assert up_to_date(task, read_metadata) is False


def test_up_to_date_with_a_broken_output_file(write_manifest: WriteManifest) -> None:
    task = _plan(write_manifest())[0]
    task.output.parent.mkdir(parents=True)
    task.output.write_bytes(b"not an image")
    assert up_to_date(task, read_metadata) is False


def test_up_to_date_follows_the_key_after_a_change(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    tasks = _plan(path)
    for task in tasks:
        _tiny(task.output, task.key)
    assert all(up_to_date(t, read_metadata) for t in _plan(path))
    changed = _plan(path, ("style.0.params.tv_weight=1",))
    assert [up_to_date(t, read_metadata) for t in changed] == [False, False, True, True]


def test_split_keeps_plan_order(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest(content=THREE_CONTENTS))
    fresh = {tasks[1].key, tasks[4].key}
    todo, done = split(tasks, lambda t: t.key in fresh)
    assert todo == [tasks[0], tasks[2], tasks[3], tasks[5]]
    assert done == [tasks[1], tasks[4]]
    assert split([], lambda t: True) == ([], [])


# --- shards ---------------------------------------------------------------------------------


def _tasks(write_manifest, contents: int = 2, styles: int = 2) -> list:
    content = [str(CONTENT / n) for n in ("chelsea.png", "coffee.png", "astronaut.png")][:contents]
    style = [str(STYLE / n) for n in ("starry_night.jpg", "the_scream.jpg", "shipwreck.jpg")]
    return plan(load_manifest(write_manifest(content=content, style=style[:styles])))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 9])
def test_shards_are_disjoint_complete_balanced_and_deterministic(write_manifest, count) -> None:
    tasks = _tasks(write_manifest, 3, 3)  # 9 tasks
    shares = [shard(tasks, k, count) for k in range(1, count + 1)]
    keys = [t.key for share in shares for t in share]
    assert sorted(keys) == sorted(t.key for t in tasks)  # every task exactly once
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    assert shares == [shard(tasks, k, count) for k in range(1, count + 1)]


def test_shards_keep_a_style_together_where_they_can(write_manifest) -> None:
    tasks = _tasks(write_manifest, 3, 3)
    for k in (1, 2, 3):
        assert len({t.style.name for t in shard(tasks, k, 3)}) == 1


def test_more_shards_than_tasks(write_manifest) -> None:
    tasks = _tasks(write_manifest, 1, 2)  # 2 tasks
    shares = [shard(tasks, k, 5) for k in range(1, 6)]
    assert sum(len(s) for s in shares) == 2
    assert [len(s) for s in shares].count(0) == 3


@pytest.mark.parametrize(
    ("text", "expected"), [("1/4", (1, 4)), ("4/4", (4, 4)), (" 2 / 3 ", (2, 3))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1-4", "a/b", "1/0", "/3"])
def test_parse_shard_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def _array(task: int, first: int, last: int, count: int, step: int | None = None) -> dict:
    env = {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_COUNT": str(count),
    }
    if step is not None:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    return env


def test_slurm_shard_outside_an_array() -> None:
    assert slurm_shard({}) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (_array(0, 0, 3, 4, 1), (1, 4)),
        (_array(3, 0, 3, 4, 1), (4, 4)),
        (_array(1, 1, 4, 4), (1, 4)),  # starts at 1
        (_array(4, 1, 4, 4), (4, 4)),
        (_array(5, 1, 7, 4, 2), (3, 4)),  # 1-7:2 is 1,3,5,7
        (_array(7, 3, 7, 2, 4), (2, 2)),  # 3-7:4
        (_array(3, 3, 7, 2, 1), (1, 2)),  # the list 3,7: Slurm says STEP=1
        (_array(7, 3, 7, 2, 1), (2, 2)),
        (_array(6, 0, 6, 3, 1), (3, 3)),  # the list 0,3,6
        (_array(12, 12, 12, 1, 1), (1, 1)),
    ],
)
def test_slurm_shard_from_the_task_position(env: dict, expected: tuple[int, int]) -> None:
    assert slurm_shard(env) == expected


def test_slurm_shard_refuses_an_unevenly_spaced_array() -> None:
    with pytest.raises(ValueError, match=r"not evenly spaced.*--shard K/N"):
        slurm_shard(_array(3, 0, 7, 3, 1))  # --array=0,3,7
