"""`nst-batch accept`: existing outputs taken as made with the current settings, without
being made again; their metadata and the results say so, and `show` tells the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import invoke
from PIL import Image

from nst_batch import layout
from nst_batch.images import read_metadata
from nst_batch.metadata import ACCEPTED_METADATA, KEY_METADATA
from nst_batch.results import read_rows


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_accepted_outputs_are_up_to_date_with_their_pixels_untouched(write_manifest, fmt):
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu", format=fmt)
    assert invoke(manifest).exit_code == 0
    root = manifest.parent / "out"
    outputs = sorted(p for p in root.glob(f"*__*.{fmt}"))
    assert len(outputs) == 4
    pixels = {p: np.asarray(Image.open(p)) for p in outputs}
    keys = {p: read_metadata(p)[KEY_METADATA] for p in outputs}
    change = ("--set", "params.tv_weight=0.001")
    assert "4 to run" in invoke(manifest, "-n", *change).output

    accepted = invoke("accept", manifest, *change, "--only", "content=chelsea")
    assert accepted.exit_code == 0, accepted.output
    assert "2 outputs accepted as made with the current settings" in accepted.output
    plan = invoke(manifest, "-n", *change)
    assert "2 to run, 2 up to date" in plan.output  # the chelsea outputs count as made
    for path in outputs:
        assert np.array_equal(np.asarray(Image.open(path)), pixels[path])  # not re-encoded
        recorded = read_metadata(path)
        if path.name.startswith("chelsea"):
            assert recorded[KEY_METADATA] != keys[path]
            assert f'"from": "{keys[path]}"' in recorded[ACCEPTED_METADATA]
        else:
            assert recorded[KEY_METADATA] == keys[path] and ACCEPTED_METADATA not in recorded
    rows = read_rows(layout.results_file(root, None))
    accepted_rows = [r for r in rows if r.start == "accepted"]
    assert [(r.content, r.status) for r in accepted_rows] == [("chelsea", "done")] * 2
    assert len({r.run for r in accepted_rows}) == 1 and accepted_rows[0].run
    shown = invoke("show", root / f"chelsea__starry_night.{fmt}")
    assert (
        "accepted" in shown.output and keys[root / f"chelsea__starry_night.{fmt}"] in shown.output
    )
    assert "tv_weight" in shown.output and "0.001" in shown.output


def test_accept_without_outputs_exits_1_and_names_them(write_manifest) -> None:
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu")
    (manifest.parent / "out").mkdir()
    Image.new("RGB", (48, 32)).save(manifest.parent / "out" / "chelsea__starry_night.jpg")
    result = invoke("accept", manifest)
    assert result.exit_code == 1
    assert (
        "0 outputs accepted" in result.output and "4 without an output to accept" in result.output
    )
    assert "chelsea x starry_night: no output made by nst-batch" in result.output
    assert "coffee x the_scream: no output" in result.output
    assert read_metadata(manifest.parent / "out" / "chelsea__starry_night.jpg") == {}


def test_accept_waits_for_no_run(write_manifest) -> None:
    manifest = write_manifest(params={"size": 48, "steps": 3}, devices="cpu")
    assert invoke(manifest).exit_code == 0
    root: Path = manifest.parent / "out"
    before = {p: p.read_bytes() for p in root.glob("*__*.jpg")}
    with layout.hold(root, None):
        held = invoke("accept", manifest, "--set", "params.tv_weight=0.001")
    assert held.exit_code == 75
    assert {p: p.read_bytes() for p in root.glob("*__*.jpg")} == before
