"""A gallery manifest: YAML in, a typed and fully validated `Manifest` out.

Everything a run needs is checked here, before any work: keys and types, value
ranges, layer names, image paths (files, folders, globs; relative to the manifest's
folder), the output-name template, and every effective parameter combination.
Every error names the manifest, the key and the fix.
"""

from __future__ import annotations

import difflib
import glob
import itertools
import math
import os
import posixpath
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from nst_batch import layout
from nst_batch.params import PRESET_WEIGHTS, PRESETS, Params, StrictInt
from nst_batch.weights import NAMED_SOURCES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
FORMATS = ("jpg", "png", "webp")
TEMPLATE_FIELDS = ("content", "style", "variant")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
DEFAULT_TEMPLATE = "{content}__{style}"
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_TASKS = 20_000
MAX_NAME_BYTES = 255 - 32  # a file system's NAME_MAX, less a temporary's additions
# Seconds between checkpoints of a task in flight: a save measured 12 ms at 1024 px on a
# local disk, 0.02% of the run; under 1% even at 0.5 s a save on a slow network file
# system (see docs/performance.md). A kill -9 loses at most this much of a task.
DEFAULT_CHECKPOINT_EVERY = 60.0
MAX_BATCH_SIZE = 256
# YAML nodes after alias expansion: a manifest is a few hundred; a "billion laughs" is 10^9.
MAX_YAML_NODES = 100_000
_DIGITS = re.compile(r"(\d+)")


class ManifestError(Exception):
    """The manifest cannot be used; str() names the file, the key and the fix."""


# -- the raw YAML schema ------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | list[str] = Field(union_mode="left_to_right")
    weights: list[Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]] | None = None
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # A folder (or pattern) of frames, stylized in order, each from the one before.
    sequence: Annotated[bool, Strict()] = False
    animation: Literal["none", "gif"] = "none"  # a sequence's frames as one animation
    fps: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 12.0


class _Pair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str | _Entry
    style: str | _Entry
    params: dict[str, Any] = Field(default_factory=dict)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str
    # Either content and style (every content in every style) or pairs (only those listed).
    content: list[str | _Entry] | None = Field(None, min_length=1)
    style: list[str | _Entry] | None = Field(None, min_length=1)
    pairs: list[_Pair] | None = Field(None, min_length=1)
    weights: str = "original"
    devices: str | list[str] = "auto"
    workers_per_device: StrictInt = Field(1, ge=1, le=64)
    batch_size: Literal["auto"] | StrictInt = "auto"  # range checked by _auto_or_count
    compile: Annotated[bool, Strict()] = False
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    name: str = DEFAULT_TEMPLATE
    format: Literal["jpg", "png", "webp"] = "jpg"
    max_pixels: StrictInt = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_tasks: StrictInt = Field(DEFAULT_MAX_TASKS, ge=1)
    checkpoint_every: Annotated[float, Strict(), Field(ge=0, le=86_400, allow_inf_nan=False)] = (
        DEFAULT_CHECKPOINT_EVERY
    )

    @field_validator("content", "style", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str | dict) else value

    @field_validator("pairs", mode="before")
    @classmethod
    def _pair_mappings(cls, value: object) -> object:
        value = [value] if isinstance(value, dict) else value
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ValueError(
                        f"pairs[{i}] is not a mapping; write each pair as "
                        "{content: photo.jpg, style: painting.jpg}"
                    )
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _auto_or_count(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("Input should be greater than or equal to 1")
            if value > MAX_BATCH_SIZE:
                raise ValueError(f"Input should be less than or equal to {MAX_BATCH_SIZE}")
            return value
        raise ValueError("Input should be 'auto' or a valid integer")


# -- the validated manifest ---------------------------------------------------------


@dataclass(frozen=True)
class FrameSequence:
    """A content entry with `sequence: true`: its frames in natural order (f2 before f10),
    each stylized from the one before warped along the optical flow; the outputs of a
    sequence in a style go into one folder, `<template with content = name>/`."""

    name: str
    frames: int
    animation: Literal["none", "gif"] = "none"
    fps: float = 12.0


@dataclass(frozen=True)
class ImageSpec:
    """One content or style image, with its parameter overrides.

    A style may be a blend: several images whose Gram matrices are averaged with
    `blend` weights (which sum to 1); `path` is then the first of them.
    """

    path: Path
    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    blend: tuple[tuple[Path, float], ...] = ()
    sequence: FrameSequence | None = None  # the sequence this image is a frame of
    frame: int = 0  # its place in the sequence, 0 the first

    @property
    def images(self) -> tuple[tuple[Path, float], ...]:
        """(file, weight) of every image this spec stands for; weights sum to 1."""
        return self.blend or ((self.path, 1.0),)


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: '' and no overrides when there is no sweep."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """One content in one style, listed under `pairs:`, with the pair's own overrides."""

    content: ImageSpec
    style: ImageSpec
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    output: Path
    contents: tuple[ImageSpec, ...]  # with pairs: each distinct content, in order of appearance
    styles: tuple[ImageSpec, ...]  # ... and each distinct style
    variants: tuple[Variant, ...]
    weights: str  # 'original', 'torchvision' or an absolute path
    devices: tuple[str, ...]  # ('auto',) or explicit devices
    workers_per_device: int
    batch_size: int | None  # most tasks optimized together; None: chosen per device
    compile: bool  # torch.compile the VGG19 stack, once per worker and image shape
    name_template: str
    format: str
    max_pixels: int
    base: Mapping[str, Any]  # preset, then `params:`
    pairs: tuple[Pair, ...] = ()  # empty: every content in every style

    def combinations(self) -> Iterator[tuple[ImageSpec, ImageSpec, Variant]]:
        """(content, style, variant) of every task: each listed pair, or without pairs every
        content in every style, in every variant."""
        if self.pairs:
            for pair in self.pairs:
                for variant in self.variants:
                    yield pair.content, pair.style, variant
            return
        for style in self.styles:
            for variant in self.variants:
                for content in self.contents:
                    yield content, style, variant

    def has_pair(self, content: ImageSpec, style: ImageSpec) -> bool:
        """Whether the plan holds this content in this style (always, without pairs)."""
        return not self.pairs or (content.name, style.name) in self._pairs_by_name

    def pair_overrides(self, content: ImageSpec, style: ImageSpec) -> Mapping[str, Any]:
        """The listed pair's own params ({} without pairs)."""
        return self._pairs_by_name.get((content.name, style.name), {})

    @cached_property
    def _pairs_by_name(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        # Within pairs a name stands for one content (or style): _listed_pairs makes it so.
        return {(p.content.name, p.style.name): p.overrides for p in self.pairs}

    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY  # seconds; 0: only when stopped

    def params_for(self, content: ImageSpec, style: ImageSpec, variant: Variant) -> Params:
        """Effective parameters: base < content's < style's < the pair's < the variant's;
        an init_image template is filled in with the task's names."""
        pair = self.pair_overrides(content, style)
        merged = {
            **self.base,
            **content.overrides,
            **style.overrides,
            **pair,
            **variant.overrides,
        }
        init = merged.get("init_image")
        if isinstance(init, str) and ("{" in init or "}" in init):
            filled = init.format(content=content.name, style=style.name, variant=variant.name)
            merged["init_image"] = str(Path(filled).resolve())
        # Tasks of one setting share one Params: a plan of 100,000 tasks validates a few.
        setting = repr(merged)  # repr tells 1 from 1.0, True and '1'
        params = self._params_by_setting.get(setting)
        if params is None:
            params = self._params_by_setting[setting] = Params.model_validate(merged)
        return params

    @cached_property
    def _params_by_setting(self) -> dict[str, Params]:
        return {}

    def output_name(self, content: ImageSpec, style: ImageSpec, variant: Variant) -> str:
        """Output path relative to `output`, with the format's extension; a sequence's frame
        goes into the folder its sequence would name as one content: `coffee__starry/f1.jpg`."""
        name = content.name if content.sequence is None else content.sequence.name
        stem = self.name_template.format(content=name, style=style.name, variant=variant.name)
        if content.sequence is not None:
            stem = f"{stem}/{content.path.stem}"
        # './a' and 'a' name one file: write and compare them as one. (Empty parts stay,
        # for the manifest check to refuse.)
        stem = "/".join(part for part in stem.split("/") if part != ".")
        return f"{stem}.{self.format}"


# -- loading ------------------------------------------------------------------------


def load_manifest(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Manifest:
    """Read, apply `--set KEY=VALUE` overrides, validate, and resolve a manifest."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read ({exc})") from None
    try:
        data = safe_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{path}: expected a mapping with at least output, content and style; "
            f"got {type(data).__name__}"
        )
    for item in overrides:
        _apply_override(data, item, path)
    _refuse_unusable_text(path, data)
    missing = _missing_images(path, data)
    try:
        doc = _Document.model_validate(data)
    except ValidationError as exc:
        raise ManifestError("\n".join([_explain(path, exc, _Document), *missing])) from None
    if missing:
        raise ManifestError("\n".join(missing))
    return _resolve(path, doc)


def _missing_images(path: Path, data: Mapping[str, Any]) -> list[str]:
    """What a manifest lacks to name its tasks: content and style, or pairs (not both)."""
    given = [key for key in ("content", "style", "pairs") if data.get(key) is not None]
    if "pairs" in given:
        if len(given) == 1:
            return []
        return [
            f"{path}: pairs: a manifest lists either content and style (every content in every "
            f"style) or pairs (only those), not both; remove {' and '.join(given[:-1])}, or "
            "remove pairs"
        ]
    return [
        f"{path}: missing required key '{key}' (or list pairs instead of content and style)"
        for key in ("content", "style")
        if key not in given
    ]


def safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, refusing a document whose aliases expand past MAX_YAML_NODES nodes
    (a few hundred bytes of nested aliases can stand for billions of values) or nest too
    deeply; ManifestError then, yaml.YAMLError for a syntax error."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            size = _expanded_size(node, {}, set())
        except RecursionError:
            raise ManifestError(f"{where}: the YAML nests too deeply; flatten it") from None
        if size > MAX_YAML_NODES:
            raise ManifestError(
                f"{where}: the YAML's aliases (*name) expand to {_count(size)} values, more than "
                f"the limit of {MAX_YAML_NODES:,}; write the values out, or use fewer aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, float], open_: set[int]) -> float:
    """Nodes in `node` once every alias is expanded (inf for a recursive alias)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_:
        return math.inf
    open_.add(id(node))
    total: float = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes, open_)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, sizes, open_) + _expanded_size(value, sizes, open_)
    open_.discard(id(node))
    sizes[id(node)] = total
    return total


def _count(size: float) -> str:
    return "infinitely many (a recursive alias)" if math.isinf(size) else f"{int(size):,}"


def _refuse_unusable_text(path: Path, data: Any) -> None:
    """A NUL character, or a surrogate no file name byte stands for (YAML's "\\ud800"),
    cannot be in a path or a name; say which key holds one."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            problem = "a NUL character (\\0)" if "\x00" in value else None
            try:
                os.fsencode(value)
            except UnicodeEncodeError:
                problem = "a lone surrogate (\\ud800 to \\udfff)"
            if problem:
                raise ManifestError(
                    f"{path}: {where or '(top level)'}: contains {problem}, which no path or "
                    "name may hold; remove it"
                )
        if isinstance(value, dict):
            for key, child in value.items():
                name = f"{where}.{key}" if where else str(key)
                stack += [(name, key), (name, child)]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", child) for i, child in enumerate(value)]


def parse_devices(value: str | Sequence[str], where: str) -> tuple[str, ...]:
    """'auto', 'cpu', 'cuda:0,cuda:1' or a list -> a tuple; raises ManifestError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    devices = tuple(str(d).strip() for d in items if str(d).strip())
    if devices == ("auto",):
        return devices
    bad = [d for d in devices if not DEVICE_PATTERN.match(d)]
    if not devices or bad:
        raise ManifestError(
            f"{where}: unknown device {bad[0] if bad else '(none)'!r}; "
            "use auto, cpu, cuda, cuda:N or a list of them (e.g. cuda:0,cuda:1 or cpu,cpu)"
        )
    return devices


STRING_KEYS = frozenset({"output", "name", "weights", "format", "preset", "path", "init_image"})
LIST_KEYS = frozenset({"content", "style"})
MAPPING_KEYS = frozenset({"params", "sweep"})


def _apply_override(data: dict[str, Any], item: str, path: Path) -> None:
    key, eq, raw = item.partition("=")
    parts = key.strip().split(".")
    if not eq or not all(parts):
        raise ManifestError(f"--set {item!r}: expected KEY=VALUE, e.g. params.style_weight=20")
    value: Any = raw
    # Text keys stay as typed (a file named 1e6.jpg), unless a list: a style blend's path
    # list, or an entry's blend `weights` (the top-level `weights` is the weight source).
    text = parts[-1] in STRING_KEYS and not (parts[-1] == "weights" and len(parts) > 1)
    if not text or raw.lstrip().startswith("["):
        try:
            value = safe_yaml(raw, f"--set {key.strip()}")
        except yaml.YAMLError:
            value = raw
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "the manifest"
        if isinstance(node, dict):
            if last:
                node[part] = value
                return
            child = node.get(part)
            if child is None and part in MAPPING_KEYS:
                child = node[part] = {}
            elif isinstance(child, str) and part in LIST_KEYS and parts[0] == "pairs":
                child = node[part] = {"path": child}  # a pair's one image: make it an entry
            elif isinstance(child, str) and part in LIST_KEYS:
                child = node[part] = [child]  # a single path: make it a list to index
            if not isinstance(child, dict | list):
                raise ManifestError(
                    f"--set {key}: {'.'.join(parts[: i + 1])} is "
                    f"{'not in ' + str(path) if child is None else 'a value, not a mapping'}; "
                    "set an existing mapping's key, e.g. params.style_weight"
                )
            node = child
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ManifestError(
                    f"--set {key}: {where} is a list of {len(node)}; "
                    f"use an index from 0 to {len(node) - 1}"
                )
            if last:
                node[int(part)] = value
                return
            if isinstance(node[int(part)], str):  # a bare path: turn it into an entry
                node[int(part)] = {"path": node[int(part)]}
            node = node[int(part)]


def _explain(path: Path, exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: file: key: what is wrong (did you mean ...?)."""
    lines = []
    errors = exc.errors()
    entry_errors = {
        tuple(e["loc"][: e["loc"].index("_Entry")]) for e in errors if "_Entry" in e["loc"]
    }
    for error in errors:
        if error["loc"][-1:] == ("str",) and tuple(error["loc"][:-1]) in entry_errors:
            continue  # an entry object with a problem, not a bare path: say only that
        loc = [str(p) for p in error["loc"] if not str(p).startswith(("str", "_Entry"))]
        key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "(top level)"
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(known)}"
            )
            lines.append(f"{path}: unknown key '{key}'{hint}")
        elif error["type"] == "missing":
            lines.append(f"{path}: missing required key '{key}'")
        else:
            message = error["msg"].removeprefix("Value error, ")
            got = error.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"{path}: {key}: {message}{shown}")
    return "\n".join(lines)


def _known_keys(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    if any(part in ("content", "style") for part in loc):  # inside an image entry
        return list(_Entry.model_fields)
    if loc[:1] == ["pairs"] and len(loc) == 2:  # inside a pair
        return list(_Pair.model_fields)
    return list(model.model_fields)


def _resolve(path: Path, doc: _Document) -> Manifest:
    root = path.resolve().parent
    output = (root / os.path.expanduser(doc.output)).resolve()
    # A name the file system cannot hold would fail every write: refuse it now. The
    # limit leaves room for the hidden temporaries written beside each file.
    too_long = [p for p in output.parts if len(os.fsencode(p)) > MAX_NAME_BYTES]
    if too_long:
        raise ManifestError(
            f"{path}: output: the folder name {layout.display(too_long[0])[:40]}... is "
            f"{len(os.fsencode(too_long[0]))} bytes long, more than {MAX_NAME_BYTES}; "
            "choose a shorter 'output'"
        )
    base: dict[str, Any] = {}
    weights = doc.weights
    if doc.preset is not None:
        if doc.preset not in PRESETS:
            raise ManifestError(
                f"{path}: preset: unknown preset '{doc.preset}'; known: {', '.join(PRESETS)}"
            )
        base.update(PRESETS[doc.preset])
        if "weights" not in doc.model_fields_set:
            weights = PRESET_WEIGHTS.get(doc.preset, weights)
    base.update(doc.params)
    if weights not in NAMED_SOURCES:
        weights_path = (root / os.path.expanduser(weights)).resolve()
        if not weights_path.is_file():
            raise ManifestError(
                f"{path}: weights: '{weights}' is neither {' nor '.join(NAMED_SOURCES)} nor an "
                f"existing file (looked for {weights_path})"
            )
        weights = str(weights_path)
    listed: list[tuple[str, str, dict[str, Any]]] = []  # pairs: (content, style, params)
    if doc.pairs is not None:
        contents, styles, listed = _listed_pairs(path, root, doc.pairs, output)
        _check_plan_size(path, 0, 0, doc.sweep, doc.max_tasks, pairs=len(listed))
    else:
        assert doc.content is not None and doc.style is not None  # _missing_images
        contents = _expand(path, root, "content", doc.content, output)
        styles = _expand(path, root, "style", doc.style, output)
        _check_plan_size(path, len(contents), len(styles), doc.sweep, doc.max_tasks)
    for kind, specs in (("content", contents), ("style", styles)):
        for spec in (spec for spec in specs if spec.overrides):
            _check_keys(path, f"{kind} '{layout.display(spec.path.name)}' params", spec.overrides)
    for i, (_, _, params) in enumerate(listed):
        _check_keys(path, f"pairs[{i}].params", params)
    _check_keys(path, "params", doc.params)
    _check_keys(path, "sweep", doc.sweep)
    base = _with_init_image(path, root, "params", base)
    contents = _specs_with_init_image(path, root, "content", contents)
    styles = _specs_with_init_image(path, root, "style", styles)
    by_name = {("content", s.name): s for s in contents} | {("style", s.name): s for s in styles}
    pairs = tuple(
        Pair(
            by_name["content", content],
            by_name["style", style],
            _with_init_image(path, root, f"pairs[{i}].params", params),
        )
        for i, (content, style, params) in enumerate(listed)
    )
    variants = tuple(
        replace(v, overrides=_with_init_image(path, root, "sweep", v.overrides))
        for v in _variants(path, doc.sweep)
    )
    template = _check_template(path, doc.name, bool(doc.sweep))
    manifest = Manifest(
        path=path,
        output=output,
        contents=contents,
        styles=styles,
        variants=variants,
        weights=weights,
        devices=parse_devices(doc.devices, f"{path}: devices"),
        workers_per_device=doc.workers_per_device,
        batch_size=None if doc.batch_size == "auto" else doc.batch_size,
        compile=doc.compile,
        name_template=template,
        format=doc.format,
        max_pixels=doc.max_pixels,
        base=base,
        pairs=pairs,
        checkpoint_every=doc.checkpoint_every,
    )
    _check_combinations(manifest)
    return manifest


def _check_plan_size(
    path: Path,
    contents: int,
    styles: int,
    sweep: Mapping[str, list[Any]],
    limit: int,
    pairs: int | None = None,
) -> None:
    """Refuse a plan of more than `limit` tasks before it is built, naming what makes it so.
    With `pairs` (their count) the plan is the pairs, not contents x styles."""
    variants = math.prod(len(values) for values in sweep.values())
    total = (contents * styles if pairs is None else pairs) * variants
    if total <= limit:
        return
    sweep_factor = (
        f"sweep ({len(sweep)} keys, {variants:,} variants: "
        + " x ".join(f"{k} {len(v)}" for k, v in sweep.items())
        + ")"
    )
    if pairs is None:
        factors = {
            f"content ({contents:,} images)": contents,
            f"style ({styles:,} images)": styles,
            sweep_factor: variants,
        }
        product = f"{contents:,} content x {styles:,} style"
    else:
        factors = {f"pairs ({pairs:,} listed)": pairs, sweep_factor: variants}
        product = f"{pairs:,} pairs"
    largest = max(factors, key=lambda k: factors[k])
    raise ManifestError(
        f"{path}: the plan has {total:,} tasks ({product} x {variants:,} variants), more than "
        f"max_tasks ({limit:,}); {largest} raises it most: narrow it, or raise max_tasks if "
        "you mean it"
    )


def _listed_pairs(
    path: Path, root: Path, entries: Sequence[_Pair], output: Path
) -> tuple[tuple[ImageSpec, ...], tuple[ImageSpec, ...], list[tuple[str, str, dict[str, Any]]]]:
    """The distinct contents and styles of `pairs:` (in order of appearance), and each pair
    as (content name, style name, params). Within pairs a name stands for one image with one
    set of params, and a pair is listed once."""
    specs: dict[tuple[str, str], tuple[ImageSpec, str]] = {}  # (kind, name): (spec, where)
    seen: dict[tuple[str, str], int] = {}
    listed = []
    for i, entry in enumerate(entries):
        names = []
        for kind, given in (("content", entry.content), ("style", entry.style)):
            where = f"pairs[{i}].{kind}"
            spec = _pair_image(path, root, kind, where, given, output)
            other = specs.setdefault((kind, spec.name), (spec, where))
            if other[0] != spec:
                raise ManifestError(
                    f"{path}: {other[1]} and {where} are both the {kind} '{spec.name}' but "
                    "differ in image or params; give one a 'name:', or put settings for one "
                    "pair in that pair's params"
                )
            names.append(spec.name)
        content, style = names
        if (content, style) in seen:
            raise ManifestError(
                f"{path}: pairs[{i}] repeats pairs[{seen[content, style]}] (content "
                f"'{content}' in style '{style}'); list each pair once, and use a sweep to try "
                "several settings on one pair"
            )
        seen[content, style] = i
        listed.append((content, style, dict(entry.params)))

    def distinct(kind: str) -> tuple[ImageSpec, ...]:
        return tuple(spec for (k, _), (spec, _) in specs.items() if k == kind)

    return distinct("content"), distinct("style"), listed


def _pair_image(
    path: Path, root: Path, kind: str, where: str, given: str | _Entry, output: Path
) -> ImageSpec:
    """A pair's content or style: one image file (or, for a style, a blend)."""
    item = given if isinstance(given, _Entry) else _Entry(path=given)
    if item.sequence:
        raise ManifestError(
            f"{path}: {where}: a pair takes one image, not a sequence; list sequences under "
            "content: (with style:), where every frame gets every style"
        )
    if item.name is not None:
        _check_image_name(f"{path}: {where}.name", item.name)
    if isinstance(item.path, list) or item.weights is not None:
        return _blend(path, root, kind, where, item)
    files, single = _match(root, item.path, f"{path}: {where} '{item.path}'", output)
    if not single:
        raise ManifestError(
            f"{path}: {where} '{item.path}': a pair takes one image file, not a folder or "
            "pattern; list a pair per image, or use content and style for every combination"
        )
    _check_readable(files[0], f"{path}: {where}")
    name = _entry_name(path, kind, files[0], item.name)
    return ImageSpec(path=files[0], name=name, overrides=dict(item.params))


def _expand(
    path: Path, root: Path, kind: str, entries: Iterable[str | _Entry], output: Path
) -> tuple[ImageSpec, ...]:
    """The images of `entries`. One image listed twice (a file and its folder, say) is one
    spec: a single-file entry wins over a folder or pattern, whatever the order; two that
    disagree and are both single files (or both not) are refused, naming both."""
    specs: list[tuple[ImageSpec, bool, str, int]] = []  # (spec, single file, where, entry)
    frames: list[tuple[int, ImageSpec]] = []  # (entry, frame): each a task, never merged
    for i, entry in enumerate(entries):
        item = entry if isinstance(entry, _Entry) else _Entry(path=entry)
        if item.name is not None:
            _check_image_name(f"{path}: {kind}[{i}].name", item.name)
        if item.sequence or "animation" in item.model_fields_set or "fps" in item.model_fields_set:
            frames += [(i, frame) for frame in _sequence(path, root, kind, i, item, output)]
            continue
        if isinstance(item.path, list) or item.weights is not None:
            blend = _blend(path, root, kind, f"{kind}[{i}]", item)
            specs.append((blend, True, f"{kind}[{i}]", i))
            continue
        where = f"{path}: {kind}[{i}] '{item.path}'"
        files, single = _match(root, item.path, where, output)
        if item.name is not None and len(files) > 1:
            raise ManifestError(f"{where}: 'name' needs a single file, but it matches {len(files)}")
        for file in files:
            _check_readable(file, where)
            name = _entry_name(path, kind, file, item.name)
            spec = ImageSpec(path=file, name=name, overrides=dict(item.params))
            specs.append((spec, single, f"{kind}[{i}]", i))
    chosen: dict[tuple[tuple[Path, float], ...], tuple[ImageSpec, bool, str]] = {}
    place: dict[tuple[tuple[Path, float], ...], int] = {}  # the entry that first listed it
    for spec, single, where, i in specs:
        other = chosen.get(spec.images)
        place.setdefault(spec.images, i)
        if other is None or (single and not other[1]):
            chosen[spec.images] = (spec, single, where)
        elif other[0] != spec and single == other[1]:
            raise ManifestError(
                f"{path}: {kind} image {layout.display(spec.path)} is listed twice with different "
                f"names or params ({other[2]} and {where}); list it once, or give both entries "
                "the same name and params"
            )
    seen: dict[str, ImageSpec] = {}
    stills = [(place[images], spec) for images, (spec, _, _) in chosen.items()]
    for _, spec in sorted([*stills, *frames], key=lambda pair: pair[0]):  # manifest order
        other_spec = seen.get(spec.name)
        if other_spec is not None:
            raise ManifestError(
                f"{path}: {kind} images {layout.display(other_spec.path)} and "
                f"{layout.display(spec.path)} share the name '{spec.name}', so their outputs "
                "would collide; give one a 'name:'"
            )
        seen[spec.name] = spec
    return tuple(seen.values())


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting 'f2' before 'f10': digit runs compare as numbers, the rest folded."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in _DIGITS.split(name)
        if part
    )


def _sequence(
    path: Path, root: Path, kind: str, i: int, item: _Entry, output: Path
) -> list[ImageSpec]:
    """The frames of a `sequence: true` entry, in natural order of their file names."""
    where = f"{path}: {kind}[{i}]"
    if kind != "content":
        raise ManifestError(f"{where}: only content entries can be sequences (sequence: true)")
    if not item.sequence:
        raise ManifestError(f"{where}: 'animation' and 'fps' need 'sequence: true'")
    if isinstance(item.path, list) or item.weights is not None:
        raise ManifestError(f"{where}: a sequence is one folder or pattern of frames, not a blend")
    files, single = _match(root, item.path, f"{where} '{item.path}'", output)
    if single:
        raise ManifestError(
            f"{where} '{item.path}': a sequence is a folder (or pattern) of frames, not one file"
        )
    files.sort(key=lambda f: natural_key(f.name))
    folder = Path(item.path.rstrip("/")).parent if glob.has_magic(item.path) else None
    name = item.name or _clean_name((folder or Path(item.path)).name or files[0].parent.name)
    _check_image_name(f"{where}.name", name)
    sequence = FrameSequence(name, len(files), item.animation, item.fps)
    specs = []
    for number, file in enumerate(files):
        _check_readable(file, where)
        stem = _entry_name(path, kind, file, None)
        spec = ImageSpec(file, f"{name}/{stem}", dict(item.params), (), sequence, number)
        specs.append(spec)
    return specs


def _check_readable(file: Path, where: str) -> None:
    """ManifestError naming `where` and the file when this process cannot read it."""
    if not os.access(file, os.R_OK):
        raise ManifestError(f"{where}: {file} is not readable; check its permissions")


def _entry_name(path: Path, kind: str, file: Path, given: str | None) -> str:
    """An image's name in outputs and results: its `name:`, else its file name's stem."""
    if given is not None:
        return _clean_name(given)
    stem = file.stem
    if _unprintable(stem):
        raise ManifestError(
            f"{path}: {kind} file {layout.display(file)}: its name is not valid UTF-8 or holds a "
            "control character (a line break, say), so it cannot name an output or a results "
            "row; rename the file, or list it as an entry with a 'name:'"
        )
    return stem


def _unprintable(text: str) -> bool:
    # Cc: control characters (line breaks, tabs); Cs: the surrogates Python keeps non-UTF-8
    # bytes of a file name in. Neither is printable, so most names are told by isprintable.
    if text.isprintable():
        return False
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def _clean_name(name: str) -> str:
    """'./x' -> 'x', 'x/' -> 'x': one image, one name, one output."""
    return posixpath.normpath(name.strip()) if name.strip() else name


def _blend(path: Path, root: Path, kind: str, key: str, item: _Entry) -> ImageSpec:
    """A style entry whose `path` lists several files, mixed by `weights` (default equal);
    `key` is where it is in the manifest: 'style[2]', 'pairs[0].style'."""
    where = f"{path}: {key}"
    if kind != "style" and isinstance(item.path, list):
        raise ManifestError(
            f"{where}.path: a list of images blends styles; a content entry takes one "
            "image, file, folder or pattern"
        )
    if kind != "style":
        raise ManifestError(
            f"{where}.weights: weights mix the images of a style blend; a content entry "
            "has none, remove them"
        )
    paths = item.path if isinstance(item.path, list) else [item.path]
    if not paths:
        raise ManifestError(f"{where}.path: the blend lists no image; give one or more files")
    weights = item.weights if item.weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ManifestError(
            f"{where}.weights: {len(weights)} weights for {len(paths)} images; give one "
            "weight per image in 'path'"
        )
    files = []
    for j, pattern in enumerate(paths):
        matched, single = _match(root, pattern, f"{where}.path[{j}] '{pattern}'", None)
        if not single:
            raise ManifestError(
                f"{where}.path[{j}] '{pattern}': a blend takes single files, not folders or "
                "patterns; list each image"
            )
        _check_readable(matched[0], f"{where}.path[{j}]")
        files.append(matched[0])
    total = sum(weights)
    names = [_entry_name(path, kind, f, None) for f in files] if item.name is None else []
    name = _clean_name(item.name) if item.name is not None else "+".join(names)
    blend = tuple((f, w / total) for f, w in zip(files, weights, strict=True))
    return ImageSpec(path=files[0], name=name, overrides=dict(item.params), blend=blend)


def _check_image_name(where: str, name: str) -> None:
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ManifestError(
            f"{where}: {name!r} would write outside the output folder; "
            "give a relative name without '..', such as 'portrait'"
        )
    if _unprintable(name) or _clean_name(name) in ("", "."):
        raise ManifestError(
            f"{where}: {name!r} is empty or holds a control character (a line break, say); "
            "give a plain name, such as 'portrait'"
        )


def _specs_with_init_image(
    path: Path, root: Path, kind: str, specs: tuple[ImageSpec, ...]
) -> tuple[ImageSpec, ...]:
    return tuple(
        replace(
            spec,
            overrides=_with_init_image(
                path, root, f"{kind} '{spec.path.name}' params", spec.overrides
            ),
        )
        if "init_image" in spec.overrides
        else spec
        for spec in specs
    )


def _with_init_image(
    path: Path, root: Path, where: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """`overrides` with its init_image made absolute, once it is known to be a readable file.

    An init_image with {content}, {style} or {variant} is a template: each task's own file
    (a preview run's output, say), checked per task when the plan is made."""
    value = overrides.get("init_image")
    if not isinstance(value, str):
        return dict(overrides)  # absent, or a wrong type that Params reports
    key = f"{path}: {where}.init_image"
    if "{" in value or "}" in value:
        fields = _template_fields(key, value)
        if not fields:
            raise ManifestError(
                f"{key}: {value!r} has braces but no {{content}}, {{style}} or {{variant}}; "
                "write a literal brace as {{ or }}"
            )
        return {**overrides, "init_image": str(root / os.path.expanduser(value))}
    full = (root / os.path.expanduser(value)).resolve()
    if full.is_dir():
        raise ManifestError(f"{key}: {full} is a folder; give an image file")
    if not full.is_file():
        raise ManifestError(f"{key}: no such file {full}; paths are relative to {root}")
    _check_readable(full, key)
    return {**overrides, "init_image": str(full)}


def _match(root: Path, pattern: str, where: str, output: Path | None) -> tuple[list[Path], bool]:
    """The image files `pattern` stands for, and whether it names one file (not a folder or
    a pattern). A folder or pattern never yields what nst-batch wrote under `output`."""
    target = Path(os.path.expanduser(pattern))
    full = target if target.is_absolute() else root / target
    resolve = _resolver()
    if glob.has_magic(pattern):
        files = sorted((Path(p) for p in glob.glob(str(full), recursive=True)), key=_path_order)
        files = [resolve(f) for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        files = [f for f in files if not _made_by_us(output, f)]
        if not files:
            raise ManifestError(
                f"{where}: the pattern matches no image; patterns are relative to {root}"
            )
        return files, False
    if full.is_dir():
        try:
            with os.scandir(full) as listing:  # the folder's entries know their own type
                entries = [e for e in listing if _suffix(e.name) in IMAGE_SUFFIXES]
                folder = full.resolve()
                files = sorted(
                    (
                        Path(e.path).resolve() if e.is_symlink() else folder / e.name
                        for e in entries
                        if e.is_file()
                    ),
                    key=_path_order,
                )
        except OSError as exc:
            raise ManifestError(
                f"{where}: cannot list the folder {full} ({exc.strerror})"
            ) from None
        files = [f for f in files if not _made_by_us(output, f)]
        if not files:
            raise ManifestError(
                f"{where}: the folder {full} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return files, False
    if not full.is_file():
        raise ManifestError(f"{where}: no such file {full}; paths are relative to {root}")
    return [full.resolve()], True


def _path_order(path: Path) -> tuple[str, ...]:
    """The order of sorted(paths), compared as tuples rather than by Path.__lt__."""
    return path.parts


def _suffix(name: str) -> str:
    """A file name's suffix in lower case, as `Path(name).suffix.lower()` gives it."""
    return os.path.splitext(name)[1].lower()


def _resolver() -> Callable[[Path], Path]:
    """`Path.resolve` for many paths at a time: each folder is resolved once, and only a
    path that is itself a link is resolved whole (a folder of 10,000 images is 10,000
    lookups, not one per component of each)."""
    folders: dict[Path, Path] = {}

    def resolve(path: Path) -> Path:
        if path.name in ("", ".", "..") or path.is_symlink():
            return path.resolve()
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        return folder / path.name

    return resolve


def _made_by_us(output: Path | None, file: Path) -> bool:
    """Whether `file` is one of nst-batch's own files in the output folder: the gallery, a
    temporary, or an output (which records its task key in its metadata)."""
    relative = None if output is None else layout.relative_to(output, file)
    if relative is None:
        return False
    if layout.is_reserved(relative):
        return True
    from nst_batch.images import read_metadata  # Pillow only: reads the header

    return layout.KEY_METADATA in read_metadata(file)


def _check_keys(path: Path, where: str, values: Mapping[str, Any]) -> None:
    known = list(Params.model_fields)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ManifestError(f"{path}: {where}: unknown key '{key}'{hint}")


def _template_fields(where: str, template: str) -> list[str]:
    """The fields of a name template, each one of TEMPLATE_FIELDS and written plainly."""
    try:
        fields = [
            (f, spec, conv)
            for _, f, spec, conv in string.Formatter().parse(template)
            if f is not None
        ]
    except ValueError as exc:
        raise ManifestError(f"{where}: bad template {template!r} ({exc})") from None
    formatted = [f for f, spec, conv in fields if spec or conv]
    if formatted:
        raise ManifestError(
            f"{where}: {{{formatted[0]}}} in {template!r} has a format spec or conversion "
            "(':' or '!'); write the field plainly, such as {content}"
        )
    unknown = [f for f, _, _ in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise ManifestError(
            f"{where}: unknown field {{{unknown[0]}}} in {template!r}; "
            f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
        )
    return [f for f, _, _ in fields]


def _check_template(path: Path, template: str, has_sweep: bool) -> str:
    names = _template_fields(f"{path}: name", template)
    parts = Path(template).parts
    if Path(template).is_absolute() or template.startswith(("/", "~")) or ".." in parts:
        raise ManifestError(
            f"{path}: name: {template!r} would write outside the output folder; "
            "use a relative name such as '{style}/{content}'"
        )
    if has_sweep and "variant" not in names:
        template += "__{variant}"
    return template


def _variants(path: Path, sweep: Mapping[str, list[Any]]) -> tuple[Variant, ...]:
    if not sweep:
        return (Variant(name=""),)
    for key, values in sweep.items():
        if not values:
            raise ManifestError(f"{path}: sweep.{key}: give at least one value")
        _check_distinct(path, key, values)
    keys = list(sweep)
    variants = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        name = "_".join(f"{k}-{_slug(v)}" for k, v in zip(keys, combo, strict=True))
        variants.append(Variant(name=name, overrides=dict(zip(keys, combo, strict=True))))
    return tuple(variants)


def _check_distinct(path: Path, key: str, values: Sequence[Any]) -> None:
    """Two values of one sweep key must not give one variant name (10 and 10.0 do)."""
    seen: dict[str, Any] = {}
    for value in values:
        slug = _slug(value)
        if slug in seen:
            first = seen[slug]
            problem = (
                f"the value {value!r} is listed twice"
                if repr(first) == repr(value)
                else f"{first!r} and {value!r} both give the variant name '{key}-{slug}'"
            )
            raise ManifestError(f"{path}: sweep.{key}: {problem}; keep one of them")
        seen[slug] = value


def _slug(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _check_combinations(manifest: Manifest) -> None:
    """Validate every distinct parameter combination and every output path, before any work:
    no two tasks write one file, and nothing the run writes is one of its inputs."""
    fold = str.casefold if layout.is_case_insensitive(manifest.output) else str
    outputs: dict[str, tuple[str, str, str]] = {}
    checked: set[str] = set()
    templated = any(
        "{" in str(overrides.get("init_image", ""))
        for overrides in (
            manifest.base,
            *(s.overrides for s in (*manifest.contents, *manifest.styles)),
            *(p.overrides for p in manifest.pairs),
            *(v.overrides for v in manifest.variants),
        )
    )
    own_inits: list[tuple[Path, str]] = []  # each task's init_image, from a template
    inside = _inside(manifest.output)
    for content, style, variant in manifest.combinations():
        pair = manifest.pair_overrides(content, style)
        combo = repr(
            sorted({**content.overrides, **style.overrides, **pair, **variant.overrides}.items())
        )
        if combo not in checked:
            checked.add(combo)
            _check_params(manifest, content, style, variant)
        name = manifest.output_name(content, style, variant)
        _check_output_name(manifest, name, variant, inside)
        task = (content.name, style.name, variant.name)
        if fold(name) in outputs:
            raise ManifestError(
                f"{manifest.path}: two tasks would write {name}: {outputs[fold(name)]} and "
                f"{task}; add {{variant}} or {{style}} to 'name', or rename an image with 'name:'"
            )
        outputs[fold(name)] = task
        outputs[fold(name + layout.CURVE_SUFFIX)] = task
        if content.sequence is not None and content.sequence.animation == "gif":
            chain = name.rpartition("/")[0]  # the gallery writes its frames as one animation
            outputs[fold(chain + layout.ANIMATION_SUFFIX)] = task
        own = _check_init_image(manifest, content, style, variant) if templated else None
        if own is not None:
            own_inits.append((own, "init_image"))
    for file, what in (*_inputs(manifest), *own_inits):
        relative = layout.relative_to(manifest.output, file)
        if relative is None:
            continue
        if fold(relative) in outputs:
            raise ManifestError(
                f"{manifest.path}: {what} {layout.display(file)} would be overwritten by the "
                f"task {outputs[fold(relative)]}, which writes {relative} in the output folder; "
                "choose another 'output' or 'name'"
            )
        if layout.is_reserved(relative):
            raise ManifestError(
                f"{manifest.path}: {what} {layout.display(file)} is where nst-batch keeps its own "
                f"files in the output folder ({relative}); move it, or choose another 'output'"
            )


def _check_init_image(
    manifest: Manifest, content: ImageSpec, style: ImageSpec, variant: Variant
) -> Path | None:
    """A task's own init_image, from a template: a readable file (None: the task has none)."""
    init = manifest.params_for(content, style, variant).init_image
    if init is None:
        return None
    if Path(init).is_file() and os.access(init, os.R_OK):
        return Path(init)
    task = " x ".join(n for n in (content.name, style.name, variant.name) if n)
    raise ManifestError(
        f"{manifest.path}: init_image for {task}: no readable file {init}; make it first "
        "(a preview run, say) or change the template"
    )


def _inputs(manifest: Manifest) -> Iterable[tuple[Path, str]]:
    """Every file a run reads: content and style images, init images, a weights file."""
    for kind, specs in (("content image", manifest.contents), ("style image", manifest.styles)):
        for spec in specs:
            for file, _ in spec.images:
                yield file, kind
            if isinstance(spec.overrides.get("init_image"), str):
                yield Path(spec.overrides["init_image"]), "init_image"
    for overrides in [v.overrides for v in manifest.variants] + [
        p.overrides for p in manifest.pairs
    ]:
        if isinstance(overrides.get("init_image"), str):
            yield Path(overrides["init_image"]), "init_image"
    if isinstance(manifest.base.get("init_image"), str):
        yield Path(manifest.base["init_image"]), "init_image"  # (a template: checked per task)
    if manifest.weights not in NAMED_SOURCES:
        yield Path(manifest.weights), "weights file"


def _check_params(
    manifest: Manifest, content: ImageSpec, style: ImageSpec, variant: Variant
) -> None:
    try:
        manifest.params_for(content, style, variant)
    except ValidationError as exc:
        where = _combo_where(content, style, variant, manifest.pair_overrides(content, style))
        raise ManifestError(
            _explain(manifest.path, exc, Params, prefix="params.") + where
        ) from None


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


def _combo_where(
    content: ImageSpec, style: ImageSpec, variant: Variant, pair: Mapping[str, Any]
) -> str:
    parts = []
    if content.overrides:
        parts.append(f"content '{content.name}'")
    if style.overrides:
        parts.append(f"style '{style.name}'")
    if pair:
        parts.append(f"the pair '{content.name}' x '{style.name}'")
    if variant.name:
        parts.append(f"variant '{variant.name}'")
    return f" (with the overrides of {', '.join(parts)})" if parts else ""
