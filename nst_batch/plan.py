"""The work of a manifest: its content x style x variant combinations (the cross product,
or the listed pairs) as tasks, each with an output path and a key, minus those already up
to date; and shards.

The combinations are walked once (`outline`): each task's parameters and output name,
refusing as it goes two tasks that would write one file, or an output that would land
outside the output folder or on an input. Loading a manifest makes that walk, so that a
collision is refused before any work; `plan()` gives each outlined task its key.

Torch-free: deciding what is up to date must not cost a model load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from nst_batch import layout
from nst_batch.filecache import FileCache
from nst_batch.manifest import ImageSpec, Manifest, ManifestError, Variant
from nst_batch.manifest.errors import params_error
from nst_batch.manifest.inputs import input_files
from nst_batch.params import ALGORITHM_VERSION, LAYER_NAMES, Params
from nst_batch.precision import AUTO_CHOICES, Resolved
from nst_batch.task import TaskId
from nst_batch.weights import file_sha256, identity


@dataclass(frozen=True)
class Task:
    content: ImageSpec
    style: ImageSpec
    variant: Variant
    params: Params
    folder: Path  # the manifest's output folder (absolute), where every write stays
    output: Path  # absolute
    relative_output: str  # relative to `folder`
    key: str  # recipe_key(recipe)
    recipe: Mapping[str, Any]  # what decides the pixels (see task_recipe)
    weights: str  # the weight source
    max_pixels: int
    # A sequence's frame after its first: it starts from the frame before, `after`, made
    # with key `after_key` from the content frame `after_content`.
    after: Path | None = None
    after_key: str = ""
    after_content: Path | None = None

    @property
    def chain(self) -> str:
        """The folder of a sequence's outputs in one style ('' for a still): its frames
        run in order, and one shard takes them all."""
        return self.relative_output.rpartition("/")[0] if self.content.sequence else ""

    @property
    def id(self) -> TaskId:
        return TaskId(self.content.name, self.style.name, self.variant.name)

    @property
    def label(self) -> str:
        variant = f" [{self.variant.name}]" if self.variant.name else ""
        return f"{self.content.name} x {self.style.name}{variant}"

    @property
    def target_group(self) -> tuple[object, ...]:
        """Tasks with equal groups share one set of style targets."""
        p = self.params
        # Colour modes fit the style image to the content before its Gram matrices.
        fitted = (str(self.content.path), p.square) if p.preserve_color != "none" else None
        return (
            tuple((str(path), weight) for path, weight in self.style.images),
            fitted,
            p.preserve_color,
            self.weights,
            p.size,
            p.style_scale,
            p.style_layers,
            p.pooling,
            p.precision,
        )

    @property
    def model_key(self) -> tuple[str, Literal["max", "avg"], tuple[str, ...]]:
        """Tasks with equal model keys share one VGG19 stack (and can share a batch)."""
        p = self.params
        layers = tuple(sorted({*p.content_layers, *p.style_layers}, key=LAYER_NAMES.index))
        return (self.weights, p.pooling, layers)


def batches(
    tasks: Sequence[Task],
    limit: Callable[[Task], int],
    shape: Callable[[Task], tuple[int, int] | None],
) -> list[tuple[int, ...]]:
    """Task indices in batches to optimize together, in plan order.

    A batch holds tasks of one model, precision and image `shape(task)` (w, h), at most
    `limit(task)` of them; a task whose shape is unknown (None: unreadable header)
    runs alone and fails there with the reason, and so does a sequence's frame.
    """
    filling: dict[tuple[object, ...], list[int]] = {}
    result: list[list[int]] = []
    for index, task in enumerate(tasks):
        most, wh = limit(task), shape(task)
        if wh is None or most <= 1 or task.chain:  # a frame waits for the one before
            result.append([index])
            continue
        key = (*task.model_key, task.params.precision, wh)
        batch = filling.get(key)
        if batch is None or len(batch) >= most:
            batch = filling[key] = []
            result.append(batch)
        batch.append(index)
    return [tuple(batch) for batch in result]


def task_recipe(
    content: Path,
    style: Path | Sequence[tuple[Path, float]],
    params: Params,
    weights: str,
    init_image: Path | None = None,
    file_hash: Callable[[Path], str] = file_sha256,
) -> dict[str, Any]:
    """Everything that decides an output's pixels, as JSON-ready data; `style` may be a
    blend. Its hash is the task key; an output keeps it in its metadata, so that a rerun
    can say what changed. `file_hash` gives a file's SHA-256 (a plan reads each file once)."""
    if isinstance(style, Path):
        style_recipe: object = file_hash(style)
    elif len(style) == 1 and style[0][1] == 1.0:
        style_recipe = file_hash(style[0][0])  # a blend of one is that image alone
    else:
        style_recipe = [[file_hash(path), weight] for path, weight in style]
    return {
        "algorithm": ALGORITHM_VERSION,
        "content": file_hash(content),
        "style": style_recipe,
        "init_image": file_hash(init_image) if init_image else None,
        "params": _effective(params),
        "weights": identity(weights, file_hash),
    }


def recipe_key(recipe: Mapping[str, Any]) -> str:
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def task_key(
    content: Path,
    style: Path | Sequence[tuple[Path, float]],
    params: Params,
    weights: str,
    init_image: Path | None = None,
) -> str:
    """A hash of everything that decides an output's pixels; `style` may be a blend."""
    return recipe_key(task_recipe(content, style, params, weights, init_image))


@lru_cache(maxsize=256)
def _effective(params: Params) -> dict[str, object]:
    """The parameters that can change the pixels: settings that do nothing with the
    others (Adam's average under L-BFGS, coarse steps without a coarse scale) are left
    out, so that changing them redoes nothing. One dict per setting, shared by the
    recipes of its tasks (read-only: a plan of 100,000 tasks holds a few)."""
    leave_out = {"init_image"}  # its file's bytes are in the key instead
    leave_out.add("save_every")  # snapshots to watch a run by: the pixels are the same
    leave_out.add("temporal_weight")  # sequence frames only; they add it to their recipe
    if params.init == "previous":
        # A warm start reaches the result a cold start from the content would: it shares
        # that key, so a later run with the usual init finds it up to date.
        params = params.model_copy(update={"init": "content"})
    if params.optimizer != "adam":
        leave_out.add("adam_average")
    if len(params.scale_sizes) == 1:
        leave_out |= {"scales", "scale_steps"}
    return params.model_dump(mode="json", exclude=leave_out)


def _recipe(
    content: ImageSpec,
    style: ImageSpec,
    weights: str,
    files: FileCache,
    before: Task | None,
    params: Params,
) -> dict[str, Any]:
    """A planned task's recipe; a sequence's frame after another holds that one's key."""
    init = Path(params.init_image) if params.init_image else None
    recipe = task_recipe(content.path, style.images, params, weights, init, files.sha256)
    if before is not None:  # its start, and so its pixels, depend on the frame before
        recipe = {**recipe, "after": before.key, "temporal": params.temporal_weight}
    return recipe


def _resolved(
    params: Params,
    auto: Resolved,
    recipe_of: Callable[[Params], dict[str, Any]],
    files: FileCache,
    folder: Path,
    relative: str,
) -> tuple[Params, dict[str, Any]]:
    """`precision: auto` made `auto`, or the other choice where the task's output was made
    in it (on a node of another kind): with the recipe for it."""
    choices = [auto, *(choice for choice in AUTO_CHOICES if choice != auto)]
    made = files.output_key(folder / relative, relative) if (folder / relative).exists() else None
    options = [_with_precision(params, choice) for choice in choices]
    recipes = [recipe_of(option) for option in options]
    for option, recipe in zip(options, recipes, strict=True):
        if made is not None and recipe_key(recipe) == made:
            return option, recipe
    return options[0], recipes[0]


@lru_cache(maxsize=256)
def _with_precision(params: Params, precision: Resolved) -> Params:
    """`params` in `precision`: one object per setting, as the manifest's are."""
    return params.model_copy(update={"precision": precision})


# -- the one walk over the tasks ----------------------------------------------------


class Outline(NamedTuple):
    """A task before its key: what it combines, its parameters, and the file it writes
    (relative to the output folder)."""

    content: ImageSpec
    style: ImageSpec
    variant: Variant
    params: Params
    relative_output: str

    @property
    def names(self) -> tuple[str, str, str]:
        """(content, style, variant) as an error message shows a task."""
        return (self.content.name, self.style.name, self.variant.name)


def outline(manifest: Manifest) -> tuple[Outline, ...]:
    """Every task of the manifest before its key, in `manifest.combinations()` order.

    ManifestError, as the walk reaches it, for a setting Params refuses, an output name
    that is empty, outside the output folder or one of nst-batch's own, two tasks that
    would write one file, a templated init_image that is not there; after the walk, for an
    input the run would overwrite. Use `manifest.outlines`: the walk made once."""
    fold = str.casefold if layout.is_case_insensitive(manifest.output) else str
    check_lengths = _length_check(manifest)
    written: dict[str, Outline] = {}  # each file the run writes (folded): the task writing it
    templated = _templated_init_image(manifest)
    own_inits: list[tuple[Path, str]] = []  # each task's init_image, from a template
    inside = _inside(manifest.output)
    outlines = []
    for content, style, variant in manifest.combinations():
        try:
            params = manifest.params_for(content, style, variant)
        except ValidationError as exc:
            raise params_error(manifest, content, style, variant, exc) from None
        name = manifest.output_name(content, style, variant)
        task = Outline(content, style, variant, params, name)
        check_lengths(task)  # first: a path the file system cannot take cannot be looked up
        _check_output_name(manifest, name, variant, inside)
        other = written.get(fold(name))
        if other is not None:
            frames = other.content.sequence is not None or content.sequence is not None
            rename = "rename one of the frames' files" if frames else "rename an image with 'name:'"
            raise ManifestError(
                f"{manifest.path}: two tasks would write {name}: {other.names} and "
                f"{task.names}; add {{variant}} or {{style}} to 'name', or {rename}"
            )
        written[fold(name)] = task
        written[fold(name + layout.CURVE_SUFFIX)] = task
        if content.sequence is not None and content.sequence.animation != "none":
            chain = name.rpartition("/")[0]  # the gallery writes its frames as one animation
            animation = layout.animation_path(Path(), chain, content.sequence.animation)
            written[fold(animation.as_posix())] = task
        if templated and params.init_image is not None:
            own_inits.append((_own_init_image(manifest, task), "init_image"))
        outlines.append(task)
    _check_inputs(manifest, (*input_files(manifest), *own_inits), written, fold)
    return tuple(outlines)


# layout.write_atomically writes each file first as a hidden temporary beside it,
# `.<name>.<8 hex>.nst-batch.tmp`: 24 bytes longer than the name.
TEMPORARY_BYTES = len(".") + len(".0123abcd.nst-batch.tmp")
NAME_MAX, PATH_MAX = 255, 4096  # bytes, where the file system does not say


def file_system_limits(folder: Path) -> tuple[int, int]:
    """The most bytes a file name and a path may have where `folder` is (or would be made:
    its nearest existing parent), as `pathconf` says; NAME_MAX, PATH_MAX where it cannot."""
    probe = folder
    while not os.path.exists(probe) and probe != probe.parent:
        probe = probe.parent
    limits = []
    for name, default in (("PC_NAME_MAX", NAME_MAX), ("PC_PATH_MAX", PATH_MAX)):
        try:
            value = os.pathconf(probe, name)
        except (OSError, ValueError):
            value = -1
        limits.append(value if value > 0 else default)
    return limits[0], limits[1]


def _length_check(manifest: Manifest) -> Callable[[Outline], None]:
    """A check that every file a task writes fits the file system: its output, the curve
    beside it (`<name>.json`), its snapshots with save_every (`<stem>.step0100.<format>`),
    its sequence's animation (`<chain>.gif`, ...) and its thumbnails, each name with its
    temporary's 24 bytes, and each path, within the limits of `file_system_limits`.
    ManifestError naming the task and the limit: else the task would fail after its
    optimization, or its output be written but its curve not."""
    name_max, path_max = file_system_limits(manifest.output)
    root = manifest.output
    # A path's bytes beyond `root / name` for the longest path a task writes: the output's
    # thumbnail, `thumbs/outputs/<name>.jpg` (longer than a curve or a snapshot).
    thumb_extra = _size(str(layout.output_thumbnail(root, "x"))) - _size(str(root / "x"))
    root_size = _size(str(root))
    folders: set[str] = set()  # output folders found short enough
    headers: set[tuple[layout.HeaderKind, str]] = set()  # header thumbnails checked

    def refuse(task: Outline, problem: str, fix: str) -> ManifestError:
        names = " x ".join(_short(n) for n in task.names if n)
        return ManifestError(f"{manifest.path}: the task {names} {problem}; {fix}")

    shorten = "use a shorter 'name' template or shorter image names (give one a 'name:')"

    def check_file(task: Outline, what: str, file: str, size: int) -> None:
        if size + TEMPORARY_BYTES > name_max:
            excess = size + TEMPORARY_BYTES - name_max
            raise refuse(
                task,
                f"would write {what} {_short(file)!r}, a name of {size} bytes (and "
                f"{TEMPORARY_BYTES} more for the temporary written first), over the file "
                f"system's limit of {name_max} bytes a name",
                f"make it {excess} bytes shorter: {shorten}",
            )

    def check(task: Outline) -> None:
        name = task.relative_output
        folder, _, file = name.rpartition("/")
        if folder and folder not in folders:
            for part in folder.split("/"):
                if _size(part) > name_max:
                    raise refuse(
                        task,
                        f"would write into the folder {_short(part)!r}, a name of "
                        f"{_size(part)} bytes, over the file system's limit of {name_max} "
                        "bytes a name",
                        shorten,
                    )
            folders.add(folder)
        size = _size(file)
        curve = file + layout.CURVE_SUFFIX  # longer than the output's own name
        check_file(task, "its loss curve", curve, size + _size(layout.CURVE_SUFFIX))
        if task.params.save_every:
            snapshot = layout.snapshot_path(Path(file), task.params.total_steps).name
            check_file(task, "its snapshots, such as", snapshot, _size(snapshot))
        sequence = task.content.sequence
        if sequence is not None and sequence.animation != "none":
            chain = folder.rpartition("/")[2]
            animation = layout.animation_path(Path(), chain, sequence.animation).name
            check_file(task, "its sequence's animation", animation, _size(animation))
        longest = root_size + 1 + _size(name) + thumb_extra
        if longest >= path_max:  # PATH_MAX counts the terminating NUL
            raise refuse(
                task,
                f"would write {_short(name)!r} in {layout.display(root)}, and the gallery its "
                f"thumbnail (thumbs/outputs/<output>.jpg): a path of {longest} bytes, over the "
                f"file system's limit of {path_max - 1} bytes a path",
                f"choose a shorter 'output', or {shorten}",
            )
        sides: tuple[tuple[layout.HeaderKind, ImageSpec], ...] = (
            ("content", task.content),
            ("style", task.style),
        )
        for kind, spec in sides:
            if (kind, spec.name) not in headers:
                thumb = layout.header_thumbnail(root, kind, spec.name)
                check_file(task, f"the {kind} image's thumbnail", thumb.name, _size(thumb.name))
                if _size(str(thumb)) >= path_max:
                    raise refuse(
                        task,
                        f"would write the {kind} image's thumbnail {_short(str(thumb))!r}, "
                        f"over the file system's limit of {path_max - 1} bytes a path",
                        f"choose a shorter 'output', or {shorten}",
                    )
                headers.add((kind, spec.name))

    return check


def _size(text: str) -> int:
    """A name's bytes on the file system."""
    return len(os.fsencode(text))


def _short(name: str) -> str:
    """A long name shown as its start and end."""
    shown = layout.display(name)
    return shown if len(shown) <= 60 else f"{shown[:28]}...{shown[-28:]}"


def _templated_init_image(manifest: Manifest) -> bool:
    """Whether an init_image is set anywhere as a template ({content} ...): each task's
    own file, checked per task."""
    return any(
        "{" in str(overrides.get("init_image", ""))
        for overrides in (
            manifest.base,
            *(s.overrides for s in (*manifest.contents, *manifest.styles)),
            *(p.overrides for p in manifest.pairs),
            *(v.overrides for v in manifest.variants),
        )
    )


def _own_init_image(manifest: Manifest, task: Outline) -> Path:
    """A task's own init_image, from a template: a readable file."""
    init = task.params.init_image
    assert init is not None
    if Path(init).is_file() and os.access(init, os.R_OK):
        return Path(init)
    names = " x ".join(n for n in task.names if n)
    raise ManifestError(
        f"{manifest.path}: init_image for {names}: no readable file {init}; make it first "
        "(a preview run, say) or change the template"
    )


def _inside(output: Path) -> Callable[[str], bool]:
    """Whether `output / name` stays inside `output` once links are resolved: each of the
    outputs' folders is resolved once, and an output only if it is a link itself."""
    folders: dict[str, bool] = {}

    def inside(name: str) -> bool:
        folder, _, _ = name.rpartition("/")
        known = folders.get(folder)
        if known is None:
            known = folders[folder] = (output / folder).resolve().is_relative_to(output)
        path = os.path.join(output, name)  # ends in '.<format>': never '.' or '..'
        return known and (not os.path.islink(path) or Path(path).resolve().is_relative_to(output))

    return inside


def _check_output_name(
    manifest: Manifest, name: str, variant: Variant, inside: Callable[[str], bool]
) -> None:
    template = manifest.name_template
    parts = name.split("/")
    if not parts[0] or parts[-1] == f".{manifest.format}":
        unset = not variant.name and "{variant}" in template
        why = " ({variant} is empty without a sweep)" if unset else ""
        raise ManifestError(
            f"{manifest.path}: name: {template!r} gives the output {name!r}, with an empty file "
            f"or folder name{why}; put {{content}} or {{style}} in each part of 'name'"
        )
    if not inside(name):
        raise ManifestError(
            f"{manifest.path}: name: output {name!r} would land outside {manifest.output}; "
            "change 'name' or the image names, or remove the link in the output folder"
        )
    if layout.is_snapshot(parts[-1]):
        raise ManifestError(
            f"{manifest.path}: name: output {name!r} is named like a progress snapshot "
            "(<name>.stepNNNN.<format>), which nst-batch writes beside outputs; change 'name' "
            "or rename the image with 'name:'"
        )
    if layout.is_reserved(name):
        raise ManifestError(
            f"{manifest.path}: name: output {name!r} would overwrite nst-batch's own "
            f"{parts[0]!r} in the output folder; rename the image with 'name:' or change 'name'"
        )


def _check_inputs(
    manifest: Manifest,
    inputs: Iterable[tuple[Path, str]],
    written: Mapping[str, Outline],
    fold: Callable[[str], str],
) -> None:
    """Nothing the run reads is a file it writes, or where nst-batch keeps its own."""
    for file, what in inputs:
        relative = layout.relative_to(manifest.output, file)
        if relative is None:
            continue
        if fold(relative) in written:
            raise ManifestError(
                f"{manifest.path}: {what} {layout.display(file)} would be overwritten by the "
                f"task {written[fold(relative)].names}, which writes {relative} in the output "
                "folder; choose another 'output' or 'name'"
            )
        if layout.is_reserved(relative) and not layout.is_decoded_frame(relative):
            raise ManifestError(
                f"{manifest.path}: {what} {layout.display(file)} is where nst-batch keeps its own "
                f"files in the output folder ({relative}); move it, or choose another 'output'"
            )


# -- the plan -----------------------------------------------------------------------


def plan(manifest: Manifest, files: FileCache | None = None, auto: Resolved = "fp32") -> list[Task]:
    """Every task of the manifest, ordered so that tasks sharing style targets run together.

    Built on the manifest's one walk (`manifest.outlines`), which loading has made. Each
    input file is read (hashed) once, and not at all while `files` knows its hash.
    `precision: auto` becomes `auto` (see precision.py), or the precision the task's
    existing output was made in, where that is another `auto` may choose."""
    files = files or FileCache()
    tasks = []
    previous: dict[tuple[str, str, str], Task] = {}  # a sequence's last frame, per style
    for content, style, variant, params, relative in manifest.outlines:
        chain = (
            None if content.sequence is None else (content.sequence.name, style.name, variant.name)
        )
        before = previous.get(chain) if chain is not None and content.frame else None
        recipe_of = partial(_recipe, content, style, manifest.weights, files, before)
        if params.precision == "auto":
            params, recipe = _resolved(params, auto, recipe_of, files, manifest.output, relative)
        else:
            recipe = recipe_of(params)
        task = Task(
            content=content,
            style=style,
            variant=variant,
            params=params,
            folder=manifest.output,
            output=manifest.output / relative,
            relative_output=relative,
            key=recipe_key(recipe),
            recipe=recipe,
            weights=manifest.weights,
            max_pixels=manifest.max_pixels,
            after=None if before is None else before.output,
            after_key="" if before is None else before.key,
            after_content=None if before is None else before.content.path,
        )
        tasks.append(task)
        if chain is not None:
            previous[chain] = task
    order = {group: i for i, group in enumerate(dict.fromkeys(t.target_group for t in tasks))}
    return sorted(tasks, key=lambda t: order[t.target_group])  # stable: manifest order within


def up_to_date(task: Task, files: FileCache) -> bool:
    """The output exists and records this task's key."""
    return files.output_key(task.output, task.relative_output) == task.key


def split(
    tasks: Sequence[Task], up_to_date_check: Callable[[Task], bool]
) -> tuple[list[Task], list[Task]]:
    """(tasks to run, tasks already up to date), each in plan order."""
    todo: list[Task] = []
    done: list[Task] = []
    for task in tasks:
        (done if up_to_date_check(task) else todo).append(task)
    return todo, done


def shard(tasks: Sequence[Task], index: int, count: int) -> list[Task]:
    """The index-th (1-based) of `count` shares of the plan.

    Contiguous slices of the plan, whose sizes differ by at most one: deterministic,
    balanced, and a style's tasks (adjacent in the plan) stay in one shard or two. A
    sequence's frames in one style never straddle two shards: the shard where its first
    frame falls takes them all, since each frame starts from the one before.
    """
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: K must be between 1 and {count}")
    start = (index - 1) * len(tasks) // count
    stop = index * len(tasks) // count
    if not any(task.chain for task in tasks):
        return list(tasks[start:stop])
    first: dict[str, int] = {}  # a chain's first position in the plan
    for position, task in enumerate(tasks):
        if task.chain:
            first.setdefault(task.chain, position)
    return [
        task
        for position, task in enumerate(tasks)
        if start <= (first[task.chain] if task.chain else position) < stop
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N; ValueError with the rule otherwise."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K from 1 to N)")
    k, n = int(index), int(count)
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N ({n})")
    return k, n


def slurm_shard(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(K, N) of this Slurm array task from its position in the array, or None outside one.

    Arrays need not start at 0 (1-4) nor be contiguous (1-7:2, or the list 3,7): the
    position is (ID - MIN) / STEP. A list whose IDs are not evenly spaced (0,3,7) gives a
    task no way to know its position, and variables no array can have (a negative step, a
    count of 0) none either: ValueError names the variable and says what to do.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    task = _slurm_number(env, "ID", None, least=0)
    first = _slurm_number(env, "MIN", task, least=0)
    last = _slurm_number(env, "MAX", task, least=first)
    step = _slurm_number(env, "STEP", 1, least=1)
    count = _slurm_number(env, "COUNT", (last - first) // step + 1, least=1)
    if not first <= task <= last:
        raise ValueError(
            f"SLURM_ARRAY_TASK_ID {task} is outside this array's task IDs ({first} to {last}); "
            "run it as part of the array, or give --shard K/N"
        )
    if count > 1 and first + step * (count - 1) != last and (last - first) % (count - 1) == 0:
        step = (last - first) // (count - 1)  # a list such as 3,7 is given STEP=1 by Slurm
    if step < 1 or first + step * (count - 1) != last or (task - first) % step:
        raise ValueError(
            f"this Slurm array's task IDs (from {first} to {last}, {count} tasks) are not "
            "evenly spaced, so a task cannot tell its position; submit a range such as "
            f"--array=0-{count - 1}, or give each task --shard K/N"
        )
    return (task - first) // step + 1, count


def _slurm_number(env: Mapping[str, str], name: str, default: int | None, least: int) -> int:
    """SLURM_ARRAY_TASK_<name> as an integer of at least `least` (`default` when unset)."""
    variable = f"SLURM_ARRAY_TASK_{name}"
    text = env.get(variable)
    if text is None and default is not None:
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or value < least:
        bound = f"SLURM_ARRAY_TASK_MIN ({least})" if name == "MAX" else f"{least}"
        raise ValueError(
            f"{variable} is {text!r}, but a Slurm job array sets it to a whole number, {bound} "
            "or more, so this is no task of an array; submit it with sbatch --array, unset "
            "the SLURM_ARRAY_TASK_* variables, or give --shard K/N"
        )
    return value


ONLY_KEYS = ("content", "style", "variant")


def parse_only(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """['content=chel*', 'style=a*', 'style=b*'] -> {'content': ('chel*',), 'style': (...)}.

    ValueError with the rule for a value without '=', an unknown key or an empty glob.
    """
    only: dict[str, list[str]] = {}
    for text in values:
        key, equals, glob = text.partition("=")
        key = key.strip()
        if not equals:
            raise ValueError(f"--only {text!r}: expected KEY=GLOB, e.g. --only content='chel*'")
        if key not in ONLY_KEYS:
            raise ValueError(f"--only {text!r}: unknown key {key!r}; use content, style or variant")
        if not glob:
            raise ValueError(f"--only {text!r}: the glob is empty; e.g. --only {key}='a*'")
        only.setdefault(key, []).append(glob)
    return {key: tuple(globs) for key, globs in only.items()}


def _names(task: Task, key: str) -> tuple[str, ...]:
    """The names of `task` a glob of `key` may match: a sequence's frame answers to its
    own name (`shots/frame_003`) and to its sequence's, as the page names it (`shots`)."""
    if key == "content":
        sequence = task.content.sequence
        return (task.content.name,) if sequence is None else (task.content.name, sequence.name)
    if key == "style":
        return (task.style.name,)
    return (task.variant.name,)


def select(tasks: Sequence[Task], only: Mapping[str, Sequence[str]]) -> list[Task]:
    """The tasks whose names match `only` (`matching`) and the frames before each matched
    frame of a sequence (`frames_before`), in plan order."""
    chosen = matching(tasks, only)
    taken = {id(task) for task in (*chosen, *frames_before(tasks, chosen))}
    return [task for task in tasks if id(task) in taken]


def matching(tasks: Sequence[Task], only: Mapping[str, Sequence[str]]) -> list[Task]:
    """The tasks whose names match `only`: any glob of a key (OR), every key given (AND).

    Globs are fnmatch patterns, case-sensitive, on the names the plan shows (content and
    style names, a sequence's name, the sweep variant's name). ValueError, naming the names
    there are, for a glob that matches none of `tasks`: a typo must not quietly select
    nothing.
    """
    from fnmatch import fnmatchcase

    for key, globs in only.items():
        names = sorted({name for task in tasks for name in _names(task, key)})
        for glob in globs:
            if not any(fnmatchcase(name, glob) for name in names):
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                there = f"there are: {shown}" if any(names) else "the manifest has no sweep"
                raise ValueError(f"--only {key}={glob}: matches no {key} of the plan ({there})")
    return [
        task
        for task in tasks
        if all(
            any(fnmatchcase(name, g) for name in _names(task, key) for g in globs)
            for key, globs in only.items()
        )
    ]


def frames_before(tasks: Sequence[Task], chosen: Sequence[Task]) -> list[Task]:
    """The frames of `tasks` that come before a frame in `chosen` in its sequence (in its
    style and variant) and are not chosen themselves, in plan order: a frame starts from the
    one before, made with the current settings, so a selection takes them along (those up
    to date then cost nothing)."""
    last: dict[str, int] = {}  # a chain's latest chosen frame
    for task in chosen:
        if task.chain:
            last[task.chain] = max(last.get(task.chain, 0), task.content.frame)
    picked = {id(task) for task in chosen}
    return [
        task
        for task in tasks
        if task.chain in last and task.content.frame < last[task.chain] and id(task) not in picked
    ]
