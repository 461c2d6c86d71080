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
from nst_batch.worker import Worker

PINNED = {  # label: (total loss, steps, sha256 of the output's RGB bytes, first 16 hex)
    "chelsea x starry_night [preserve_color-none]": (6088870.0625, 12, "e06ff3223cd046e8"),
    "chelsea x starry_night [preserve_color-luminance]": (322218.65625, 12, "1fd4cf04a341ff01"),
    "chelsea x blend [preserve_color-none]": (4581819.4375, 12, "2a903b3d26daf737"),
    "chelsea x blend [preserve_color-luminance]": (278676.0, 12, "514b28079a93ef46"),
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
        made[task.label] = (outcome.total_loss, outcome.steps, _pixels(task.output))
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
    assert (outcome.total_loss, outcome.steps, _pixels(task.output)) == PINNED_SCALES
