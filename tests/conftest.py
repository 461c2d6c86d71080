"""Shared fixtures: the bundled real images and a small gallery manifest factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CONTENT = IMAGES / "content"
STYLE = IMAGES / "style"


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest into tmp_path: a 2x2 gallery at 64 px and 8 steps unless overridden.

    Keyword arguments replace top-level keys; `params` is merged into the small defaults.
    """

    def write(name: str = "gallery.yaml", **fields: Any) -> Path:
        doc: dict[str, Any] = {
            "output": "out",
            "content": [str(CONTENT / "chelsea.png"), str(CONTENT / "coffee.png")],
            "style": [str(STYLE / "starry_night.jpg"), str(STYLE / "the_scream.jpg")],
            "params": {"size": 64, "steps": 8},
        }
        params = {**doc["params"], **fields.pop("params", {})}
        doc.update(fields)
        doc["params"] = params
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write
