"""What an output records, and reading it back: one home for the `nst-batch:*` metadata.

An output image records the task key it was made with, the recipe that key hashes, its
settings, the names of its inputs, its result (losses, steps, time, device, date, version)
and how it started; a progress snapshot records its key and step; a sequence's animation
the key of its last frame, its frame count and duration. The worker and the animations
build these mappings here; `show`, `--dry-run -v`, warm starts and the frames of a sequence
read them back through `OutputRecord`. Where each file lives: docs/layout.md.

Strings in, strings out: `images` stores the mapping in the file (PNG text chunks, EXIF,
a GIF's comment) and reads it back (`images.read_metadata`). Stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

KEY_METADATA = "nst-batch:key"  # the task key a file was made with: what marks it as ours
RECIPE_METADATA = "nst-batch:recipe"  # an output's recipe, the one its key hashes (JSON)
PARAMS_METADATA = "nst-batch:params"  # ... every setting it was made with (JSON)
SOURCE_METADATA = "nst-batch:source"  # ... the names of its content and style (JSON)
RESULT_METADATA = "nst-batch:result"  # ... its losses, steps, time, device, date (JSON)
START_METADATA = "nst-batch:start"  # ... how it started: {"init": ..., "from": key} (JSON)
SNAPSHOT_METADATA = "nst-batch:snapshot"  # a snapshot's step, total steps, total loss (JSON)
ANIMATION_METADATA = "nst-batch:animation"  # an animation's frame count and duration (JSON)
ACCEPTED_METADATA = "nst-batch:accepted"  # an output taken for other settings: from, at (JSON)

_MADE_AT = "%Y-%m-%dT%H:%M:%SZ"  # `made_at`, in UTC


def output_metadata(
    *,
    key: str,
    recipe: Mapping[str, object],
    params: Mapping[str, object],
    content: str,
    style: str,
    losses: Mapping[str, float],
    steps: int,
    seconds: float,
    device: str,
    made_at: datetime,
    version: str,
    init: str,
    start_from: str | None,
) -> dict[str, str]:
    """What a finished output records: its task `key`, the `recipe` the key hashes, every
    setting (`params`, as JSON values), its `content` and `style` names, the final weighted
    `losses`, `steps`, `seconds` spent, `device`, `made_at` (a UTC time) and nst-batch
    `version`, and how it started (`init`, and `start_from`: the key of the output it
    started from, None when it did not)."""
    result = {
        "losses": dict(losses),
        "steps": steps,
        "seconds": round(seconds, 3),
        "device": device,
        "made_at": made_at.strftime(_MADE_AT),
        "version": version,
    }
    return {
        KEY_METADATA: key,
        RECIPE_METADATA: json.dumps(recipe, sort_keys=True, separators=(",", ":")),
        PARAMS_METADATA: json.dumps(params, sort_keys=True),
        SOURCE_METADATA: _source(content, style),
        RESULT_METADATA: json.dumps(result, sort_keys=True),
        START_METADATA: json.dumps({"init": init, "from": start_from}),
    }


def accepted_metadata(
    recorded: Mapping[str, str],
    *,
    key: str,
    recipe: Mapping[str, object],
    params: Mapping[str, object],
    at: datetime,
    version: str,
) -> dict[str, str]:
    """What an output `recorded` records once accepted as made with other settings, without
    being made again (`nst-batch accept`): the new `key`, `recipe` and `params`, and where it
    came from (the key it was made with) and when it was accepted. Its result (losses, steps,
    time) stays that of the optimization that made it."""
    accepted = {
        "from": recorded.get(KEY_METADATA),
        "at": at.strftime(_MADE_AT),
        "version": version,
    }
    return {
        **recorded,
        KEY_METADATA: key,
        RECIPE_METADATA: json.dumps(recipe, sort_keys=True, separators=(",", ":")),
        PARAMS_METADATA: json.dumps(params, sort_keys=True),
        ACCEPTED_METADATA: json.dumps(accepted, sort_keys=True),
    }


def snapshot_metadata(key: str, step: int, steps: int, total_loss: float) -> dict[str, str]:
    """What a progress snapshot records: its task's `key`, the `step` it shows out of the
    task's `steps`, and the total loss there."""
    snapshot = {"step": step, "steps": steps, "total_loss": total_loss}
    return {KEY_METADATA: key, SNAPSHOT_METADATA: json.dumps(snapshot)}


def animation_metadata(
    key: str,
    frames: int,
    duration: int,
    content: str,
    style: str,
    playback: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """What a sequence's animation records: the `key` of its chain's last frame, its number of
    `frames` and each one's `duration` (ms), and its sequence (`content`) and `style` names;
    a video also its `playback`: its exact frame rate and the clip its sound comes from."""
    shape = {"frames": frames, "duration": duration, **(playback or {})}
    return {
        KEY_METADATA: key,
        ANIMATION_METADATA: json.dumps(shape, sort_keys=True),
        SOURCE_METADATA: _source(content, style),
    }


def _source(content: str, style: str) -> str:
    return json.dumps({"content": content, "style": style})


@dataclass(frozen=True)
class OutputRecord:
    """What an output records, read back; None for each part it does not record, or records
    as something other than a JSON object (older outputs have no recipe or result; a file
    not ours may hold anything)."""

    key: str | None = None
    recipe: dict[str, object] | None = None
    params: dict[str, object] | None = None  # every setting (the recipe has those in its key)
    source: dict[str, object] | None = None  # {"content": name, "style": name}
    result: dict[str, object] | None = None  # losses, steps, seconds, device, made_at, version
    start: dict[str, object] | None = None  # {"init": ..., "from": key or None}
    accepted: dict[str, object] | None = None  # {"from": key, "at": ..., "version": ...}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> OutputRecord:
        """Read `metadata` (`images.read_metadata`); never raises on what a file holds."""
        key = metadata.get(KEY_METADATA)
        return cls(
            key=key if isinstance(key, str) else None,
            recipe=_json_object(metadata.get(RECIPE_METADATA)),
            params=_json_object(metadata.get(PARAMS_METADATA)),
            source=_json_object(metadata.get(SOURCE_METADATA)),
            result=_json_object(metadata.get(RESULT_METADATA)),
            start=_json_object(metadata.get(START_METADATA)),
            accepted=_json_object(metadata.get(ACCEPTED_METADATA)),
        )


def _json_object(text: object) -> dict[str, object] | None:
    """`text` parsed, if it is a JSON object; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None
    return value if isinstance(value, dict) else None
