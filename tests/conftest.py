"""Shared fixtures: the bundled real images and a small gallery manifest factory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nst_batch import images

BROWSER_OPT_IN = "NST_BATCH_TEST_BROWSER"  # 1: the browser tests must run (.ci/run sets it)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
CONTENT = IMAGES / "content"
STYLE = IMAGES / "style"


def content_at(path: Path, size: int) -> torch.Tensor:
    """A content image at output size `size` (1, 3, H, W), as the worker sizes it."""
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.target_size(*image.size, size)))


def style_at(path: Path, size: int, scale: float = 1.0) -> torch.Tensor:
    """A style image for output size `size` (longest side size x scale), as the worker sizes it."""
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.scaled_style_size(image.size, size, scale)))


def style_like(path: Path, content: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A style image for the output size of `content` (its longest side)."""
    return style_at(path, max(content.shape[-2:]), scale)


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    """chelsea.png at 64 px: a (1, 3, 43, 64) content for optimizer and precision tests."""
    tensor = content_at(CONTENT / "chelsea.png", 64)
    assert tensor.shape == (1, 3, 43, 64)
    return tensor


@pytest.fixture(scope="module")
def style(content: torch.Tensor) -> torch.Tensor:
    """starry_night.jpg sized for `content`."""
    return style_like(STYLE / "starry_night.jpg", content)


@pytest.fixture
def chromium() -> str:
    """Chromium's path. Without it a browser test is skipped, or fails where the run asked
    for the browser tests (NST_BATCH_TEST_BROWSER=1): a CI that cannot install the browser
    must not pass with its tests unrun."""
    if CHROMIUM is None:
        reason = "needs Chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get(BROWSER_OPT_IN) == "1":
            pytest.fail(f"{reason}; {BROWSER_OPT_IN}=1 asks for the browser tests")
        pytest.skip(reason)
    return CHROMIUM


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
