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

from nst_batch.filecache import FileCache
from nst_batch.images import read_metadata, save_image, target_size
from nst_batch.manifest import load_manifest
from nst_batch.metadata import KEY_METADATA
from nst_batch.params import Params
from nst_batch.plan import (
    Task,
    batches,
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


def test_keys_do_not_depend_on_the_manifest_location(write_manifest: WriteManifest) -> None:
    here = _plan(write_manifest())
    there = _plan(write_manifest("other/gallery.yaml"))
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
        "per_style.yaml",
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
    files = FileCache()  # one for the whole test: each rewrite is a new file to it
    assert not task.output.exists()
    assert up_to_date(task, files) is False

    _tiny(task.output, task.key)
    assert read_metadata(task.output)[KEY_METADATA] == task.key
    assert up_to_date(task, files) is True

    _tiny(task.output, "0" * 24)
    assert up_to_date(task, files) is False

    _tiny(task.output, None)  # an image without our metadata
    assert up_to_date(task, files) is False


def test_up_to_date_with_a_broken_output_file(write_manifest: WriteManifest) -> None:
    task = _plan(write_manifest())[0]
    task.output.parent.mkdir(parents=True)
    task.output.write_bytes(b"not an image")
    assert up_to_date(task, FileCache()) is False


def test_up_to_date_follows_the_key_after_a_change(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    tasks = _plan(path)
    for task in tasks:
        _tiny(task.output, task.key)
    assert all(up_to_date(t, FileCache()) for t in _plan(path))
    changed = _plan(path, ("style.0.params.tv_weight=1",))
    assert [up_to_date(t, FileCache()) for t in changed] == [False, False, True, True]


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


# --- batches --------------------------------------------------------------------------------

MIXED_CONTENTS = [str(CONTENT / n) for n in ("chelsea.png", "coffee.png", "astronaut.png")]


def _shape(task: Task) -> tuple[int, int]:
    with Image.open(task.content.path) as image:
        return target_size(*image.size, task.params.size, task.params.square)


def _mixed(write_manifest: WriteManifest, **fields: object) -> list[Task]:
    """chelsea and coffee (3:2, 64x43 at 64 px) and astronaut (square) in two styles."""
    tasks = _plan(write_manifest(content=MIXED_CONTENTS, **fields))
    assert [_shape(t) for t in tasks[:3]] == [(64, 43), (64, 43), (64, 64)]
    return tasks


def test_batches_group_one_shape_in_plan_order(write_manifest: WriteManifest) -> None:
    tasks = _mixed(write_manifest)
    assert [(t.content.name, t.style.name) for t in tasks] == [
        (c, s) for s in ("starry_night", "the_scream") for c in ("chelsea", "coffee", "astronaut")
    ]
    assert batches(tasks, lambda t: 4, _shape) == [(0, 1, 3, 4), (2, 5)]
    assert batches(tasks, lambda t: 16, _shape) == [(0, 1, 3, 4), (2, 5)]


def test_batches_of_two_aspect_ratios(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest(content=[MIXED_CONTENTS[0], MIXED_CONTENTS[2]]))
    assert [(_shape(t), t.style.name) for t in tasks] == [
        ((64, 43), "starry_night"),
        ((64, 64), "starry_night"),
        ((64, 43), "the_scream"),
        ((64, 64), "the_scream"),
    ]
    assert batches(tasks, lambda t: 4, _shape) == [(0, 2), (1, 3)]


def test_batches_are_chunked_at_the_limit_and_ordered_by_their_first_task(
    write_manifest: WriteManifest,
) -> None:
    tasks = _mixed(write_manifest)
    assert batches(tasks, lambda t: 3, _shape) == [(0, 1, 3), (2, 5), (4,)]
    assert batches(tasks, lambda t: 2, _shape) == [(0, 1), (2, 5), (3, 4)]
    assert batches(tasks, lambda t: 1, _shape) == [(i,) for i in range(6)]
    assert batches([], lambda t: 4, _shape) == []


def test_batches_run_a_task_alone_at_limit_one_or_without_a_shape(
    write_manifest: WriteManifest,
) -> None:
    tasks = _mixed(write_manifest)
    coffee = tasks[1].content.path

    def limit(task: Task) -> int:
        return 1 if task.content.path == coffee else 4

    def unreadable(task: Task) -> tuple[int, int] | None:
        return None if task.content.path == coffee else _shape(task)

    assert batches(tasks, limit, _shape) == [(0, 3), (1,), (2, 5), (4,)]
    assert batches(tasks, lambda t: 4, unreadable) == [(0, 3), (1,), (2, 5), (4,)]


def test_batches_follow_the_shape_at_the_task_size(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest(content=MIXED_CONTENTS, params={"size": 64, "square": True}))
    assert {_shape(t) for t in tasks} == {(64, 64)}
    assert batches(tasks, lambda t: 6, _shape) == [(0, 1, 2, 3, 4, 5)]


def test_batches_split_a_precision_sweep(write_manifest: WriteManifest) -> None:
    tasks = _plan(write_manifest(sweep={"precision": ["fp32", "bf16"]}))
    precisions = [t.params.precision for t in tasks]
    assert precisions == ["fp32", "fp32", "bf16", "bf16"] * 2
    assert batches(tasks, lambda t: 8, _shape) == [(0, 1, 4, 5), (2, 3, 6, 7)]
    for batch in batches(tasks, lambda t: 8, _shape):
        assert len({tasks[i].params.precision for i in batch}) == 1


def test_batches_split_a_layer_sweep_but_not_a_weight_sweep(write_manifest: WriteManifest) -> None:
    layers = _plan(write_manifest(sweep={"content_layers": ["relu4_2", "relu3_2"]}))
    assert len({t.model_key for t in layers}) == 2
    assert batches(layers, lambda t: 8, _shape) == [(0, 1, 4, 5), (2, 3, 6, 7)]
    for batch in batches(layers, lambda t: 8, _shape):
        assert len({layers[i].model_key for i in batch}) == 1
    weights = _plan(write_manifest(sweep={"style_weight": [5, 50]}))
    assert batches(weights, lambda t: 8, _shape) == [tuple(range(8))]
    assert batches(weights, lambda t: 3, _shape) == [(0, 1, 2), (3, 4, 5), (6, 7)]


# --- keys and target groups of the colour, scale, averaging and blend options ---------------

STARRY_JPG, SCREAM_JPG = STYLE / "starry_night.jpg", STYLE / "the_scream.jpg"


def test_each_option_value_gives_its_own_key(write_manifest: WriteManifest) -> None:
    sweep = {
        "preserve_color": ["none", "luminance", "histogram"],
        "scales": [1, 2],
        "scale_steps": [5, 7],
        "adam_average": [0, 0.9],
    }
    # Adam at 128 px: there the average and a 64 px coarse scale both change the pixels.
    params = {"size": 128, "optimizer": "adam"}
    path = write_manifest(content=[str(CONTENT / "chelsea.png")], sweep=sweep, params=params)
    tasks = _plan(path)
    assert len(tasks) == 2 * 3 * 2 * 2 * 2
    # scale_steps does nothing without a coarse scale: 2 x 3 x (2 + 1) x 2 distinct keys
    assert len({t.key for t in tasks}) == 2 * 3 * 3 * 2


def test_settings_that_do_nothing_leave_the_key_alone() -> None:
    content = CONTENT / "chelsea.png"

    def key(**values: object) -> str:
        return task_key(content, STARRY_JPG, Params(**{"size": 128, **values}), "original")

    assert key(adam_average=0.5) == key()  # L-BFGS has no average
    assert key(optimizer="adam", adam_average=0.5) != key(optimizer="adam")
    assert key(scale_steps=9) == key()  # one scale
    assert key(scales=3, size=100) == key(size=100)  # 50 and 25 px are under 64: one scale
    assert key(scales=2, scale_steps=9) != key(scales=2)


def test_option_keys_against_the_defaults() -> None:
    content = CONTENT / "chelsea.png"
    options = {
        "defaults": {},
        "luminance": {"preserve_color": "luminance"},
        "histogram": {"preserve_color": "histogram"},
        "scales 2": {"scales": 2},
        "scales 2, scale_steps 50": {"scales": 2, "scale_steps": 50},
        "adam": {"optimizer": "adam"},
        "adam, adam_average 0": {"optimizer": "adam", "adam_average": 0},
        "adam, adam_average 0.5": {"optimizer": "adam", "adam_average": 0.5},
    }
    keys = {
        name: task_key(content, STARRY_JPG, Params(size=128, **values), "original")
        for name, values in options.items()
    }
    blends = {
        "3:1": [(STARRY_JPG, 0.75), (SCREAM_JPG, 0.25)],
        "1:3": [(STARRY_JPG, 0.25), (SCREAM_JPG, 0.75)],
        "1:1": [(STARRY_JPG, 0.5), (SCREAM_JPG, 0.5)],
        "swapped 3:1": [(SCREAM_JPG, 0.25), (STARRY_JPG, 0.75)],
    }
    for name, blend in blends.items():
        keys[f"blend {name}"] = task_key(content, blend, Params(size=128), "original")
    assert len(set(keys.values())) == len(keys), keys
    one = task_key(content, [(STARRY_JPG, 1.0)], Params(size=128), "original")
    assert one == keys["defaults"]  # a blend of one image is that image


def test_colour_modes_fit_the_targets_to_each_content(write_manifest: WriteManifest) -> None:
    contents = [str(CONTENT / "chelsea.png"), str(CONTENT / "coffee.png")]
    groups = {}
    for mode in ("none", "luminance", "histogram"):
        tasks = _plan(write_manifest(content=contents, params={"preserve_color": mode}))
        assert len(tasks) == 4
        groups[mode] = {t.target_group for t in tasks}
        per_style = {t.style.name: set() for t in tasks}
        for t in tasks:
            per_style[t.style.name].add(t.target_group)
        counts = {len(g) for g in per_style.values()}
        assert counts == ({1} if mode == "none" else {2}), mode
    assert len(groups["none"]) == 2  # one per style
    assert len(groups["luminance"]) == len(groups["histogram"]) == 4  # one per pair
    assert groups["luminance"].isdisjoint(groups["histogram"])
    assert groups["none"].isdisjoint(groups["luminance"])


def test_colour_mode_tasks_of_one_pair_stay_adjacent(write_manifest: WriteManifest) -> None:
    contents = [str(CONTENT / "chelsea.png"), str(CONTENT / "coffee.png")]
    tasks = _plan(
        write_manifest(
            content=contents, params={"preserve_color": "luminance"}, sweep={"tv_weight": [0, 1]}
        )
    )
    groups = [t.target_group for t in tasks]
    assert len(groups) == 8 and len(set(groups)) == 4
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert len(runs) == 4  # each group's tasks are consecutive


def test_scales_share_the_target_group(write_manifest: WriteManifest) -> None:
    params = {"size": 128, "optimizer": "adam"}
    tasks = _plan(write_manifest(sweep={"scales": [1, 2], "adam_average": [0, 0.5]}, params=params))
    assert len({t.key for t in tasks}) == 16
    assert len({t.target_group for t in tasks}) == 2  # one per style: sizes are cached apart


def test_blend_target_groups(write_manifest: WriteManifest) -> None:
    pair = [str(STARRY_JPG), str(SCREAM_JPG)]
    tasks = _plan(
        write_manifest(
            style=[
                {"path": pair, "weights": [3, 1], "name": "a"},
                {"path": pair, "weights": [1, 3], "name": "b"},
                {"path": [str(STARRY_JPG)], "weights": [2], "name": "one"},
            ]
        )
    )
    groups: dict[str, set[tuple[object, ...]]] = {}
    for t in tasks:
        groups.setdefault(t.style.name, set()).add(t.target_group)
    assert sorted(groups) == ["a", "b", "one"]
    assert all(len(g) == 1 for g in groups.values())  # both contents share a style's targets
    assert len({next(iter(g)) for g in groups.values()}) == 3
    plain = _plan(write_manifest("plain.yaml", style=[str(STARRY_JPG)]))
    assert {t.target_group for t in plain} == groups["one"]
    assert {t.key for t in plain} == {t.key for t in tasks if t.style.name == "one"}
