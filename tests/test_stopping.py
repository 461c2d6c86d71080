"""When an optimization stops and why (nst_batch/stopping.py): the rule's decisions on
made-up and recorded loss curves, and the reason a real run records in its results row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import CONTENT, STYLE, content_at, style_at

from nst_batch.cli import main
from nst_batch.params import (
    CONVERGENCE_WINDOW,
    WARM_FLOOR,
    WARM_RESIZED_FLOOR,
    WARM_RESIZED_SHARE,
    WARM_SHARE,
    Params,
)
from nst_batch.results import read_rows
from nst_batch.stopping import STOP_REASONS, Stop, StopRule, warm_budget
from nst_batch.stylize import style_targets, stylize

# Warm and cold loss curves recorded by scripts/bench_warm.py (64 px, a photo and a texture
# the defaults were never tuned on), 5 significant digits: see tests/data/SOURCES.md.
CURVES = Path(__file__).parent / "data" / "warm_curves.json"


def _falling(n: int, start: float = 100.0, rate: float = 0.02) -> list[float]:
    return [start * (1 - rate) ** i for i in range(n)]


def test_a_cold_start_runs_its_whole_budget() -> None:
    rule = StopRule.of(Params(steps=120), "cold")
    assert rule.replay(_falling(500)) == Stop(120, "budget")


def test_a_warm_start_runs_its_share_of_the_budget() -> None:
    for steps in (10, 40, 100, 300, 1000):
        rule = StopRule.of(Params(steps=steps), "previous")
        share = min(steps, max(WARM_FLOOR, math.ceil(WARM_SHARE * steps)))
        assert warm_budget(steps) == share
        expected = Stop(share, "budget" if share == steps else "warm")
        assert rule.replay(_falling(steps)) == expected, steps
    assert warm_budget(10) == 10  # never more than the budget itself


def test_a_warm_start_from_another_size_runs_half_the_budget_and_at_least_its_floor() -> None:
    for steps, share in ((50, 50), (100, WARM_RESIZED_FLOOR), (300, 150), (1000, 500)):
        assert (
            warm_budget(steps, resized=True)
            == share
            == min(steps, max(WARM_RESIZED_FLOOR, math.ceil(WARM_RESIZED_SHARE * steps)))
        )
        rule = StopRule.of(Params(steps=steps), "resized")
        expected = Stop(share, "budget" if share == steps else "warm")
        assert rule.replay(_falling(steps)) == expected, steps
    assert warm_budget(300, resized=True) > warm_budget(300)


def test_a_tolerance_stops_once_the_best_loss_falls_slower() -> None:
    # Falls 2% an evaluation for 60, then is flat: the window's fall goes under 1.5% of it
    # at the first evaluation whose window holds no more than one falling step.
    curve = _falling(61) + [_falling(61)[-1]] * 100
    rule = StopRule.of(Params(steps=500, tolerance=0.015), "cold")
    stop = rule.replay(curve)
    assert stop.reason == "tolerance"
    best = rule.bests
    s = stop.step - 1
    window = CONVERGENCE_WINDOW
    assert best[s - window] - best[s] < 0.015 * best[s - window]
    assert best[s - 1 - window] - best[s - 1] >= 0.015 * best[s - 1 - window]


def test_a_tolerance_ignores_a_worse_evaluation() -> None:
    """The rule reads the best loss so far: a line search's worse trial is no plateau."""
    curve = _falling(200)
    noisy = [v * (5 if i % 7 == 3 else 1) for i, v in enumerate(curve)]
    stop = StopRule(200, tolerance=0.015).replay(noisy)
    assert stop == Stop(200, "budget")


def test_a_set_tolerance_holds_for_warm_starts_and_frames() -> None:
    params = Params(steps=300, tolerance=0.015)
    for start in ("previous", "frame", "cold"):
        rule = StopRule.of(params, start)  # type: ignore[arg-type]
        assert rule.replay(_falling(300, rate=0.0)).reason == "tolerance"


def test_every_reason_is_named() -> None:
    assert STOP_REASONS == ("budget", "tolerance", "warm", "converged")


def _cells() -> list[dict[str, object]]:
    return json.loads(CURVES.read_text())["cells"]


@pytest.mark.parametrize(
    "index", range(len(_cells())), ids=[f"{c['change']}-{c['steps']}" for c in _cells()]
)
def test_on_recorded_curves_a_warm_start_stops_in_a_third_of_the_cold_time(index: int) -> None:
    """Replayed on warm runs recorded after a change of settings: the rule stops them at
    most a third of the cold budget in (a size change: the recorded share), where their best
    loss is within the recorded bound of what the cold run of the new settings reached with
    its whole budget."""
    cell = _cells()[index]
    steps, warm, cold = int(cell["steps"]), cell["warm"], cell["cold"]  # type: ignore[call-overload]
    assert isinstance(warm, list) and isinstance(cold, list) and len(cold) == steps
    start = "resized" if cell["change"] == "size x2" else "previous"
    stop = StopRule.of(Params(steps=steps), start).replay(warm)
    assert stop.step <= float(cell.get("time", 1 / 3)) * steps  # type: ignore[arg-type]
    assert stop.step < len(warm)  # the recorded curve goes on: the rule chose to stop
    loss = min(warm[: stop.step]) / min(cold)
    assert loss <= cell["bound"], (stop, loss)


# -- through the optimization and the command --------------------------------------------


@pytest.fixture(scope="module")
def problem(net):  # type: ignore[no-untyped-def]
    content = content_at(CONTENT / "chelsea.png", 64)
    style = style_at(STYLE / "starry_night.jpg", 64)
    params = Params(size=64, steps=40, style_layers=("relu1_1", "relu2_1", "relu3_1"))
    return net, content, style_targets(net, style, params), params


@pytest.mark.slow
def test_the_optimization_reports_why_it_stopped(problem) -> None:  # type: ignore[no-untyped-def]
    net, content, targets, params = problem
    spent = stylize(net, content, targets, params)
    assert (spent.steps, spent.stopped) == (40, "budget")
    tolerant = stylize(net, content, targets, params.model_copy(update={"tolerance": 0.5}))
    assert tolerant.stopped == "tolerance"
    assert CONVERGENCE_WINDOW < tolerant.steps < 40
    assert tolerant.history == spent.history[: tolerant.steps]  # the same path, cut short


@pytest.mark.slow
def test_the_results_row_says_why_each_task_stopped(tmp_path: Path) -> None:
    doc = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png")],
        "style": [str(STYLE / "starry_night.jpg")],
        "params": {"size": 64, "steps": 100},
    }
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    run = CliRunner().invoke(main, [str(manifest)])
    assert run.exit_code == 0, run.output
    warm = CliRunner().invoke(
        main, [str(manifest), "--set", "params.style_weight=30", "--set", "params.init=previous"]
    )
    assert warm.exit_code == 0, warm.output
    cold, rerun = read_rows(tmp_path / "out" / "results.csv")
    assert (cold.status, cold.steps, cold.stopped, cold.start) == ("done", 100, "budget", "content")
    assert (rerun.status, rerun.stopped, rerun.start) == ("done", "warm", "previous")
    assert rerun.steps == warm_budget(100) < 100
    assert rerun.total_loss is not None and cold.total_loss is not None
