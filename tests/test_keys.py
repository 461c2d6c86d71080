"""Pinned task keys. A task's key decides whether every user's gallery is redone: it hashes
the inputs' bytes, every setting that changes the pixels, the weights and the algorithm's
version. Changing one of these values is a deliberate algorithm-version step (say so in the
commit and docs/reliability.md), never a side effect of a refactor."""

from __future__ import annotations

import pytest
import yaml
from conftest import CONTENT, STYLE

from nst_batch.manifest import load_manifest
from nst_batch.plan import plan

# (setting, task label): key, as made on any machine (keys hash bytes and values, no paths).
KEYS: dict[tuple[str, str], str] = {
    ("defaults", "chelsea x starry_night"): "07f09d0e89b4af3b8e76814a",
    ("defaults", "coffee x starry_night"): "93c76826d15fb91cc5e49252",
    ("defaults", "chelsea x blend"): "16e0076f8269dc41126eaf57",
    ("defaults", "coffee x blend"): "89354c598a83195cbd42ea5f",
    ("small", "chelsea x starry_night"): "52a66adad9156ead05d29e24",
    ("small", "coffee x starry_night"): "b2b34cce893233db0c42e08f",
    ("small", "chelsea x blend"): "ee07c69841e7f83344d9df5c",
    ("small", "coffee x blend"): "3eb7a428a7060e19ede1fa58",
    ("sweep", "chelsea x starry_night [preserve_color-none]"): "91e747a8b214074520d85682",
    ("sweep", "coffee x starry_night [preserve_color-none]"): "f19e11dbb861e6a9b0bb736e",
    ("sweep", "chelsea x starry_night [preserve_color-luminance]"): "90a8781f79b25d37847aca49",
    ("sweep", "coffee x starry_night [preserve_color-luminance]"): "1c479fce81a724ea56d32c9c",
    ("sweep", "chelsea x blend [preserve_color-none]"): "4879190949f56de96e2944f8",
    ("sweep", "coffee x blend [preserve_color-none]"): "9eb1759ed3259e81c483dc94",
    ("sweep", "chelsea x blend [preserve_color-luminance]"): "732298c49bab49df066144af",
    ("sweep", "coffee x blend [preserve_color-luminance]"): "386683313962b1026553a835",
}


def _keys(tmp_path, **doc: object) -> dict[str, str]:
    base: dict[str, object] = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png"), str(CONTENT / "coffee.png")],
        "style": [
            str(STYLE / "starry_night.jpg"),
            {"path": [str(STYLE / "starry_night.jpg"), str(STYLE / "the_scream.jpg")],
             "weights": [3, 1], "name": "blend"},
        ],
    }  # fmt: skip
    base.update(doc)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(base))
    return {task.label: task.key for task in plan(load_manifest(path))}


SETTINGS = {
    "defaults": {},
    "small": {"params": {"size": 64, "steps": 12, "style_weight": 30}},
    "sweep": {"params": {"size": 64}, "sweep": {"preserve_color": ["none", "luminance"]}},
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_task_keys_are_pinned(tmp_path, setting: str) -> None:
    keys = _keys(tmp_path, **SETTINGS[setting])
    pinned = {label: key for (name, label), key in KEYS.items() if name == setting}
    assert keys == pinned
