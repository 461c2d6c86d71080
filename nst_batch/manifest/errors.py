"""How the manifest refuses: `ManifestError`, whose text names the file, the key and the
fix, and the sentences a pydantic `ValidationError` of the schema or of `Params` becomes.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nst_batch.manifest.schema import ImageSpec, Manifest, Variant, _Entry, _Pair
from nst_batch.params import Params


class ManifestError(Exception):
    """The manifest cannot be used; str() names the file, the key and the fix."""


def explain(path: Path, exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
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


def params_error(
    manifest: Manifest,
    content: ImageSpec,
    style: ImageSpec,
    variant: Variant,
    exc: ValidationError,
) -> ManifestError:
    """The refusal of one task's effective parameters, naming whose overrides made them."""
    where = _combo_where(content, style, variant, manifest.pair_overrides(content, style))
    return ManifestError(explain(manifest.path, exc, Params, prefix="params.") + where)


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
