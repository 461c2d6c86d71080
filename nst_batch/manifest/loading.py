"""Loading a manifest: reading the YAML within its limits (aliases, nesting), applying
`--set KEY=VALUE` overrides, validating it against the schema, and resolving it into a
`Manifest`: output folder, preset and weights, images, settings, and the plan's size.
See docs/manifest.md.

The last check is the plan's walk over every task (`Manifest.outlines`), which refuses
outputs that collide before any work; `plan()` then builds on that same walk.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nst_batch import layout
from nst_batch.manifest.errors import ManifestError, explain
from nst_batch.manifest.inputs import expand, listed_pairs
from nst_batch.manifest.schema import Manifest, Pair, _Document
from nst_batch.manifest.settings import (
    check_keys,
    check_template,
    specs_with_init_image,
    sweep_variants,
    with_init_image,
)
from nst_batch.params import PRESET_WEIGHTS, PRESETS
from nst_batch.weights import NAMED_SOURCES

DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
MAX_NAME_BYTES = 255 - 32  # a file system's NAME_MAX, less a temporary's additions
# YAML nodes after alias expansion: a manifest is a few hundred; a "billion laughs" is 10^9.
MAX_YAML_NODES = 100_000


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
        raise ManifestError("\n".join([explain(path, exc, _Document), *missing])) from None
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
        _refuse_duplicate_keys(node, where)
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


def _refuse_duplicate_keys(root: yaml.Node, where: str) -> None:
    """A key given twice in one mapping (two `params:` blocks, say), at any depth: YAML
    would keep the last and drop the other silently. Keys compare as written, with their
    type (`1` and `"1"` differ); keys brought in by a merge (`<<: *base`) may be overridden."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited: set[int] = set()  # an alias's node is checked once
    while stack:
        node, at = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, f"{at}[{i}]") for i, child in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            marks: dict[tuple[str, str], yaml.Mark] = {}  # each key: where it is first
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                name = f"{at}.{key.value}" if at else key.value
                first = marks.setdefault((key.tag, key.value), key.start_mark)
                if first is not key.start_mark:
                    raise ManifestError(
                        f"{where}: the key '{name}' is given twice, "
                        f"{_two_places(first, key.start_mark)} (YAML would keep only the last); "
                        "keep one of them, merging what both say"
                    )
                stack.append((value, name))


def _two_places(first: yaml.Mark, second: yaml.Mark) -> str:
    """'at lines 3 and 9', or 'on line 2, at columns 12 and 21'."""
    if first.line == second.line:
        return f"on line {first.line + 1}, at columns {first.column + 1} and {second.column + 1}"
    return f"at lines {first.line + 1} and {second.line + 1}"


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


def _resolve(path: Path, doc: _Document) -> Manifest:
    root = path.resolve().parent
    output = _output_folder(path, root, doc.output)
    base, weights = _base_and_weights(path, root, doc)
    listed: list[tuple[str, str, dict[str, Any]]] = []  # pairs: (content, style, params)
    if doc.pairs is not None:
        contents, styles, listed = listed_pairs(path, root, doc.pairs, output)
        _check_plan_size(path, 0, 0, doc.sweep, doc.max_tasks, pairs=len(listed))
    else:
        assert doc.content is not None and doc.style is not None  # _missing_images
        contents = expand(path, root, "content", doc.content, output, doc.max_pixels)
        styles = expand(path, root, "style", doc.style, output, doc.max_pixels)
        _check_plan_size(path, len(contents), len(styles), doc.sweep, doc.max_tasks)
    for kind, specs in (("content", contents), ("style", styles)):
        for spec in (spec for spec in specs if spec.overrides):
            check_keys(path, f"{kind} '{layout.display(spec.path.name)}' params", spec.overrides)
    for i, (_, _, params) in enumerate(listed):
        check_keys(path, f"pairs[{i}].params", params)
    check_keys(path, "params", doc.params)
    check_keys(path, "sweep", doc.sweep)
    base = with_init_image(path, root, "params", base)
    contents = specs_with_init_image(path, root, "content", contents)
    styles = specs_with_init_image(path, root, "style", styles)
    by_name = {("content", s.name): s for s in contents} | {("style", s.name): s for s in styles}
    pairs = tuple(
        Pair(
            by_name["content", content],
            by_name["style", style],
            with_init_image(path, root, f"pairs[{i}].params", params),
        )
        for i, (content, style, params) in enumerate(listed)
    )
    variants = tuple(
        replace(v, overrides=with_init_image(path, root, "sweep", v.overrides))
        for v in sweep_variants(path, doc.sweep)
    )
    template = check_template(path, doc.name, bool(doc.sweep))
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
    # The plan's walk over every task (made once, and kept for plan()) refuses outputs
    # that collide, land outside the output folder or overwrite an input: now, before any work.
    manifest.outlines  # noqa: B018
    return manifest


def _output_folder(path: Path, root: Path, given: str) -> Path:
    output = (root / os.path.expanduser(given)).resolve()
    # A name the file system cannot hold would fail every write: refuse it now. The
    # limit leaves room for the hidden temporaries written beside each file.
    too_long = [p for p in output.parts if len(os.fsencode(p)) > MAX_NAME_BYTES]
    if too_long:
        raise ManifestError(
            f"{path}: output: the folder name {layout.display(too_long[0])[:40]}... is "
            f"{len(os.fsencode(too_long[0]))} bytes long, more than {MAX_NAME_BYTES}; "
            "choose a shorter 'output'"
        )
    return output


def _base_and_weights(path: Path, root: Path, doc: _Document) -> tuple[dict[str, Any], str]:
    """The settings every task starts from (the preset's, then `params:`), and the weight
    source: a named one, or an existing file's absolute path."""
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
    return base, weights


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
