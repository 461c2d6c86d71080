"""The stylization options end to end: preserve_color, style blends, coarse-to-fine scales
and Adam iterate averaging, each shown to change the output the way it claims.

Real 'original' weights and the sample images at 64 to 128 px, 2 to 10 steps. Runs shared
by several tests are module fixtures, made by one module-wide Worker (its VGG19 built once);
tests that count target computations use a Worker of their own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CONTENT, STYLE, content_at, style_at, write_manifest_in
from PIL import Image

from nst_batch import color, images
from nst_batch.layout import curve_path
from nst_batch.lbfgs import Evaluation
from nst_batch.manifest import load_manifest
from nst_batch.params import Params
from nst_batch.plan import Task, plan
from nst_batch.stylize import Progress, Result, StyleTargets, _adam, style_targets, stylize
from nst_batch.worker import TaskOutcome, Worker

CHELSEA = CONTENT / "chelsea.png"  # 451x300: 64x43 at 64 px, 128x85 at 128 px
STARRY = STYLE / "starry_night.jpg"
SCREAM = STYLE / "the_scream.jpg"
STEPS = 10
MODES = ("none", "luminance", "histogram")


def _tasks(folder: Path, **fields: Any) -> list[Task]:
    """The plan of chelsea in Starry Night, 64 px, STEPS steps, PNG output, in `folder`.

    Keyword arguments replace top-level keys; `params` is merged into the defaults.
    """
    params = {"steps": STEPS, **fields.pop("params", {})}
    doc = {"content": [str(CHELSEA)], "style": [str(STARRY)], "format": "png", **fields}
    return plan(load_manifest(write_manifest_in(folder, **doc, params=params)))


def _only(folder: Path, **fields: Any) -> Task:
    (task,) = _tasks(folder, **fields)
    return task


def _output(task: Task) -> torch.Tensor:
    return images.to_tensor(images.load_image(task.output))


def _targets(worker: Worker, task: Task, size: int = 64) -> StyleTargets:
    return worker.targets(task, worker.model(task), size, content_at(task.content.path, size))


def _colour_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3,) and covariance (3, 3) of the pixels of (1, 3, H, W), in float64."""
    pixels = image[0].flatten(1).double()  # (3, N)
    return pixels.mean(dim=1), torch.cov(pixels, correction=0)


def _colour_distance(image: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(distance of the mean colours, Frobenius distance of the colour covariances)."""
    (mean, cov), (ref_mean, ref_cov) = _colour_stats(image), _colour_stats(reference)
    return float((mean - ref_mean).norm()), float((cov - ref_cov).norm())


def _relative(a: StyleTargets, b: StyleTargets) -> float:
    """The largest relative difference of two target sets over their layers."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).norm() / b[k].norm()) for k in a)


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker("cpu", "cpu#0")


@dataclass
class Run:
    task: Task
    outcome: TaskOutcome
    output: torch.Tensor  # (1, 3, H, W), the saved PNG


@pytest.fixture(scope="module")
def colour_runs(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """chelsea in Starry Night at 64 px, once per preserve_color mode (one batch)."""
    folder = tmp_path_factory.mktemp("colour")
    tasks = _tasks(folder, sweep={"preserve_color": list(MODES)})
    outcomes = worker.run_batch(tasks)
    runs = {
        t.params.preserve_color: Run(t, o, _output(t)) for t, o in zip(tasks, outcomes, strict=True)
    }
    assert [runs[m].outcome.status for m in MODES] == ["done"] * 3, outcomes
    return runs


@pytest.fixture(scope="module")
def chelsea_64() -> torch.Tensor:
    tensor = content_at(CHELSEA, 64)
    assert tensor.shape == (1, 3, 43, 64)
    return tensor


# --- preserve_color ---------------------------------------------------------------------------


@pytest.mark.slow
def test_colour_modes_write_outputs_of_the_content_size(colour_runs, chelsea_64) -> None:
    for mode in MODES:
        run = colour_runs[mode]
        assert run.output.shape == chelsea_64.shape, mode
        assert run.outcome.steps == STEPS
        assert math.isfinite(run.outcome.losses.total)
    outputs = [colour_runs[m].output for m in MODES]
    assert not torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])
    assert not torch.equal(outputs[1], outputs[2])


@pytest.mark.slow
def test_luminance_keeps_the_contents_chroma(colour_runs, chelsea_64) -> None:
    content = color.rgb_to_yiq(chelsea_64)
    diffs = {}
    for mode in ("none", "luminance"):
        yiq = color.rgb_to_yiq(colour_runs[mode].output)
        diffs[mode] = (yiq - content).abs().mean(dim=(0, 2, 3)).tolist()  # Y, I, Q
    y, i, q = diffs["luminance"]
    # The output is the content plus a grey offset per pixel: its I and Q are the content's
    # up to clipping at 0 and 1 (8-bit rounding moves all three channels alike).
    assert i < 1e-3 and q < 1e-3, diffs
    assert y > 0.01, diffs  # the style went into the luminance
    none_i, none_q = diffs["none"][1:]
    assert none_i > 0.01 and none_q > 0.01, diffs
    assert none_i > 10 * i and none_q > 10 * q, diffs


def test_luminance_targets_are_those_of_the_luminance_matched_grey_style(
    worker, chelsea_64, tmp_path: Path
) -> None:
    task = _only(tmp_path, params={"preserve_color": "luminance"})
    grey = color.match_luminance(style_at(STARRY, 64), chelsea_64)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    desired = style_targets(worker.model(task), grey, task.params)
    actual = _targets(worker, task)
    for layer in task.params.style_layers:
        torch.testing.assert_close(actual[layer], desired[layer], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_histogram_moves_the_output_colours_toward_the_contents(colour_runs, chelsea_64) -> None:
    none_mean, none_cov = _colour_distance(colour_runs["none"].output, chelsea_64)
    hist_mean, hist_cov = _colour_distance(colour_runs["histogram"].output, chelsea_64)
    assert hist_mean < 0.5 * none_mean, (hist_mean, none_mean)
    assert hist_cov < 0.5 * none_cov, (hist_cov, none_cov)
    moved = float((colour_runs["histogram"].output - chelsea_64).abs().mean())
    assert moved > 0.01  # the style's strokes did go in


def test_histogram_matched_style_has_the_contents_colour_statistics(chelsea_64) -> None:
    style = style_at(STARRY, 64)
    matched = color.match_colors(style, chelsea_64)
    assert matched.shape == style.shape  # the style's size, not the content's
    mean, cov = _colour_stats(matched)
    content_mean, content_cov = _colour_stats(chelsea_64)
    style_mean, _ = _colour_stats(style)
    assert float((style_mean - content_mean).abs().max()) > 0.05  # they did differ
    torch.testing.assert_close(mean, content_mean, rtol=0, atol=0.01)
    torch.testing.assert_close(cov, content_cov, rtol=0.1, atol=1e-3)


def test_histogram_targets_are_those_of_the_matched_style(
    worker, chelsea_64, tmp_path: Path
) -> None:
    task = _only(tmp_path / "histogram", params={"preserve_color": "histogram"})
    matched = color.match_colors(style_at(STARRY, 64), chelsea_64)
    desired = style_targets(worker.model(task), matched, task.params)
    actual = _targets(worker, task)
    for layer in task.params.style_layers:
        torch.testing.assert_close(actual[layer], desired[layer], rtol=1e-5, atol=1e-6)
    plain = _targets(worker, _only(tmp_path / "none"))
    assert _relative(actual, plain) > 0.05


# --- style blends ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_blend_of_one_image_is_that_image(worker, colour_runs, tmp_path: Path) -> None:
    plain = colour_runs["none"]
    blend = _only(tmp_path, style=[{"path": [str(STARRY)], "weights": [5], "name": "blend"}])
    assert blend.style.images == ((STARRY, 1.0),)
    assert blend.key == plain.task.key
    assert blend.target_group == plain.task.target_group  # one target computation for both

    alone = Worker("cpu", "alone")
    targets = _targets(alone, blend)
    desired = style_targets(alone.model(blend), style_at(STARRY, 64), blend.params)
    for layer in blend.params.style_layers:
        assert torch.equal(targets[layer], desired[layer]), layer

    (outcome,) = worker.run_batch([blend])
    assert outcome.status == "done", outcome.error
    assert blend.output.name == "chelsea__blend.png"
    assert torch.equal(_output(blend), plain.output)
    assert outcome.history == plain.outcome.history


def test_a_blend_mixes_the_gram_matrices_with_normalized_weights(worker, tmp_path: Path) -> None:
    a = _only(tmp_path / "a", style=[str(STARRY)])
    b = _only(tmp_path / "b", style=[str(SCREAM)])
    blend = _only(
        tmp_path / "blend", style=[{"path": [str(STARRY), str(SCREAM)], "weights": [3, 1]}]
    )
    assert blend.style.images == ((STARRY, 0.75), (SCREAM, 0.25))
    assert blend.style.name == "starry_night+the_scream"
    g_a, g_b, g = _targets(worker, a), _targets(worker, b), _targets(worker, blend)
    assert g.keys() == g_a.keys()
    for layer in g:
        torch.testing.assert_close(g[layer], 0.75 * g_a[layer] + 0.25 * g_b[layer])
        assert not torch.allclose(g[layer], g_a[layer], rtol=0.01)
        assert not torch.allclose(g[layer], g_b[layer], rtol=0.01)

    swapped = _only(
        tmp_path / "swap", style=[{"path": [str(STARRY), str(SCREAM)], "weights": [1, 3]}]
    )
    scaled = _only(tmp_path / "x2", style=[{"path": [str(STARRY), str(SCREAM)], "weights": [6, 2]}])
    assert swapped.key != blend.key
    assert swapped.target_group != blend.target_group
    assert scaled.key == blend.key  # only the proportions count
    assert len({a.key, b.key, blend.key}) == 3


# --- coarse-to-fine scales ------------------------------------------------------------------


@dataclass
class ScaleRuns:
    two: Run  # scales 2: 64 px for 4 steps, then 128 px for 6
    one: Run  # scales 1: 128 px for 6 steps
    progress: list[tuple[int, Progress]]  # what the scales-2 run reported, every step
    computations: tuple[int, int]  # target computations after the first run, the second


@pytest.fixture(scope="module")
def scale_runs(tmp_path_factory: pytest.TempPathFactory) -> ScaleRuns:
    own = Worker("cpu", "cpu#scales")
    folder = tmp_path_factory.mktemp("scales")
    params = {"size": 128, "steps": 6, "scale_steps": 4}
    two = _only(folder / "two", params={**params, "scales": 2})
    one = _only(folder / "one", params={**params, "scales": 1})
    progress: list[tuple[int, Progress]] = []
    (outcome_two,) = own.run_batch([two], lambda i, p: progress.append((i, p)), report_every=1)
    after_two = own.target_computations
    (outcome_one,) = own.run_batch([one])
    assert (outcome_two.status, outcome_one.status) == ("done", "done")
    return ScaleRuns(
        Run(two, outcome_two, _output(two)),
        Run(one, outcome_one, _output(one)),
        progress,
        (after_two, own.target_computations),
    )


@pytest.mark.slow
def test_scales_end_at_the_full_size(scale_runs) -> None:
    two, one = scale_runs.two, scale_runs.one
    assert two.task.params.scale_sizes == (64, 128)
    assert one.output.shape == (1, 3, 85, 128)
    assert two.output.shape == one.output.shape
    with Image.open(two.task.output) as image:
        assert image.size == (128, 85)
    assert not torch.equal(two.output, one.output)  # the coarse scale changed the start


@pytest.mark.slow
def test_scales_count_the_steps_of_every_scale(scale_runs) -> None:
    two, one = scale_runs.two, scale_runs.one
    assert two.task.params.total_steps == 4 + 6
    assert two.outcome.steps == 10
    assert len(two.outcome.history) == 10
    assert one.outcome.steps == one.task.params.total_steps == 6
    curve = json.loads(curve_path(two.task.output).read_text())
    assert curve["key"] == two.task.key
    assert len(curve["total_loss"]) == 10
    assert curve["total_loss"] == [float(f"{v:.5g}") for v in two.outcome.history]
    # The final losses are the best of the 128 px scale; the coarse scale's losses are
    # measured against its own 64 px targets and image, and do not count.
    assert all(math.isfinite(v) for v in two.outcome.history)
    assert two.outcome.losses.total == pytest.approx(min(two.outcome.history[4:]), rel=1e-5)


@pytest.mark.slow
def test_scales_compute_targets_once_per_scale_size(scale_runs) -> None:
    # 64 and 128 px for the scales-2 task; the scales-1 task reuses the 128 px targets.
    assert scale_runs.computations == (2, 2)


@pytest.mark.slow
def test_scales_progress_counts_up_to_the_total(scale_runs) -> None:
    progress = scale_runs.progress
    assert {i for i, _ in progress} == {0}
    assert [p.step for _, p in progress] == list(range(1, 11))
    assert {p.steps for _, p in progress} == {10}
    assert [p.losses.total for _, p in progress] == pytest.approx(
        scale_runs.two.outcome.history, rel=1e-6
    )


@pytest.mark.slow
def test_progress_reaches_its_total_when_a_thin_images_coarse_scale_is_dropped(
    worker, tmp_path: Path
) -> None:
    wide = tmp_path / "wide.png"
    with Image.open(CHELSEA) as image:
        image.crop((0, 80, 451, 210)).save(wide)  # 451x130: 128x37 at 128 px, 64x18 at 64
    task = _only(
        tmp_path,
        content=[str(wide)],
        params={"size": 128, "steps": 2, "scales": 2, "scale_steps": 2},
    )
    progress: list[Progress] = []
    (outcome,) = worker.run_batch([task], lambda _, p: progress.append(p), report_every=1)
    assert outcome.status == "done", outcome.error
    assert outcome.steps == 2  # the 64 px scale was skipped
    assert progress[-1].step == progress[-1].steps


# --- Adam iterate averaging -------------------------------------------------------------------


def test_adam_average_is_the_bias_corrected_average_of_the_iterates() -> None:
    """The averaged run's last point is sum_k (1-d) d^(n-k) x_k / (1 - d^n) over the n
    iterates after each step; every earlier point is the plain run's."""
    steps, decay = 6, 0.5
    start = torch.rand((1, 3, 5, 7), generator=torch.Generator().manual_seed(0))
    goal = torch.rand((1, 3, 5, 7), generator=torch.Generator().manual_seed(1))
    plain = _adam(start, Params(optimizer="adam", steps=steps, learning_rate=0.1, adam_average=0))
    averaged = _adam(
        start, Params(optimizer="adam", steps=steps, learning_rate=0.1, adam_average=decay)
    )
    # Each point is cloned: the coroutine yields a view of the tensor it updates in place.
    plain_points, averaged_points = [next(plain).point.clone()], [next(averaged).point.clone()]
    for _ in range(steps - 1):
        grad = (2 * (plain_points[-1] - goal)).reshape(-1)
        answer = Evaluation(math.nan, grad)  # Adam reads only the gradient
        plain_points.append(plain.send(answer).point.clone())
        averaged_points.append(averaged.send(answer).point.clone())
    for p, a in zip(plain_points[:-1], averaged_points[:-1], strict=True):
        assert torch.equal(p, a)
    iterates = plain_points[1:]  # after each of the steps - 1 updates
    n = len(iterates)
    desired = sum((1 - decay) * decay ** (n - 1 - k) * x for k, x in enumerate(iterates))
    desired = desired / (1 - decay**n)
    torch.testing.assert_close(averaged_points[-1], desired)
    assert not torch.allclose(averaged_points[-1], plain_points[-1])
    assert float(averaged_points[-1].min()) >= 0 and float(averaged_points[-1].max()) <= 1


@pytest.fixture(scope="module")
def adam_runs(worker, chelsea_64, tmp_path_factory: pytest.TempPathFactory) -> dict[float, Result]:
    """chelsea in Starry Night at 64 px, 6 Adam steps, with adam_average 0 and 0.9."""
    vgg = worker.model(_only(tmp_path_factory.mktemp("adam")))
    params = {"size": 64, "steps": 6, "optimizer": "adam", "learning_rate": 0.02}
    targets = style_targets(vgg, style_at(STARRY, 64), Params(**params))
    return {
        decay: stylize(vgg, chelsea_64, targets, Params(**params, adam_average=decay))
        for decay in (0, 0.9)
    }


@pytest.mark.slow
def test_adam_average_changes_only_the_last_evaluation(adam_runs, chelsea_64) -> None:
    off, on = adam_runs[0], adam_runs[0.9]
    assert len(off.history) == len(on.history) == 6
    assert on.history[:-1] == off.history[:-1]
    assert on.history[-1] != off.history[-1]
    assert math.isfinite(on.history[-1])
    assert math.isfinite(on.losses.total) and on.losses.total < on.initial_losses.total
    assert on.image.shape == chelsea_64.shape
    assert float(on.image.min()) >= 0 and float(on.image.max()) <= 1


@pytest.mark.slow
def test_adam_average_is_the_output(adam_runs) -> None:
    on = adam_runs[0.9]
    assert on.losses.total == pytest.approx(on.history[-1], rel=1e-6)
