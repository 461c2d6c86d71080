"""Warm starts (`init: previous`), the convergence stop (`tolerance`) and init_image
templates, through the real command on tiny real images (64 px, a few steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTENT, STYLE, content_at, invoke, style_at, write_manifest_in
from PIL import Image

from nst_batch.images import read_metadata
from nst_batch.manifest import load_manifest
from nst_batch.metadata import KEY_METADATA, START_METADATA
from nst_batch.params import CONVERGENCE_WINDOW, WARM_SHARE, WARM_TOLERANCE, Params
from nst_batch.plan import plan
from nst_batch.results import read_rows
from nst_batch.stopping import StopRule, warm_budget
from nst_batch.stylize import style_targets, stylize
from nst_batch.vgg import build_vgg19

# One task: chelsea x starry_night.
ONE = {"content": [str(CONTENT / "chelsea.png")], "style": [str(STYLE / "starry_night.jpg")]}


def _start(output: Path) -> dict[str, Any]:
    return json.loads(read_metadata(output)[START_METADATA])


@pytest.mark.slow
def test_an_outdated_output_is_the_start_of_its_rerun(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path, **ONE, params={"steps": 20})
    assert invoke(manifest).exit_code == 0
    out = tmp_path / "out" / "chelsea__starry_night.jpg"
    old_key = read_metadata(out)[KEY_METADATA]
    assert _start(out) == {"init": "content", "from": None}

    warm = invoke(manifest, "--set", "params.style_weight=30", "--set", "params.init=previous")
    assert warm.exit_code == 0, warm.output
    row = read_rows(tmp_path / "out" / "results.csv")[-1]
    assert (row.status, row.start) == ("done", "previous")
    assert _start(out) == {"init": "previous", "from": old_key}
    # The warm result stands for the cold one: a run with the usual init finds it up to date.
    cold = invoke(manifest, "--set", "params.style_weight=30", "--dry-run")
    assert cold.output.splitlines()[-1] == "0 to run, 1 up to date, 1 in all"
    (task,) = plan(load_manifest(manifest, ["params.style_weight=30"]))
    assert read_metadata(out)[KEY_METADATA] == task.key


@pytest.mark.slow
def test_without_a_previous_output_the_start_is_the_content(tmp_path: Path) -> None:
    result = invoke(write_manifest_in(tmp_path, **ONE, params={"steps": 20, "init": "previous"}))
    assert result.exit_code == 0, result.output
    (row,) = read_rows(tmp_path / "out" / "results.csv")
    assert row.start == "content"
    assert _start(tmp_path / "out" / "chelsea__starry_night.jpg") == {
        "init": "content",
        "from": None,
    }


@pytest.mark.slow
def test_a_previous_output_of_another_size_is_resized(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path, **ONE, format="png", params={"steps": 160})
    assert invoke(manifest, "--set", "params.steps=20").exit_code == 0
    out = tmp_path / "out" / "chelsea__starry_night.png"
    assert Image.open(out).size == (64, 43)
    assert warm_budget(160) < warm_budget(160, resized=True) < 160
    bigger = invoke(manifest, "--set", "params.size=96", "--set", "params.init=previous")
    assert bigger.exit_code == 0, bigger.output
    assert Image.open(out).size == (96, 64)
    row = read_rows(tmp_path / "out" / "results.csv")[-1]
    # Across a size change the warm start runs the resized share (nst_batch/stopping.py).
    assert (row.start, row.steps, row.stopped) == ("previous", warm_budget(160, True), "warm")


def test_the_start_column_names_every_usual_init(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path, **ONE, params={"steps": 2}, sweep={"init": ["content", "noise"]}
    )
    assert invoke(manifest).exit_code == 0
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert sorted(r.start for r in rows) == ["content", "noise"]


def test_init_previous_shares_the_cold_key(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path, **ONE, params={"steps": 20})
    (cold,) = plan(load_manifest(manifest))
    (warm,) = plan(load_manifest(manifest, ["params.init=previous"]))
    (noise,) = plan(load_manifest(manifest, ["params.init=noise"]))
    assert warm.key == cold.key != noise.key


@pytest.fixture(scope="module")
def problem() -> tuple[Any, Any, Any]:
    net = build_vgg19("original", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2"])
    content = content_at(CONTENT / "chelsea.png", 64)
    style = style_at(STYLE / "starry_night.jpg", 64)
    return net, content, style


@pytest.mark.slow
def test_tolerance_stops_a_converged_optimization_early(problem) -> None:
    net, content, style = problem
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    full = Params(size=64, steps=100, tolerance=0, style_layers=layers)
    targets = style_targets(net, style, full)
    everything = stylize(net, content, targets, full)
    tolerance = 0.2  # reached after about 80 of the 100 evaluations
    stopped = stylize(net, content, targets, full.model_copy(update={"tolerance": tolerance}))
    assert everything.steps == 100
    assert CONVERGENCE_WINDOW < stopped.steps < 100
    best = [min(everything.history[: i + 1]) for i in range(100)]
    s = stopped.steps - 1  # the last evaluation: the window's fall was under the tolerance
    assert best[s - CONVERGENCE_WINDOW] - best[s] < tolerance * best[s - CONVERGENCE_WINDOW]
    assert (
        best[s - 1 - CONVERGENCE_WINDOW] - best[s - 1]
        >= tolerance * best[s - 1 - CONVERGENCE_WINDOW]
    )
    assert stopped.history == everything.history[: stopped.steps]  # the same path, cut short


def test_tolerance_is_part_of_the_key(tmp_path: Path) -> None:
    manifest = write_manifest_in(tmp_path, **ONE, params={"steps": 20})
    (default,) = plan(load_manifest(manifest))
    (other,) = plan(load_manifest(manifest, ["params.tolerance=0.5"]))
    assert default.key != other.key


# -- init_image templates ------------------------------------------------------------------


@pytest.mark.slow
def test_a_preview_seeds_the_final_run_through_an_init_image_template(tmp_path: Path) -> None:
    preview = write_manifest_in(
        tmp_path, "preview.yaml", **ONE, output="preview", params={"size": 48, "steps": 4}
    )
    final = write_manifest_in(
        tmp_path,
        **ONE,
        params={"init": "image", "init_image": "preview/{content}__{style}.jpg", "steps": 4},
    )
    missing = invoke(final, "--dry-run")
    assert missing.exit_code == 2
    assert (
        f"init_image for chelsea x starry_night: no readable file "
        f"{tmp_path / 'preview' / 'chelsea__starry_night.jpg'}; make it first"
    ) in missing.output
    assert invoke(preview).exit_code == 0
    result = invoke(final)
    assert result.exit_code == 0, result.output
    (row,) = read_rows(tmp_path / "out" / "results.csv")
    assert (row.status, row.start) == ("done", "image")


def test_an_init_image_template_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path, **ONE, params={"steps": 20, "init": "image", "init_image": "p/{contnet}.jpg"}
    )
    result = invoke(manifest)
    assert result.exit_code == 2
    assert "params.init_image: unknown field {contnet} in 'p/{contnet}.jpg'" in result.output


def test_an_init_image_template_may_not_be_the_tasks_own_output(tmp_path: Path) -> None:
    manifest = write_manifest_in(
        tmp_path,
        **ONE,
        params={"steps": 20, "init": "image", "init_image": "out/{content}__{style}.jpg"},
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chelsea__starry_night.jpg").write_bytes(
        (CONTENT / "chelsea.png").read_bytes()
    )
    result = invoke(manifest)
    assert result.exit_code == 2
    assert "init_image" in result.output and "would be overwritten by the task" in result.output


def test_auto_tolerance_gives_each_start_its_rule() -> None:
    auto = Params(steps=300)
    assert auto.tolerance == "auto"
    warm = StopRule.of(auto, "previous")
    assert (warm.steps, warm.tolerance, warm.warm) == (warm_budget(300), 0.0, True)
    assert warm_budget(300) == math.ceil(WARM_SHARE * 300) < 300
    resized = StopRule.of(auto, "resized")
    assert (resized.steps, resized.tolerance, resized.warm) == (150, 0.0, True)
    frame = StopRule.of(auto, "frame")
    assert (frame.steps, frame.tolerance, frame.warm) == (300, WARM_TOLERANCE, False)
    cold = StopRule.of(auto, "cold")  # a cold run keeps its whole budget
    assert (cold.steps, cold.tolerance, cold.warm) == (300, 0.0, False)
    chosen = Params(steps=300, tolerance=0.2)  # a tolerance set holds for every start
    for start in ("cold", "previous", "resized", "frame"):
        rule = StopRule.of(chosen, start)  # type: ignore[arg-type]
        assert (rule.steps, rule.tolerance, rule.warm) == (300, 0.2, False)
