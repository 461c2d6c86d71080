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

from nst_batch.losses import content_loss, style_loss, total_variation_loss
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
    from nst_batch.losses import gram_matrix

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
        """Weighted (content, style, tv) losses as one (3,) tensor."""
        p = self.params
        features = self.vgg(image, self.layers)
        zero = torch.zeros((), device=image.device)
        c = sum((content_loss(features[k], t) for k, t in self.content_targets.items()), zero)
        s = style_loss(features, self.targets, self.layer_weights)
        tv = total_variation_loss(image) if p.tv_weight else zero
        return torch.stack([p.content_weight * c, p.style_weight * s, p.tv_weight * tv])


def _losses(terms: torch.Tensor) -> Losses:
    c, s, tv = terms.tolist()
    return Losses(content=c, style=s, tv=tv, total=c + s + tv)


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
    x = _initial_image(content, params, init_image).requires_grad_(True)
    best = x.detach().clone()
    best_total = torch.full((), float("inf"), device=x.device)
    best_terms = torch.zeros(3, device=x.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=x.device)  # no sync per step
    history: list[torch.Tensor] = []
    initial: list[torch.Tensor] = []

    def evaluate() -> torch.Tensor:
        nonlocal best, best_total, best_terms, first_bad
        step = len(history)
        if step >= params.steps:
            raise _Stop
        x.grad = None
        terms = objective.terms(x)
        total = terms.sum()
        total.backward()
        assert x.grad is not None
        x.grad = x.grad.contiguous()  # conv backward may return channels_last; L-BFGS views it flat
        t = total.detach()
        finite = torch.isfinite(t)
        better = finite & (t < best_total)
        best = torch.where(better, x.detach(), best)
        best_total = torch.where(better, t, best_total)
        best_terms = torch.where(better, terms.detach(), best_terms)
        first_bad = torch.where(~finite & (first_bad < 0), step + 1, first_bad)
        history.append(t)
        # L-BFGS reads every loss on the host anyway, so checking costs nothing there;
        # Adam checks every 50 steps to keep the device loop free of synchronization.
        if (params.optimizer == "lbfgs" or len(history) % 50 == 0) and int(first_bad) >= 0:
            raise _Stop
        if not initial:
            initial.append(terms.detach())
        done = step + 1
        if callback is not None and (done % report_every == 0 or done == params.steps):
            callback(Progress(done, params.steps, _losses(terms.detach())))
        return total

    start = time.perf_counter()
    if params.optimizer == "lbfgs":
        _run_lbfgs(x, evaluate, params)
    else:
        _run_adam(x, evaluate, params)
    seconds = time.perf_counter() - start

    bad_step = int(first_bad)
    if bad_step >= 0:
        raise StylizeError(
            f"diverged: the loss became non-finite at step {bad_step}; "
            "lower learning_rate or the loss weights",
            step=bad_step,
        )
    result = Result(
        image=best.clamp(0, 1),
        losses=_losses(best_terms),
        initial_losses=_losses(initial[0]),
        steps=len(history),
        seconds=seconds,
        history=torch.stack(history).tolist(),
    )
    if not result.losses.total < result.initial_losses.total:
        raise StylizeError(
            f"diverged: no step lowered the loss below its start "
            f"({result.initial_losses.total:.4g})"
            f"in {result.steps} steps; lower learning_rate",
            step=result.steps,
        )
    return result


def _run_lbfgs(x: torch.Tensor, evaluate: Callable[[], torch.Tensor], params: Params) -> None:
    optimizer = torch.optim.LBFGS(
        [x],
        lr=params.lr,
        max_iter=params.steps,
        max_eval=2 * params.steps,  # the closure enforces the budget exactly
        history_size=100,
        line_search_fn="strong_wolfe" if params.line_search == "strong_wolfe" else None,
    )
    with contextlib.suppress(_Stop):
        optimizer.step(evaluate)  # returns early only when L-BFGS has converged


def _run_adam(x: torch.Tensor, evaluate: Callable[[], torch.Tensor], params: Params) -> None:
    optimizer = torch.optim.Adam([x], lr=params.lr)
    with contextlib.suppress(_Stop):
        for _ in range(params.steps):
            evaluate()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0, 1)  # projected gradient: Adam's steps keep the pixel range valid
