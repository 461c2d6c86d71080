"""End-to-end tests of nst_batch.stylize: the real 'original' VGG19 on the sample images at 64 px.

One VGG19 is built per module; each run is a few to 30 loss evaluations on a 43x64 image.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import CONTENT, STYLE, content_at, style_like
from PIL import Image
from torch.overrides import TorchFunctionMode

from nst_batch import images, lbfgs, transfer
from nst_batch.losses import gram_matrix, style_loss
from nst_batch.params import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, PRESETS, Params
from nst_batch.stylize import (
    Job,
    Losses,
    Progress,
    Result,
    StylizeError,
    Temporal,
    _graphs_allowed,
    clamp_to_unit,
    style_targets,
    stylize,
    stylize_batch,
)
from nst_batch.vgg import build_vgg19

CHELSEA = CONTENT / "chelsea.png"  # 451x300 -> 64x43
COFFEE = CONTENT / "coffee.png"
STARRY = STYLE / "starry_night.jpg"

# Explicit weights, so that these tests do not move with the defaults.
WEIGHTS = {"content_weight": 1.0, "style_weight": 10.0}


def _params(**overrides: object) -> Params:
    return Params(**{"size": 64, **WEIGHTS, **overrides})


@pytest.fixture(scope="module")
def targets(net, style) -> dict[str, torch.Tensor]:
    return style_targets(net, style, _params())


@pytest.fixture(scope="module")
def content_start(net, content, targets) -> Losses:
    """The initial losses of a run from the content image (no TV)."""
    return stylize(net, content, targets, _params(steps=3)).initial_losses


@dataclass
class Run:
    params: Params
    result: Result
    progress: list[Progress]


@pytest.fixture(scope="module")
def lbfgs_run(net, content, targets) -> Run:
    """30 L-BFGS evaluations from the content image, with a small TV term and reports."""
    params = _params(steps=30, tv_weight=1e3)
    progress: list[Progress] = []
    result = stylize(net, content, targets, params, callback=progress.append, report_every=10)
    return Run(params, result, progress)


def _unweighted_style_distance(net, image, targets) -> float:
    """Mean squared Gram difference to the style, summed over the five style layers."""
    with torch.no_grad():
        features = net(image, GATYS_STYLE_LAYERS)
    return style_loss(features, targets, dict.fromkeys(GATYS_STYLE_LAYERS, 1.0)).item()


# ---------------------------------------------------------------------------------------------
# Targets


def test_style_targets_are_the_grams_of_the_style_image(net, style, targets) -> None:
    assert set(targets) == set(GATYS_STYLE_LAYERS)
    channels = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
    with torch.no_grad():
        features = net(style, GATYS_STYLE_LAYERS)
    for layer, gram in targets.items():
        assert gram.shape == (1, channels[layer], channels[layer])
        assert gram.dtype == torch.float32 and not gram.requires_grad
        assert torch.allclose(gram, gram_matrix(features[layer]), rtol=1e-5, atol=1e-6)
        assert torch.allclose(gram, gram.transpose(1, 2), rtol=1e-5, atol=1e-5)
        assert (torch.diagonal(gram, dim1=1, dim2=2) >= 0).all()


# ---------------------------------------------------------------------------------------------
# One L-BFGS run


@pytest.mark.slow
def test_lbfgs_lowers_the_total_loss(lbfgs_run) -> None:
    result = lbfgs_run.result
    assert result.steps == 30
    assert len(result.history) == 30
    assert all(math.isfinite(v) for v in result.history)
    assert result.initial_losses.content == 0.0  # starts at the content image
    assert result.initial_losses.style > 0
    assert result.losses.total < result.initial_losses.total
    assert result.losses.total < 0.5 * result.initial_losses.total  # not a token improvement
    assert result.history[0] == pytest.approx(result.initial_losses.total, rel=1e-5)
    running_min = list(itertools.accumulate(result.history, min))
    assert all(b <= a for a, b in itertools.pairwise(running_min))
    assert running_min[-1] < running_min[0]
    # Every evaluation is of the clamped (saveable) image: the reported losses are the best's.
    assert result.losses.total == pytest.approx(min(result.history), rel=1e-6)
    assert result.seconds > 0


@pytest.mark.slow
def test_output_is_a_valid_image_of_the_content_shape(lbfgs_run, content) -> None:
    image = lbfgs_run.result.image
    assert image.shape == content.shape == (1, 3, 43, 64)
    assert image.dtype == torch.float32
    assert not image.requires_grad
    assert image.min() >= 0 and image.max() <= 1
    assert torch.isfinite(image).all()


@pytest.mark.slow
def test_output_moves_from_the_content_toward_the_style(lbfgs_run, net, content, targets) -> None:
    image = lbfgs_run.result.image
    assert (image - content).abs().mean() > 0.03
    before = _unweighted_style_distance(net, content, targets)
    after = _unweighted_style_distance(net, image, targets)
    assert after < 0.5 * before
    # Still the same picture: much closer to the content than to an unrelated photo.
    other = torch.nn.functional.interpolate(content_at(COFFEE, 64), size=content.shape[-2:])
    assert (image - content).abs().mean() < (other - content).abs().mean()


@pytest.mark.slow
def test_progress_reports(lbfgs_run) -> None:
    result, progress = lbfgs_run.result, lbfgs_run.progress
    assert [p.step for p in progress] == [10, 20, 30]
    assert all(p.steps == 30 for p in progress)
    for p in progress:
        losses = p.losses
        assert all(math.isfinite(v) for v in (losses.content, losses.style, losses.tv))
        assert losses.total == pytest.approx(losses.content + losses.style + losses.tv, rel=1e-12)
        assert losses.content > 0 and losses.style > 0 and losses.tv > 0
        # The report at step n is the loss of evaluation n.
        assert losses.total == pytest.approx(result.history[p.step - 1], rel=1e-5)
    totals = [p.losses.total for p in progress]
    assert totals[-1] < totals[0]


@pytest.mark.slow
def test_losses_add_up(lbfgs_run) -> None:
    for losses in (lbfgs_run.result.losses, lbfgs_run.result.initial_losses):
        assert isinstance(losses, Losses)
        assert losses.total == pytest.approx(losses.content + losses.style + losses.tv, rel=1e-12)
    assert lbfgs_run.result.losses.tv > 0


@pytest.mark.slow
def test_reported_losses_are_those_of_the_returned_image(lbfgs_run, net, content, targets) -> None:
    from nst_batch.losses import content_loss, total_variation_loss

    result, p = lbfgs_run.result, lbfgs_run.params
    image = result.image
    with torch.no_grad():
        features = net(image, GATYS_STYLE_LAYERS + GATYS_CONTENT_LAYERS)
        content_target = net(content, GATYS_CONTENT_LAYERS)["relu4_2"]
        c = p.content_weight * content_loss(features["relu4_2"], content_target).item()
        s = p.style_weight * style_loss(features, targets, dict.fromkeys(GATYS_STYLE_LAYERS, 1.0))
        tv = p.tv_weight * total_variation_loss(image).item()
    assert c + s.item() + tv == pytest.approx(result.losses.total, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Other optimizers and starting images


@pytest.mark.slow
def test_adam_lowers_the_loss_and_reports_the_last_step(net, content, targets) -> None:
    progress: list[Progress] = []
    params = _params(steps=6, optimizer="adam")
    result = stylize(net, content, targets, params, callback=progress.append, report_every=4)
    assert result.steps == len(result.history) == 6
    assert result.losses.total < result.initial_losses.total
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert [p.step for p in progress] == [4, 6]  # and the final step, off the grid
    assert progress[-1].losses.total == pytest.approx(result.history[-1], rel=1e-5)


def test_noise_is_reproducible_from_the_seed(net, content, targets, content_start) -> None:
    def run(seed: int) -> Result:
        return stylize(net, content, targets, _params(steps=3, init="noise", seed=seed))

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first.image, again.image)
    assert first.history == again.history
    assert not torch.equal(first.image, other.image)
    assert (first.image - other.image).abs().mean() > 0.1  # independent noise
    # Noise is far from both the content and the style: it starts above the content image.
    assert first.initial_losses.content > 0 == content_start.content
    assert first.initial_losses.total > content_start.total
    assert other.initial_losses.total > content_start.total


def test_init_style_starts_close_to_the_style(net, content, style, targets, content_start):
    assert style.shape[-2:] != content.shape[-2:]  # resized to the content inside
    result = stylize(net, content, targets, _params(steps=3, init="style"), init_image=style)
    start = content_start
    assert result.image.shape == content.shape
    assert result.initial_losses.style < 0.3 * start.style
    assert result.initial_losses.content > 0
    assert result.losses.total < result.initial_losses.total


def test_init_style_needs_the_tensor(net, content, targets) -> None:
    with pytest.raises(ValueError, match="init: style needs the init_image tensor"):
        stylize(net, content, targets, _params(steps=2, init="style"))


def test_init_image_of_another_size(net, content, targets, content_start) -> None:
    other = content_at(COFFEE, 96)
    assert other.shape[-2:] != content.shape[-2:]
    params = _params(steps=3, init="image", init_image=str(COFFEE))
    result = stylize(net, content, targets, params, init_image=other)
    start = content_start
    assert result.image.shape == content.shape
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.initial_losses.content > 0 == start.content
    assert result.initial_losses.total != start.total
    assert result.losses.total < result.initial_losses.total


# ---------------------------------------------------------------------------------------------
# Failures are caught and reported


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adam", "learning_rate": 1e9, "steps": 3},
        {"optimizer": "lbfgs", "line_search": "none", "learning_rate": 1e6, "steps": 10},
    ],
    ids=["adam-lr1e9", "lbfgs-no-line-search-lr1e6"],
)
def test_forced_divergence_raises(net, content, targets, settings) -> None:
    params = _params(**settings)
    with pytest.raises(StylizeError) as info:
        stylize(net, content, targets, params)
    error = info.value
    assert "diverged" in str(error)
    assert isinstance(error.step, int)
    assert 1 <= error.step <= params.steps
    assert f"{error.step}" in str(error)
    assert "learning_rate" in str(error)


def test_adam_that_never_improves_names_the_start_and_steps(net, content, targets) -> None:
    with pytest.raises(StylizeError, match=r"no step lowered the loss below its start") as info:
        stylize(net, content, targets, _params(optimizer="adam", learning_rate=1e9, steps=2))
    assert info.value.step == 2
    assert re.search(r"start \(\d\.\d+e\+\d+\) in 2 steps; lower learning_rate", str(info.value))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_nan_in_the_content_is_caught_at_the_first_step(net, content, targets, optimizer) -> None:
    poisoned = content.clone()
    poisoned[0, 1, 20, 30] = float("nan")
    with pytest.raises(StylizeError, match=r"non-finite at step 1\b") as info:
        stylize(net, poisoned, targets, _params(steps=3, optimizer=optimizer))
    assert "diverged" in str(info.value)
    assert info.value.step == 1


def test_infinite_style_target_is_caught(net, content, targets) -> None:
    bad = dict(targets)
    bad["relu3_1"] = targets["relu3_1"].clone()
    bad["relu3_1"][0, 0, 0] = float("inf")
    with pytest.raises(StylizeError, match="non-finite at step 1") as info:
        stylize(net, content, bad, _params(steps=3))
    assert info.value.step == 1
    # A zero weight on that layer leaves it out: the same targets then work.
    weights = tuple(0.0 if name == "relu3_1" else 1.0 for name in GATYS_STYLE_LAYERS)
    result = stylize(net, content, bad, _params(steps=3, style_layer_weights=weights))
    assert math.isfinite(result.losses.total)


# ---------------------------------------------------------------------------------------------
# Presets and scale


def test_pytorch_tutorial_layers_run_on_conv_outputs(content) -> None:
    preset = Params(**PRESETS["pytorch-tutorial"])
    params = preset.model_copy(update={"size": 64, "steps": 4, "style_weight": 1.0})
    model = build_vgg19("original", (*params.content_layers, *params.style_layers))
    assert model.last == "conv3_1"
    style = style_like(STARRY, content)
    targets = style_targets(model, style, params)
    assert set(targets) == set(params.style_layers)
    # Pre-activation Grams: conv outputs are not clobbered by an in-place ReLU.
    with torch.no_grad():
        conv = model(style, ["conv1_1"])["conv1_1"]
    assert conv.min() < 0
    assert torch.allclose(targets["conv1_1"], gram_matrix(conv), rtol=1e-5, atol=1e-5)
    result = stylize(model, content, targets, params)
    assert result.losses.total < result.initial_losses.total


def test_losses_are_of_the_same_order_at_64_and_128_px(net, content, targets, content_start):
    # Grams are averages and losses are means: doubling the size must not scale the loss
    # by the 4x (pixels) or 16x (squared sums) an unnormalized loss would. The initial style
    # loss of a run from the content image, recomputed here, at 64 and at 128 px:
    def initial_style_loss(image: torch.Tensor, grams: dict[str, torch.Tensor]) -> float:
        return WEIGHTS["style_weight"] * _unweighted_style_distance(net, image, grams)

    at_64 = initial_style_loss(content, targets)
    assert at_64 == pytest.approx(content_start.style, rel=1e-4)  # what stylize reports
    content_128 = content_at(CHELSEA, 128)
    assert content_128.shape == (1, 3, 85, 128)
    style_128 = style_like(STARRY, content_128)
    params_128 = _params(size=128)
    at_128 = initial_style_loss(content_128, style_targets(net, style_128, params_128))
    assert 0.1 < at_128 / at_64 < 10
    assert at_128 != at_64


# 3 threads and more: MKL's AVX2 kernels split a deep layer's Gram backward over channels.
THREADS = (1, 2, 3, 4)


@pytest.mark.slow
@pytest.mark.parametrize(("size", "steps"), [(64, 12), (96, 6), (160, 8)])
def test_pixels_do_not_depend_on_the_thread_count(net, size: int, steps: int) -> None:
    # 160 px: 3 x 160 x 107 values, more than ATen sums on one thread; the Gram matrices of
    # relu1_1 and relu2_1 are long sums over positions at every size.
    content = content_at(CHELSEA, size)
    targets = style_targets(net, style_like(STARRY, content), _params(size=size))
    before = torch.get_num_threads()
    try:
        images_by_threads = {}
        for threads in THREADS:
            torch.set_num_threads(threads)
            result = stylize(net, content, targets, _params(size=size, steps=steps))
            images_by_threads[threads] = result.image
    finally:
        torch.set_num_threads(before)
    differ = [n for n in THREADS if not torch.equal(images_by_threads[n], images_by_threads[1])]
    assert differ == [], f"pixels differ from 1 thread's at {differ} threads"


BOUND_COLOURS = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 0, 255)]  # channels at 0 or 255


def bars(width: int, height: int) -> Image.Image:
    """The chelsea photo at width x height with four bars of black, white, pure red and pure
    blue across its middle half: every channel of a bar at 0 or 255."""
    photo = np.asarray(images.load_image(CHELSEA).resize((width, height))).copy()
    bar = width // len(BOUND_COLOURS)
    for i, colour in enumerate(BOUND_COLOURS):
        photo[height // 4 : 3 * height // 4, i * bar : (i + 1) * bar] = colour
    return Image.fromarray(photo)


def bar_changes(picture: Image.Image, out: Image.Image) -> list[float]:
    """The mean absolute change in levels inside each bar (a 2 px margin left out)."""
    before = np.asarray(picture).astype(int)
    after = np.asarray(out).astype(int)
    h, w = before.shape[:2]
    bar = w // len(BOUND_COLOURS)
    inside = slice(h // 4 + 2, 3 * h // 4 - 2)
    return [
        float(
            np.abs(
                after[inside, i * bar + 2 : (i + 1) * bar - 2]
                - before[inside, i * bar + 2 : (i + 1) * bar - 2]
            ).mean()
        )
        for i in range(len(BOUND_COLOURS))
    ]


@pytest.mark.parametrize(
    ("size", "steps", "optimizer"),
    [(64, 6, "lbfgs"), (96, 12, "lbfgs"), (64, 8, "adam")],
)
def test_black_white_and_saturated_pixels_are_stylized(size: int, steps: int, optimizer: str):
    """A channel at exactly 0 or 1 gets a gradient: no bar stays flat (it did: torch's clamp
    passes no gradient at its bounds)."""
    picture = bars(size, size * 2 // 3)
    extra = {"learning_rate": 0.02} if optimizer == "adam" else {}
    out = transfer(
        picture, STARRY, size=size, steps=steps, device="cpu", optimizer=optimizer, **extra
    )
    assert out.size == picture.size
    changes = bar_changes(picture, out)
    assert min(changes) > 2.0, changes


@pytest.mark.slow
def test_the_command_stylizes_black_white_and_saturated_areas(tmp_path) -> None:
    from click.testing import CliRunner

    from nst_batch.cli import main

    picture = bars(96, 64)
    picture.save(tmp_path / "bars.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"output: out\ncontent: [{tmp_path / 'bars.png'}]\nstyle: [{STARRY}]\n"
        "format: png\ndevices: cpu\nparams: {size: 96, steps: 10}\n"
    )
    result = CliRunner().invoke(main, [str(manifest)])
    assert result.exit_code == 0, result.output
    (out,) = (tmp_path / "out").glob("bars*.png")
    assert min(bar_changes(picture, Image.open(out).convert("RGB"))) > 2.0


def test_a_black_picture_is_stylized_not_failed() -> None:
    """A black frame (a fade-in) starts with every channel at 0: it must move, not diverge."""
    black = Image.new("RGB", (48, 32))
    out = transfer(black, STARRY, size=48, steps=6, device="cpu")
    assert np.asarray(out).astype(int).mean() > 5


def test_clamp_to_unit_passes_the_gradient_at_its_bounds() -> None:
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    image = clamp_to_unit(x)
    image.sum().backward()
    assert image.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.slow
def test_a_batch_equals_its_jobs_run_one_by_one(net, content, targets) -> None:
    """Each job keeps its own optimizer, line search, budget and weights inside a batch."""
    coffee = content_at(COFFEE, 64)
    assert coffee.shape == content.shape
    scream = style_targets(net, style_like(STYLE / "the_scream.jpg", coffee), _params())
    heard: list[list[int]] = [[], [], []]
    jobs = [
        Job(content, targets, _params(steps=12), callback=lambda p: heard[0].append(p.step)),
        Job(coffee, scream, _params(steps=7, style_weight=100.0)),
        Job(coffee, targets, _params(steps=9, optimizer="adam", init="noise", seed=3)),
    ]
    batched = stylize_batch(net, jobs, report_every=4)
    for job, outcome in zip(jobs, batched, strict=True):
        alone = stylize(net, job.content, job.targets, job.params)
        assert isinstance(outcome, Result)
        assert outcome.steps == job.params.steps
        assert torch.equal(outcome.image, alone.image)  # bit for bit on the CPU
        assert outcome.history == alone.history
        assert outcome.losses == alone.losses
    assert heard[0] == [4, 8, 12]
    assert sum(r.seconds for r in batched if isinstance(r, Result)) > 0


def test_a_diverging_job_fails_alone_in_its_batch(net, content, targets) -> None:
    bad = content.clone()
    bad[..., 0, 0] = float("nan")
    jobs = [Job(content, targets, _params(steps=6)), Job(bad, targets, _params(steps=6))]
    good, failed = stylize_batch(net, jobs)
    assert isinstance(good, Result) and good.steps == 6
    assert good.losses.total < good.initial_losses.total
    assert isinstance(failed, StylizeError) and failed.step == 1


def test_a_batch_needs_one_shape(net, content, targets) -> None:
    other = content_at(CHELSEA, 48)
    with pytest.raises(ValueError, match="one shape"):
        stylize_batch(net, [Job(content, targets, _params()), Job(other, targets, _params())])


def test_cuda_graphs_are_off_for_fp16() -> None:
    assert _graphs_allowed("fp32") and _graphs_allowed("bf16")
    assert not _graphs_allowed("fp16")  # its loss scale changes between evaluations


@pytest.mark.slow
def test_the_temporal_term_holds_trusted_pixels_to_the_warped_frame(net, content, targets) -> None:
    # The "previous frame": the content's mirror image, trusted on the left half only.
    warped = content.flip(-1)
    trusted = torch.zeros(1, 1, *content.shape[-2:])
    trusted[..., : content.shape[-1] // 2] = 1
    held = Temporal(warped, trusted)
    free = stylize_batch(net, [Job(content, targets, _params(steps=20))])[0]
    job = Job(content, targets, _params(steps=20, temporal_weight=1e10), temporal=held)
    bound = stylize_batch(net, [job])[0]
    assert isinstance(free, Result) and isinstance(bound, Result)
    assert free.losses.temporal == 0.0
    assert bound.losses.temporal > 0.0
    total = bound.losses.content + bound.losses.style + bound.losses.tv + bound.losses.temporal
    assert bound.losses.total == pytest.approx(total)

    def gap(image: torch.Tensor, mask: torch.Tensor) -> float:
        return float(((image - warped).abs().mean(1, keepdim=True) * mask).sum() / mask.sum())

    left, right = trusted, 1 - trusted
    assert gap(bound.image, left) < gap(free.image, left) / 2  # trusted pixels are held
    assert gap(bound.image, right) > 0.5 * gap(free.image, right)  # the others are free


# ---------------------------------------------------------------------------------------------
# Host reads: how often an evaluation waits for the device


class _HostReads(TorchFunctionMode):
    """Counts, per batch round, the transfers `lbfgs.to_host` makes and every other read of
    the device's data on the host (a float32 or bool tensor's value: `.item()`, `float()`,
    `bool()`, `.tolist()` ...), each of which waits for a GPU. On the CPU nothing waits,
    but the code takes the same path, so the counts are a CUDA run's."""

    READS = frozenset({"__float__", "__int__", "__bool__", "__index__", "item", "tolist", "numpy"})
    DEVICE_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16, torch.bool})

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.transfers = self.stray = 0
        self.rounds: list[tuple[int, int]] = []  # (transfers, stray reads) in each round
        transfer = lbfgs.to_host

        def counted(values: list[torch.Tensor]) -> list[list[float]]:
            self.transfers += 1
            return transfer(values)

        monkeypatch.setattr(lbfgs, "to_host", counted)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in self.READS and args and isinstance(args[0], torch.Tensor):
            self.stray += args[0].dtype in self.DEVICE_DTYPES
        return func(*args, **(kwargs or {}))

    # As the batch's Watch: a round ends at each `evaluated`.
    def evaluated(self, batch: object) -> None:
        self.rounds.append((self.transfers, self.stray))
        self.transfers = self.stray = 0

    def stopped(self, batch: object) -> None: ...


@pytest.mark.parametrize("size", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_a_round_reads_the_device_at_most_twice_whatever_the_batch_size(
    net, content, targets, monkeypatch, size: int
) -> None:
    # One read for every job's losses and line-search figures, one more when some jobs
    # took a step and ask for their history's products; never one per job.
    jobs = [
        Job(content, targets, _params(steps=15, style_weight=10.0 * (i + 1))) for i in range(size)
    ]
    reads = _HostReads(monkeypatch)
    with reads:
        outcomes = stylize_batch(net, jobs, watch=reads)
    assert all(isinstance(o, Result) and o.steps == 15 for o in outcomes)
    assert len(reads.rounds) == 15
    assert all(stray == 0 for _, stray in reads.rounds), reads.rounds
    assert all(1 <= transfers <= 2 for transfers, _ in reads.rounds), reads.rounds
    # Most rounds are a whole L-BFGS step (an accepted first trial): two reads.
    assert sum(t for t, _ in reads.rounds) >= 15 + 10


def test_adam_never_reads_the_device_between_evaluations(
    net, content, targets, monkeypatch
) -> None:
    job = Job(content, targets, _params(steps=12, optimizer="adam"))
    reads = _HostReads(monkeypatch)
    with reads:
        (outcome,) = stylize_batch(net, [job], watch=reads)
    assert isinstance(outcome, Result) and outcome.steps == 12
    # No transfer; the one read per step is torch.optim.Adam's of its step count, a
    # tensor it keeps on the host even for a GPU's parameters (none for the last
    # evaluation, of the averaged iterate).
    assert reads.rounds == [(0, 1)] * 11 + [(0, 0)]


@pytest.mark.slow
def test_the_gpu_branches_of_lbfgs_optimize_as_the_cpu_ones(
    net, content, targets, monkeypatch
) -> None:
    # The search's single-call sums (a GPU's), run on the CPU: the same path to float32
    # rounding, so the same losses to a fraction of a percent after 15 steps.
    params = _params(steps=15)
    fixed = stylize(net, content, targets, params)
    monkeypatch.setattr(lbfgs, "_in_fixed_order", lambda t: False)
    gpu = stylize(net, content, targets, params)
    assert gpu.steps == fixed.steps == 15
    assert gpu.history[:3] == pytest.approx(fixed.history[:3], rel=1e-5)
    assert gpu.losses.total == pytest.approx(fixed.losses.total, rel=0.01)
    assert gpu.losses.total < 0.5 * gpu.initial_losses.total
