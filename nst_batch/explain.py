"""Reading an output folder back: why a task would run (its output's recorded recipe
against its own), what an output was made with (`nst-batch show`), and a task's state as
`report --json` gives it. Torch-free: it reads metadata and results only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from nst_batch.layout import display
from nst_batch.metadata import OutputRecord
from nst_batch.plan import Task
from nst_batch.results import ResultRow

LOSS_ORDER = ("content", "style", "tv", "temporal", "total")  # as results.csv has them


NO_RECIPE = "made with other inputs or settings (no recipe recorded)"
FORCED = "forced (--force)"
_ABSENT = object()


def reasons(
    task: Task,
    metadata: Mapping[str, str] | None,
    row: ResultRow | None = None,
    *,
    force: bool = False,
) -> list[str]:
    """Why `task` would run, in words; [] when it is up to date (what `up_to_date` says).

    `metadata` is what its output file records (`images.read_metadata`), None when there is
    no output file; `row` its latest merged result, if any. The output's recorded recipe is
    compared with the task's: each input file, setting, the weights and the algorithm
    version that differ is named (settings with their old and new values). A latest result
    made with the current key tells what happened to the last try.
    """
    record = None if metadata is None else OutputRecord.from_metadata(metadata)
    if record is not None and record.key == task.key:
        return [FORCED] if force else []
    found: list[str] = []
    tried = row is not None and row.key == task.key
    if record is None:
        if not tried:
            found.append("new")
        elif row is not None and row.status in ("done", "skipped"):
            found.append("the output file is missing")
    else:
        found += _recipe_changes(task, record.recipe)
    if tried and row is not None and row.status == "failed":
        found.append(f"failed before: {row.error or 'no reason recorded'}")
    elif tried and row is not None and row.status == "interrupted":
        found.append("interrupted before")
    return found or ["made with other inputs or settings"]


def _recipe_changes(task: Task, old: dict[str, object] | None) -> list[str]:
    """What differs between the recipe an output records (`old`) and the task's recipe."""
    if old is None:
        return [NO_RECIPE]
    new = task.recipe
    found: list[str] = []
    if old.get("algorithm") != new.get("algorithm"):
        was = plain(old.get("algorithm", _ABSENT))
        found.append(f"a new algorithm version ({was} -> {plain(new.get('algorithm'))})")
    if old.get("content") != new.get("content"):
        found.append(f"the content image changed ({display(task.content.path.name)})")
    if old.get("style") != new.get("style"):
        found.append(_style_change(task, old.get("style")))
    if old.get("init_image") != new.get("init_image"):
        init = task.params.init_image
        found.append("init_image changed" + (f" ({display(Path(init).name)})" if init else ""))
    old_params = old.get("params")
    new_params = new.get("params", {})
    if not isinstance(old_params, dict):
        old_params = {}
    for name in sorted({*old_params, *new_params}):
        was, now = old_params.get(name, _ABSENT), new_params.get(name, _ABSENT)
        if was != now:
            found.append(f"{name} {plain(was)} -> {plain(now)}")
    if old.get("weights") != new.get("weights"):
        found.append("the weights changed")
    if old.get("after") != new.get("after") and task.after is not None:
        before = display(task.after.relative_to(task.folder))
        found.append(f"the frame before ({before}) changed, and this one starts from it")
    if old.get("temporal") != new.get("temporal"):
        found.append(
            f"temporal_weight {plain(old.get('temporal', _ABSENT))} -> "
            f"{plain(new.get('temporal', _ABSENT))}"
        )
    known = {"algorithm", "content", "style", "init_image", "params", "weights", "after"}
    known.add("temporal")
    for name in sorted({*old, *new} - known):  # recipe parts of another version
        if old.get(name, _ABSENT) != new.get(name, _ABSENT):
            found.append(f"{name} changed")
    return found


def _style_change(task: Task, old: object) -> str:
    """'the style image changed (a.jpg)': the files of the style (or blend) whose bytes are new."""
    old_hashes = _hashes(old)
    new = task.recipe.get("style")
    paths = [path for path, _ in task.style.images]
    new_hashes = _hashes(new) if isinstance(new, list) else [new] * len(paths)
    changed = [p for p, h in zip(paths, new_hashes, strict=False) if h not in old_hashes]
    if changed:
        names = ", ".join(display(path.name) for path in changed)
        return f"the style image{'s' if len(changed) > 1 else ''} changed ({names})"
    return "the style blend changed (its images or weights)"


def _hashes(style: object) -> list[object]:
    """The file hashes of a recorded style: one hash, or a blend's [[hash, weight], ...]."""
    if isinstance(style, list):
        return [part[0] for part in style if isinstance(part, list) and part]
    return [style]


def plain(value: object) -> str:
    """A recorded value as a user writes it: 10.0 as 10, lists as [a, b], None as none."""
    if value is _ABSENT:
        return "unset"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


# -- a task's state for scripts: report --json -----------------------------------------------


def task_json(task: Task, now: str, row: ResultRow | None) -> dict[str, object]:
    """One task of the merged view, for `report --json`."""

    def number(value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None

    losses = None
    if row is not None and row.total_loss is not None:
        losses = {
            "content": number(row.content_loss),
            "style": number(row.style_loss),
            "tv": number(row.tv_loss),
            "temporal": number(row.temporal_loss),  # a sequence frame's; None for a still
            "total": number(row.total_loss),
        }
    return {
        "content": task.content.name,
        "style": task.style.name,
        "variant": task.variant.name,
        "output": task.relative_output,
        "state": now,
        "status": row.status if row is not None else None,
        "losses": losses,
        "steps": row.steps if row is not None else None,
        "stopped": row.stopped if row is not None else "",  # budget, tolerance, warm, converged
        "seconds": number(row.seconds) if row is not None else None,
        "error": row.error if row is not None else "",
        "key": task.key,
        "run": row.run if row is not None else "",  # the run that made the latest result
    }


def made_with(path: Path, metadata: Mapping[str, str]) -> dict[str, object]:
    """An output's metadata as one JSON-ready mapping; None where the output records nothing
    (older outputs have no recipe or result)."""
    record = OutputRecord.from_metadata(metadata)
    recipe, result, source = record.recipe or {}, record.result or {}, record.source or {}
    params = recipe.get("params")
    if not isinstance(params, dict):  # no recipe: every setting, as the output recorded them
        params = record.params or None
    return {
        "file": display(path),
        "key": record.key,
        "content": {"name": source.get("content"), "sha256": recipe.get("content")},
        "style": {"name": source.get("style"), "sha256": recipe.get("style")},
        "init_image": recipe.get("init_image"),
        "algorithm": recipe.get("algorithm"),
        "weights": recipe.get("weights"),
        "params": params,
        "losses": result.get("losses"),
        "steps": result.get("steps"),
        "seconds": result.get("seconds"),
        "device": result.get("device"),
        "made_at": result.get("made_at"),
        "version": result.get("version"),
        "start": record.start,
        "accepted": record.accepted,  # taken for these settings without being made again
    }


def shown(info: dict[str, object]) -> list[tuple[str, str]]:
    """(name, value) lines of `nst-batch show`: the inputs first, then settings, then result."""

    def known(value: object) -> str:
        return "not recorded" if value is None else plain(value)

    def image(part: object) -> str:
        spec = part if isinstance(part, dict) else {}
        name, digest = spec.get("name"), spec.get("sha256")
        if isinstance(digest, list):  # a blend: [[sha256, weight], ...]
            digest = ", ".join(f"{d[0][:12]} x {plain(d[1])}" for d in digest if len(d) == 2)
        elif isinstance(digest, str):
            digest = digest[:12]
        return known(name) + (f" (sha256 {digest})" if digest else "")

    lines = [
        ("file", str(info["file"])),
        ("key", str(info["key"])),
        ("content", image(info["content"])),
        ("style", image(info["style"])),
    ]
    if isinstance(info["init_image"], str):
        lines.append(("init_image", f"sha256 {info['init_image'][:12]}"))
    lines += [("algorithm", known(info["algorithm"])), ("weights", known(info["weights"]))]
    params = info["params"]
    if isinstance(params, dict) and params:
        width = max(len(name) for name in params)
        for i, (name, value) in enumerate(params.items()):
            lines.append(("settings" if i == 0 else "", f"{name:<{width}}  {plain(value)}"))
    else:
        lines.append(("settings", "not recorded"))
    losses = info["losses"]
    if isinstance(losses, dict):
        # A still (or a sequence's first frame) has no temporal term: its 0 says nothing.
        terms = [n for n in losses if n != "temporal" or losses[n] not in (0, None)]
        terms.sort(key=lambda n: (*LOSS_ORDER, n).index(n))
        shown = ", ".join(
            f"{name} {losses[name]:.4g}"
            if isinstance(losses[name], float)
            else f"{name} {plain(losses[name])}"
            for name in terms
        )
        lines.append(("losses", shown))
    else:
        lines.append(("losses", "not recorded"))
    seconds = info["seconds"]
    lines += [
        ("steps", known(info["steps"])),
        ("seconds", f"{seconds:.1f}" if isinstance(seconds, float) else known(seconds)),
        ("device", known(info["device"])),
        ("made at", known(info["made_at"])),
        ("version", known(info["version"])),
    ]
    if info["start"] is not None:
        lines.append(("start", plain(info["start"])))
    accepted = info.get("accepted")
    if isinstance(accepted, dict):
        lines.append(
            (
                "accepted",
                f"at {plain(accepted.get('at'))} for these settings without being made again "
                f"(made with key {plain(accepted.get('from'))}; its losses are of those settings)",
            )
        )
    return lines
