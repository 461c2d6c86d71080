"""One optimization of Gatys et al.: an image whose VGG19 features match the content
and whose Gram matrices match the style.

Tensors in, tensors out: no files, no printing. Progress leaves through a callback.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch

from nst_batch import lbfgs, precision
from nst_batch.lbfgs import Evaluation, LBFGSConfig, Probe, Read, Search
from nst_batch.losses import (
    content_loss,
    gram_matrix,
    style_loss,
    temporal_loss,
    total_variation_loss,
)
from nst_batch.params import Params
from nst_batch.stopping import StopReason, StopRule
from nst_batch.vgg import Precision, VGG19Features, precision_scope

StyleTargets = dict[str, torch.Tensor]  # style layer -> Gram matrix (1, C, C)


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms; total = content + style + tv + temporal."""

    content: float
    style: float
    tv: float
    total: float
    temporal: float = 0.0  # sequence frames only: against the warped previous frame


@dataclass(frozen=True)
class Temporal:
    """A sequence frame's hold on its predecessor (Ruder et al. 2016): the previous stylized
    frame warped onto this one, (1, 3, H, W) 0..1, and the pixels its flow can be trusted
    for, (1, 1, H, W) 0/1, both at the job's size."""

    warped: torch.Tensor
    trusted: torch.Tensor


@dataclass(frozen=True)
class Progress:
    step: int  # loss evaluations done so far
    steps: int  # the budget
    losses: Losses


ProgressCallback = Callable[[Progress], None]


@dataclass
class Result:
    image: torch.Tensor  # (1, 3, H, W), 0..1
    losses: Losses  # at the returned image
    initial_losses: Losses  # at the starting image
    steps: int  # loss evaluations done
    seconds: float  # optimization time (targets excluded)
    history: list[float] = field(default_factory=list)  # total loss per evaluation
    stopped: StopReason | None = None  # why it stopped (see nst_batch/stopping.py)


class StylizeError(Exception):
    """The optimization failed (diverged, no progress); str() gives the reason and step."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def _layer_weights(params: Params) -> dict[str, float]:
    return dict(zip(params.style_layers, params.layer_weights, strict=True))


@torch.no_grad()
def style_targets(vgg: VGG19Features, style: torch.Tensor, params: Params) -> StyleTargets:
    """Gram matrices of a style image (1, 3, H, W) at the style layers: layer -> (1, C, C)."""
    with precision_scope(style.device, params.precision):
        features = vgg(style, params.style_layers)
    return {layer: gram_matrix(features[layer]) for layer in params.style_layers}


def _initial_image(
    content: torch.Tensor, params: Params, init_image: torch.Tensor | None
) -> torch.Tensor:
    if params.init == "content" or (params.init == "previous" and init_image is None):
        return content.detach().clone()
    if params.init == "noise":
        generator = torch.Generator().manual_seed(params.seed)
        return torch.rand(content.shape, generator=generator).to(content.device)
    if init_image is None:
        raise ValueError(f"init: {params.init} needs the init_image tensor")
    if init_image.shape != content.shape:
        init_image = torch.nn.functional.interpolate(
            init_image, size=content.shape[-2:], mode="bicubic", align_corners=False
        )
    return init_image.detach().clone().to(content.device).clamp(0, 1)


class _Objective:
    """The weighted loss terms of one task's image, with its content and style targets fixed."""

    def __init__(
        self,
        vgg: VGG19Features,
        content: torch.Tensor,
        targets: StyleTargets,
        params: Params,
        temporal: Temporal | None = None,
    ) -> None:
        self.targets, self.params, self.temporal = targets, params, temporal
        self.layer_weights = _layer_weights(params)
        self.layers = {*params.content_layers, *(k for k, w in self.layer_weights.items() if w)}
        with torch.no_grad(), precision_scope(content.device, params.precision):
            features = vgg(content, params.content_layers)
        self.content_targets = {k: features[k].detach() for k in params.content_layers}

    def terms(self, features: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Weighted (content, style, tv, temporal) losses as one (4,) tensor.

        `image` (1, 3, H, W) is already clamped to 0..1, the image that will be saved, and
        `features` are its own: one sample's slices of a batch.
        """
        p = self.params
        zero = torch.zeros((), device=image.device)
        c = sum((content_loss(features[k], t) for k, t in self.content_targets.items()), zero)
        s = style_loss(features, self.targets, self.layer_weights)
        tv = total_variation_loss(image) if p.tv_weight else zero
        held = self.temporal
        t = zero if held is None else temporal_loss(image, held.warped, held.trusted)
        return torch.stack(
            [p.content_weight * c, p.style_weight * s, p.tv_weight * tv, p.temporal_weight * t]
        )


def _losses(terms: torch.Tensor | Sequence[float]) -> Losses:
    c, s, tv, t = terms.tolist() if isinstance(terms, torch.Tensor) else terms
    return Losses(content=c, style=s, tv=tv, total=c + s + tv + t, temporal=t)


class _Tracker:
    """Counts one task's evaluations against its budget and keeps the best image seen.

    Bookkeeping stays on the device (torch.where, no .item()) so that Adam's loop
    never waits for the device; L-BFGS, which reads every loss anyway, passes the terms'
    host values too, and its checks use them.
    """

    def __init__(
        self,
        start: torch.Tensor,
        params: Params,
        callback: ProgressCallback | None,
        every: int,
        stop: StopRule,
    ) -> None:
        self.params, self.callback, self.every = params, callback, every
        self.stop = dataclasses.replace(stop, bests=[])  # its own: a job may run again
        self.stopped: StopReason | None = None  # why it stopped, once it has
        device = start.device
        self.best = start.detach().clone()
        self.best_total = torch.full((), float("inf"), device=device)
        self.best_terms = torch.zeros(4, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.history: list[torch.Tensor] = []
        self.initial: torch.Tensor | None = None

    def record(
        self, image: torch.Tensor, terms: torch.Tensor, host: Sequence[float] | None = None
    ) -> bool:
        """Note the loss terms (4,) of `image`, and their host values if read; True when
        the task must stop (budget, diverged)."""
        step = len(self.history)
        t = terms.sum()
        finite = torch.isfinite(t)
        p = self.params
        averaged = p.optimizer == "adam" and p.adam_average > 0 and step + 1 == p.steps
        # Adam's averaged iterate is the output by choice, even if an iterate scored lower.
        better = finite & ((t < self.best_total) | averaged)
        self.best = torch.where(better, image, self.best)
        self.best_total = torch.where(better, t, self.best_total)
        self.best_terms = torch.where(better, terms, self.best_terms)
        self.first_bad = torch.where(~finite & (self.first_bad < 0), step + 1, self.first_bad)
        self.history.append(t)
        if self.initial is None:
            self.initial = terms
        done = step + 1
        if self.callback is not None and (done % self.every == 0 or done == self.params.steps):
            self.callback(
                Progress(done, self.params.steps, _losses(terms if host is None else host))
            )
        if host is None:  # no host values (Adam): its budget, and the device every 50
            if done >= self.stop.steps:
                self.stopped = self.stop.spent()
                return True
            return done % 50 == 0 and int(self.first_bad) >= 0
        total = sum(host)
        if not math.isfinite(total):
            return True  # diverged: `result` says so
        self.stopped = self.stop.evaluated(total)
        return self.stopped is not None

    def state(self, seconds: float) -> JobState | None:
        """The job so far (None before its first evaluation): for checkpoints and snapshots."""
        if self.initial is None:
            return None
        return JobState(
            steps=len(self.history),
            image=self.best.clamp(0, 1),
            losses=_losses(self.best_terms),
            initial=_losses(self.initial),
            history=torch.stack(self.history).tolist(),
            seconds=seconds,
        )

    def result(self, seconds: float, resumed: bool = False) -> Result | StylizeError:
        bad_step = int(self.first_bad)
        if bad_step >= 0:
            return StylizeError(
                f"diverged: the loss became non-finite at step {bad_step}; "
                "lower learning_rate or the loss weights",
                step=bad_step,
            )
        assert self.initial is not None
        result = Result(
            image=self.best.clamp(0, 1),  # the image the losses were computed on
            losses=_losses(self.best_terms),
            initial_losses=_losses(self.initial),
            steps=len(self.history),
            seconds=seconds,
            history=torch.stack(self.history).tolist(),
            stopped=self.stopped,
        )
        # A resumed job starts from its checkpoint's best image: holding it is no failure.
        if not resumed and not result.losses.total < result.initial_losses.total:
            return StylizeError(
                "diverged: no step lowered the loss below its start "
                f"({result.initial_losses.total:.4g}) in {result.steps} steps; "
                "lower learning_rate",
                step=result.steps,
            )
        return result


@dataclass(frozen=True)
class Job:
    """One task's optimization: its content (1, 3, H, W, 0..1), targets and settings."""

    content: torch.Tensor
    targets: StyleTargets
    params: Params
    init_image: torch.Tensor | None = None
    callback: ProgressCallback | None = None
    resumed: bool = False  # starts from a checkpoint's image: no failure for holding it
    temporal: Temporal | None = None  # a sequence frame's temporal loss target
    # When it stops (its `steps` the budget, as `params.steps`, which progress counts to);
    # None: StopRule.of(params, "cold").
    stop: StopRule | None = None


@dataclass(frozen=True)
class JobState:
    """A job in flight: its best image so far and its bookkeeping (a checkpoint's content)."""

    steps: int  # evaluations done
    image: torch.Tensor  # (1, 3, H, W), 0..1, on the job's device
    losses: Losses  # at `image`
    initial: Losses  # at the start
    history: list[float]  # total loss per evaluation
    seconds: float  # optimization time so far


class BatchView:
    """What a `Watch` sees of a batch in flight: each job's step count, and its state on
    demand (which copies the history off the device: ask only when saving)."""

    def __init__(self, runs: Sequence[_Run]) -> None:
        self._runs = runs

    def __len__(self) -> int:
        return len(self._runs)

    def steps(self, index: int) -> int:
        return len(self._runs[index].tracker.history)

    def finished(self, index: int) -> bool:
        return self._runs[index].finished

    def state(self, index: int) -> JobState | None:
        run = self._runs[index]
        return run.tracker.state(run.seconds)


class Watch(Protocol):
    """Hears a batch between evaluations (checkpoints, snapshots, a stop flag)."""

    def evaluated(self, batch: BatchView) -> None:
        """After every evaluation of the batch; may raise to stop it (`stopped` follows)."""

    def stopped(self, batch: BatchView) -> None:
        """The batch is being left by an exception (a signal, a stop): save what it has."""


class _Run:
    """One job in flight: its objective, bookkeeping and optimizer coroutine."""

    def __init__(self, vgg: VGG19Features, job: Job, report_every: int) -> None:
        self.objective = _Objective(vgg, job.content, job.targets, job.params, job.temporal)
        x = _initial_image(job.content, job.params, job.init_image)
        stop = job.stop if job.stop is not None else StopRule.of(job.params, "cold")
        self.tracker = _Tracker(x, job.params, job.callback, report_every, stop)
        self.search = _searcher(x, job.params)
        self.request = next(self.search)
        self.reads = job.params.optimizer == "lbfgs"  # Adam needs nothing on the host
        self.seconds = 0.0
        self.finished = False
        self.resumed = job.resumed


def _searcher(x: torch.Tensor, params: Params) -> Search:
    if params.optimizer == "lbfgs":
        config = LBFGSConfig(lr=params.lr, line_search=params.line_search == "strong_wolfe")
        return lbfgs.search(x.reshape(-1).clone(), config)
    return _adam(x, params)


def _adam(x: torch.Tensor, params: Params) -> Search:
    """Adam as a coroutine like L-BFGS's; projected: every step is clamped to 0..1.

    With `adam_average`, the last evaluation is of the exponential moving average of the
    iterates (bias-corrected), which smooths away the noise of Adam's last steps.
    """
    x = x.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=params.lr)
    decay = params.adam_average
    average, weight = torch.zeros_like(x, requires_grad=False), 0.0
    for step in range(params.steps):
        if decay and weight and step == params.steps - 1:
            yield Probe(average / weight)
            break
        evaluation = yield from lbfgs.probe(x.detach())
        x.grad = evaluation.grad.view_as(x)
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)
            average.mul_(decay).add_(x, alpha=1 - decay)
        weight = weight * decay + (1 - decay)
    return x.detach()


class _LossScale:
    """Dynamic loss scaling for fp16: the loss is multiplied before backward and the
    gradient divided after, so that float16 gradients neither underflow (small losses)
    nor overflow (large ones); on an overflow the scale halves and the evaluation is
    repeated, uncounted. Off (factor 1) for the other precisions."""

    START = 2.0**10  # the Caffe weights' 0..255 inputs make large losses: start low
    FLOOR = 2.0**-24  # a gradient that overflows even here is a real divergence

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.factor = self.START if enabled else 1.0

    def check(self, grad: torch.Tensor) -> torch.Tensor | None:
        """What `overflowed` needs from the device (1 where the gradient is finite), to
        read with the losses; None when off."""
        return torch.isfinite(grad).all().reshape(1) if self.enabled else None

    def overflowed(self, total: float, grad_finite: bool) -> bool:
        """True when the gradient overflowed at this scale (a finite loss, a non-finite
        gradient) and a smaller scale is left to try."""
        if not self.enabled or self.factor <= self.FLOOR:
            return False
        if math.isfinite(total) and not grad_finite:
            self.factor /= 2
            return True
        return False


class _ClampToUnit(torch.autograd.Function):
    """x.clamp(0, 1) whose gradient passes at 0 and 1 as well as between them.

    torch's clamp passes none at the bounds themselves, so every channel value that starts
    at 0 or 255 (black, white, saturated colours; a warm start's clipped pixels) would never
    move. Here the gradient at a bound is the one-sided derivative from inside; beyond the
    bounds it is zero, as the saved image does not change there.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # In x's layout: a compiled VGG19 hands back channels-last gradients.
        return grad.contiguous() * ((x >= 0) & (x <= 1))


def clamp_to_unit(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> the image that will be saved, 0..1, with a gradient at the bounds."""
    return cast(torch.Tensor, _ClampToUnit.apply(x))


def _evaluate(
    vgg: VGG19Features,
    runs: Sequence[_Run],
    x: torch.Tensor,
    mode: Precision,
    layers: list[str],
    factor: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss terms (B, 4) of the points x (B, 3, H, W), and the gradient (B, 3, H, W) of
    their sum times `factor` (fp16's loss scale)."""
    x = x.detach().requires_grad_(True)
    image = clamp_to_unit(x)  # the loss of the image that will be saved
    with precision_scope(x.device, mode):
        features = vgg(image, layers)
    terms = torch.stack(
        [
            run.objective.terms({k: f[i : i + 1] for k, f in features.items()}, image[i : i + 1])
            for i, run in enumerate(runs)
        ]
    )
    (grad,) = torch.autograd.grad(terms.sum() * factor, x)
    return terms.detach(), grad


def _graphs_allowed(mode: str) -> bool:
    """Whether a CUDA evaluation may be a graph: not under fp16, whose loss scale changes
    between evaluations."""
    return mode != "fp16"


# Eager evaluations before a CUDA graph's capture: cuDNN autotuning, lazy allocations.
GRAPH_WARMUP = 2


class _Evaluator:
    """Evaluates batches of points: eagerly, or on CUDA as a CUDA graph.

    An eager evaluation launches several hundred small kernels, one by one from Python;
    below about 512 px that, not arithmetic, is most of a GPU step. With `graphs`, the
    first evaluation of a set of jobs captures the whole forward and backward pass as
    a CUDA graph, and every later one copies the points in and replays it: one launch.
    A new set of jobs (the batch shrank) is captured anew. The graph's outputs are
    overwritten by the next replay, so callers get copies.
    """

    def __init__(
        self, vgg: VGG19Features, mode: Precision, layers: list[str], graphs: bool
    ) -> None:
        self.vgg, self.mode, self.layers, self.graphs = vgg, mode, layers, graphs
        self.key: tuple[int, ...] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self, runs: Sequence[_Run], x: torch.Tensor, factor: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.graphs and x.is_cuda):
            return _evaluate(self.vgg, runs, x, self.mode, self.layers, factor)
        key = tuple(id(run) for run in runs)
        if key != self.key:
            self.graph = self.static = None  # frees the last graph's memory first
            self._capture(runs, x, factor)
            self.key = key
        assert self.graph is not None and self.static is not None
        inputs, terms, grad = self.static
        inputs.copy_(x)
        self.graph.replay()
        return terms.clone(), grad.clone()

    def _capture(self, runs: Sequence[_Run], x: torch.Tensor, factor: float) -> None:
        inputs = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                _evaluate(self.vgg, runs, inputs, self.mode, self.layers, factor)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            terms, grad = _evaluate(self.vgg, runs, inputs, self.mode, self.layers, factor)
        self.graph, self.static = graph, (inputs, terms, grad)


def stylize_batch(
    vgg: VGG19Features,
    jobs: Sequence[Job],
    report_every: int = 10,
    graphs: bool = True,
    watch: Watch | None = None,
) -> list[Result | StylizeError]:
    """Optimize several jobs together, one stacked VGG19 pass per evaluation.

    The jobs' contents must share one shape. Each job keeps its own optimizer state,
    line search and step budget; the VGG19 has no cross-sample layers, so each job's
    gradient is exactly that of its own loss, and results equal the unbatched ones
    (bit for bit on the CPU). A job that stops early leaves the batch smaller.

    `graphs`: on CUDA, replay each evaluation as a CUDA graph (see _Evaluator).
    `watch` hears the batch after every evaluation and when an exception (a signal)
    leaves it, with the jobs' best images so far (see Watch).
    """
    shapes = {job.content.shape for job in jobs}
    if len(shapes) != 1:
        raise ValueError(f"a batch needs contents of one shape, got {sorted(shapes)}")
    modes = {job.params.precision for job in jobs}
    if len(modes) != 1:
        raise ValueError(f"a batch needs one precision, got {sorted(modes)}")
    runs = [_Run(vgg, job, report_every) for job in jobs]
    shape, mode = jobs[0].content.shape, jobs[0].params.precision
    if mode == "auto":  # as a gallery's plan resolves it, for this device
        mode = precision.resolve([str(jobs[0].content.device)])
    layers = sorted(set().union(*(run.objective.layers for run in runs)))
    scale = _LossScale(mode == "fp16")
    evaluate = _Evaluator(vgg, mode, layers, graphs and _graphs_allowed(mode))
    view = BatchView(runs)
    try:
        _optimize(runs, shape, evaluate, scale, watch, view)
    except BaseException:
        if watch is not None:
            watch.stopped(view)
        raise
    finally:
        for run in runs:
            run.search.close()
    return [run.tracker.result(run.seconds, run.resumed) for run in runs]


def _optimize(
    runs: Sequence[_Run],
    shape: torch.Size,
    evaluate: _Evaluator,
    scale: _LossScale,
    watch: Watch | None,
    view: BatchView,
) -> None:
    """Evaluate and step every run until each has stopped (budget, convergence, divergence).

    Each round reads the device once for every run together (losses, the line searches'
    figures, fp16's overflow check), plus once more when some searches ask for their
    history's products (see lbfgs): never once per run.
    """
    active = _answer_reads(list(runs))
    while active:
        start = time.perf_counter()
        probes = [cast(Probe, run.request) for run in active]
        x = torch.cat([probe.point.view(shape) for probe in probes])
        terms, grad = evaluate(active, x, scale.factor)
        flat = grad.view(len(active), -1)
        if scale.factor != 1:
            flat = flat / scale.factor
        reading = [i for i, run in enumerate(active) if run.reads]
        figures = [lbfgs.summary(terms[i].sum(), flat[i], probes[i].along) for i in reading]
        overflow = scale.check(flat)
        checks = [] if overflow is None else [overflow]
        host = lbfgs.to_host([terms, *figures, *checks]) if figures or checks else [[]]
        if checks and scale.overflowed(sum(host[0]), bool(host[-1][0])):
            continue  # the same points again at a smaller scale; no step is counted
        answers = dict(zip(reading, host[1 : 1 + len(reading)], strict=True))
        still = []
        for i, run in enumerate(active):
            read = answers.get(i)
            losses = host[0][4 * i : 4 * i + 4] if read else None
            if run.tracker.record(x[i : i + 1], terms[i], losses):
                run.finished = True
                continue
            evaluation = Evaluation.of(read, flat[i]) if read else Evaluation(math.nan, flat[i])
            if _send(run, evaluation):
                still.append(run)
        share = (time.perf_counter() - start) / len(active)
        for run in active:
            run.seconds += share
        active = _answer_reads(still)
        if watch is not None:
            watch.evaluated(view)


def _send(run: _Run, answer: lbfgs.Answer) -> bool:
    """Give a run's search its answer and keep its next request; False once it converged."""
    try:
        run.request = run.search.send(answer)
    except StopIteration:  # L-BFGS found no step that lowers the loss
        run.finished = True
        run.tracker.stopped = "converged"
        return False
    return True


def _answer_reads(runs: list[_Run]) -> list[_Run]:
    """Answer the runs' Read requests, all of them in one transfer per round, until every
    run asks for an evaluation; the runs still going. (Adam's evaluations carry no host
    figures: its loop never waits for the device.)"""
    while reading := [run for run in runs if isinstance(run.request, Read)]:
        values = lbfgs.to_host([cast(Read, run.request).values for run in reading])
        done = {id(run) for run, v in zip(reading, values, strict=True) if not _send(run, v)}
        runs = [run for run in runs if id(run) not in done]
    return runs


def stylize(
    vgg: VGG19Features,
    content: torch.Tensor,
    targets: StyleTargets,
    params: Params,
    *,
    init_image: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    report_every: int = 10,
    graphs: bool = True,
) -> Result:
    """Optimize an image (1, 3, H, W) from `content` (1, 3, H, W, 0..1) toward `targets`.

    Returns the lowest-loss image seen, never a diverged one: a non-finite loss, or
    no image better than the start, raises StylizeError with the step.
    """
    job = Job(content, targets, params, init_image, callback)
    outcome = stylize_batch(vgg, [job], report_every, graphs)[0]
    if isinstance(outcome, StylizeError):
        raise outcome
    return outcome
