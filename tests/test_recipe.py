"""The stylization recipe (scales, colour modes, blends, init) and its public API.

`test_pinned_outputs` pins the final loss and the pixels of five real tasks that exercise
every part of the recipe, as the worker made them before the recipe moved out of it: a
refactor must not change a single pixel on the CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONTENT, STYLE
from PIL import Image

from nst_batch.manifest import load_manifest
from nst_batch.plan import plan
from nst_batch.stylize import Progress
from nst_batch.worker import Worker

PINNED = {  # label: (total loss, steps, sha256 of the output's RGB bytes, first 16 hex)
    "chelsea x starry_night [preserve_color-none]": (6088865.875, 12, "e06ff3223cd046e8"),
    "chelsea x starry_night [preserve_color-luminance]": (322218.65625, 12, "1fd4cf04a341ff01"),
    "chelsea x blend [preserve_color-none]": (4581819.25, 12, "2a903b3d26daf737"),
    "chelsea x blend [preserve_color-luminance]": (278675.984375, 12, "514b28079a93ef46"),
}
PINNED_SCALES = (621255.234375, 12, "50f73868d09ec3e5")


def _pixels(path: Path) -> str:
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()[:16]


@pytest.mark.slow
def test_pinned_outputs(tmp_path: Path) -> None:
    doc = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png")],
        "style": [
            str(STYLE / "starry_night.jpg"),
            {
                "path": [str(STYLE / "starry_night.jpg"), str(STYLE / "the_scream.jpg")],
                "weights": [3, 1],
                "name": "blend",
            },
        ],
        "format": "png",
        "params": {"size": 64, "steps": 12},
        "sweep": {"preserve_color": ["none", "luminance"]},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    worker = Worker("cpu", "cpu#0")
    made = {}
    for task in plan(load_manifest(tmp_path / "m.yaml")):
        outcome = worker.run(task)
        assert outcome.status == "done", outcome.error
        made[task.label] = (outcome.losses.total, outcome.steps, _pixels(task.output))
    assert made == PINNED

    doc.update(
        output="scales",
        style=[str(STYLE / "starry_night.jpg")],
        params={
            "size": 128,
            "steps": 6,
            "scales": 2,
            "scale_steps": 6,
            "preserve_color": "histogram",
            "init": "style",
        },
    )
    del doc["sweep"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    (task,) = plan(load_manifest(tmp_path / "m.yaml"))
    outcome = worker.run(task)
    assert (outcome.losses.total, outcome.steps, _pixels(task.output)) == PINNED_SCALES


def test_transfer_makes_the_workers_pixels() -> None:
    """The public API and a gallery task are one recipe: the same pixels on the CPU."""
    import nst_batch

    seen: list[Progress] = []
    image = nst_batch.transfer(
        CONTENT / "chelsea.png",
        STYLE / "starry_night.jpg",
        size=64,
        steps=12,
        device="cpu",
        on_progress=seen.append,
        report_every=1,
    )
    assert image.mode == "RGB" and image.size == (64, 43)
    assert (
        hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]
        == PINNED["chelsea x starry_night [preserve_color-none]"][2]
    )
    assert [p.step for p in seen] == list(range(1, 13)) and seen[-1].steps == 12
    assert seen[-1].losses.total < seen[0].losses.total


def test_transfer_takes_pil_images_a_blend_and_scales() -> None:
    from nst_batch import transfer

    content = Image.open(CONTENT / "coffee.png")
    blend = [(Image.open(STYLE / "starry_night.jpg"), 3.0), (STYLE / "the_scream.jpg", 1.0)]
    seen: list[Progress] = []
    image = transfer(
        content,
        blend,
        size=128,
        steps=3,
        scales=2,
        scale_steps=3,
        preserve_color="luminance",
        on_progress=seen.append,
        report_every=1,
    )
    assert image.size == (128, 85)
    assert seen[-1].step == seen[-1].steps == 6  # 3 steps at 64 px, 3 at 128 px


def test_transfer_refuses_bad_settings_and_images(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from nst_batch import transfer
    from nst_batch.images import ImageError

    with pytest.raises(ValidationError, match="stlye_weight"):
        transfer(CONTENT / "chelsea.png", STYLE / "starry_night.jpg", stlye_weight=3)
    with pytest.raises(ImageError, match=r"missing\.png"):
        transfer(tmp_path / "missing.png", STYLE / "starry_night.jpg", size=64, steps=2)
