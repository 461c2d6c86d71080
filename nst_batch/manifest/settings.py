"""What a manifest says beside its images: the keys of its `params` (wherever they are
set), `init_image` paths and templates, the sweep's variants and their names, and the
output-name template. See docs/manifest.md (params, sweep, name, warm starts).
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nst_batch.manifest.errors import ManifestError
from nst_batch.manifest.inputs import check_readable
from nst_batch.manifest.schema import ImageSpec, Variant
from nst_batch.params import Params

TEMPLATE_FIELDS = ("content", "style", "variant")


def check_keys(path: Path, where: str, values: Mapping[str, Any]) -> None:
    """Refuse a key that is not a parameter, suggesting the closest one."""
    known = list(Params.model_fields)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ManifestError(f"{path}: {where}: unknown key '{key}'{hint}")


# -- init_image ---------------------------------------------------------------------


def specs_with_init_image(
    path: Path, root: Path, kind: str, specs: tuple[ImageSpec, ...]
) -> tuple[ImageSpec, ...]:
    return tuple(
        replace(
            spec,
            overrides=with_init_image(
                path, root, f"{kind} '{spec.path.name}' params", spec.overrides
            ),
        )
        if "init_image" in spec.overrides
        else spec
        for spec in specs
    )


def with_init_image(
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
        if _template_fields(key, value):
            return {**overrides, "init_image": str(root / os.path.expanduser(value))}
        return {**overrides, "init_image": _literal_init_image(path, root, key, value)}
    return {**overrides, "init_image": str(_readable_init_image(root, key, value))}


def _literal_init_image(path: Path, root: Path, key: str, value: str) -> str:
    """An init_image whose braces are all escaped (`{{x}}.png`: the file `{x}.png`): a
    readable file, kept escaped, as each task fills its init_image as a template."""
    full = _readable_init_image(root, key, value.format())
    return str(full).replace("{", "{{").replace("}", "}}")


def _readable_init_image(root: Path, key: str, value: str) -> Path:
    full = (root / os.path.expanduser(value)).resolve()
    if full.is_dir():
        raise ManifestError(f"{key}: {full} is a folder; give an image file")
    if not full.is_file():
        raise ManifestError(f"{key}: no such file {full}; paths are relative to {root}")
    check_readable(full, key)
    return full


# -- the output-name template -------------------------------------------------------


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


def check_template(path: Path, template: str, has_sweep: bool) -> str:
    """The `name` template, refused if it would write outside the output folder; with a
    sweep, `__{variant}` is appended when absent."""
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


# -- the sweep ----------------------------------------------------------------------


def sweep_variants(path: Path, sweep: Mapping[str, list[Any]]) -> tuple[Variant, ...]:
    """One variant per combination of the sweep's values, named `key-value_key-value`."""
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
