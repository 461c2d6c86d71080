"""One optimization of Gatys et al.: an image whose VGG19 features match the content
and whose Gram matrices match the style.

Tensors in, tensors out: no files, no printing. Progress leaves through a callback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nst_batch.lbfgs import LBFGSConfig, minimize
from nst_batch.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from nst_batch.params import Params
from nst_batch.vgg import VGG19Features

StyleTargets = dict[str, torch.Tensor]  # style layer -> Gram matrix (1, C, C)


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms; total = content + style + tv."""

    content: float
    style: float
    tv: float
    total: float


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


class StylizeError(Exception):
    """The optimization failed (diverged, no progress); str() gives the reason and step."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class _Stop(Exception):
    """Raised inside the L-BFGS closure to end the run at the evaluation budget."""


def _layer_weights(params: Params) -> dict[str, float]:
    return dict(zip(params.style_layers, params.layer_weights, strict=True))


@torch.no_grad()
def style_targets(vgg: VGG19Features, style: torch.Tensor, params: Params) -> StyleTargets:
    """Gram matrices of a style image (1, 3, H, W) at the style layers: layer -> (1, C, C)."""
    features = vgg(style, params.style_layers)
    return {layer: gram_matrix(features[layer]) for layer in params.style_layers}


def _initial_image(
    content: torch.Tensor, params: Params, init_image: torch.Tensor | None
) -> torch.Tensor:
    if params.init == "content":
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
    """The weighted loss terms of an image, with the content and style targets fixed."""

    def __init__(
        self, vgg: VGG19Features, content: torch.Tensor, targets: StyleTargets, params: Params
    ) -> None:
        self.vgg, self.targets, self.params = vgg, targets, params
        self.layer_weights = _layer_weights(params)
        self.layers = sorted(
            set(params.content_layers) | {k for k, w in self.layer_weights.items() if w}
        )
        with torch.no_grad():
            features = vgg(content, params.content_layers)
        self.content_targets = {k: features[k].detach() for k in params.content_layers}

    def terms(self, image: torch.Tensor) -> torch.Tensor:
        """Weighted (content, style, tv) losses of image.clamp(0, 1) as one (3,) tensor."""
        p = self.params
        image = image.clamp(0, 1)  # the loss of the image that will be saved
        features = self.vgg(image, self.layers)
        zero = torch.zeros((), device=image.device)
        c = sum((content_loss(features[k], t) for k, t in self.content_targets.items()), zero)
        s = style_loss(features, self.targets, self.layer_weights)
        tv = total_variation_loss(image) if p.tv_weight else zero
        return torch.stack([p.content_weight * c, p.style_weight * s, p.tv_weight * tv])


def _losses(terms: torch.Tensor) -> Losses:
    c, s, tv = terms.tolist()
    return Losses(content=c, style=s, tv=tv, total=c + s + tv)


class _Tracker:
    """Evaluates the objective within the step budget and keeps the best image seen.

    Bookkeeping stays on the device (torch.where, no .item()) so that Adam's loop
    never waits for the device; L-BFGS reads every loss anyway.
    """

    def __init__(
        self,
        objective: _Objective,
        start: torch.Tensor,
        params: Params,
        callback: ProgressCallback | None,
        report_every: int,
    ) -> None:
        self.objective, self.params = objective, params
        self.callback, self.report_every = callback, report_every
        device = start.device
        self.best = start.detach().clone()
        self.best_total = torch.full((), float("inf"), device=device)
        self.best_terms = torch.zeros(3, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.history: list[torch.Tensor] = []
        self.initial: torch.Tensor | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Loss of `image` (a leaf requiring grad); fills image.grad. Raises _Stop when done."""
        step = len(self.history)
        if step >= self.params.steps:
            raise _Stop
        terms = self.objective.terms(image)
        total = terms.sum()
        total.backward()
        t, terms = total.detach(), terms.detach()
        finite = torch.isfinite(t)
        better = finite & (t < self.best_total)
        self.best = torch.where(better, image.detach(), self.best)
        self.best_total = torch.where(better, t, self.best_total)
        self.best_terms = torch.where(better, terms, self.best_terms)
        self.first_bad = torch.where(~finite & (self.first_bad < 0), step + 1, self.first_bad)
        self.history.append(t)
        if self.initial is None:
            self.initial = terms
        check = self.params.optimizer == "lbfgs" or len(self.history) % 50 == 0
        if check and int(self.first_bad) >= 0:
            raise _Stop
        done = step + 1
        if self.callback is not None and (
            done % self.report_every == 0 or done == self.params.steps
        ):
            self.callback(Progress(done, self.params.steps, _losses(terms)))
        return total


def stylize(
    vgg: VGG19Features,
    content: torch.Tensor,
    targets: StyleTargets,
    params: Params,
    *,
    init_image: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    report_every: int = 10,
) -> Result:
    """Optimize an image (1, 3, H, W) from `content` (1, 3, H, W, 0..1) toward `targets`.

    Returns the lowest-loss image seen, never a diverged one: a non-finite loss, or
    no image better than the start, raises StylizeError with the step.
    """
    objective = _Objective(vgg, content, targets, params)
    x = _initial_image(content, params, init_image)
    tracker = _Tracker(objective, x, params, callback, report_every)
    start = time.perf_counter()
    with contextlib.suppress(_Stop):
        if params.optimizer == "lbfgs":
            _run_lbfgs(x, tracker, params)
        else:
            _run_adam(x, tracker, params)
    seconds = time.perf_counter() - start

    bad_step = int(tracker.first_bad)
    if bad_step >= 0:
        raise StylizeError(
            f"diverged: the loss became non-finite at step {bad_step}; "
            "lower learning_rate or the loss weights",
            step=bad_step,
        )
    assert tracker.initial is not None
    result = Result(
        image=tracker.best.clamp(0, 1),  # the image the losses were computed on
        losses=_losses(tracker.best_terms),
        initial_losses=_losses(tracker.initial),
        steps=len(tracker.history),
        seconds=seconds,
        history=torch.stack(tracker.history).tolist(),
    )
    if not result.losses.total < result.initial_losses.total:
        raise StylizeError(
            "diverged: no step lowered the loss below its start "
            f"({result.initial_losses.total:.4g}) in {result.steps} steps; lower learning_rate",
            step=result.steps,
        )
    return result


def _run_lbfgs(x: torch.Tensor, tracker: _Tracker, params: Params) -> None:
    shape = x.shape

    def objective(flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        image = flat.view(shape).detach().requires_grad_(True)
        total = tracker(image)
        assert image.grad is not None
        return float(total.detach()), image.grad.reshape(-1)

    config = LBFGSConfig(lr=params.lr, line_search=params.line_search == "strong_wolfe")
    minimize(objective, x.reshape(-1).clone(), config)  # returns early only on convergence


def _run_adam(x: torch.Tensor, tracker: _Tracker, params: Params) -> None:
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=params.lr)
    for _ in range(params.steps):
        optimizer.zero_grad(set_to_none=True)
        tracker(x)
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)  # projected gradient: Adam's steps keep the pixel range valid
