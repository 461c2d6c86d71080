"""L-BFGS with a strong-Wolfe line search (Nocedal and Wright, algorithms 7.4, 3.5, 3.6).

Our own rather than torch.optim.LBFGS for one reason: every reduction here runs in
a fixed order (`dot`), so the iterates do not depend on how many threads share the
CPU. BLAS dot products split their sums by thread count, and L-BFGS amplifies the
last-bit differences into a visibly different image.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

# Objective: flat image (N,) -> (loss, gradient (N,)); the loss a float or a 0-d tensor.
Evaluation = tuple[float | torch.Tensor, torch.Tensor]
Objective = Callable[[torch.Tensor], Evaluation]
# The optimizer as a coroutine: yields each point to evaluate, is sent its Evaluation,
# returns the final point on convergence.
Search = Generator[torch.Tensor, Evaluation, torch.Tensor]
_Probe = Generator[torch.Tensor, Evaluation, tuple[float, float, torch.Tensor]]

_BLOCK = 4096  # below ATen's parallel grain: each block is summed by one thread


def fixed_sum(a: torch.Tensor) -> float:
    """sum(a) of a flat tensor, in an order that does not depend on the thread count."""
    head = a.numel() - a.numel() % _BLOCK
    # One thread per block, then a sum of fewer values than ATen ever splits across threads.
    total = a[:head].view(-1, _BLOCK).sum(dim=1, dtype=torch.float64).sum()
    if head < a.numel():
        total = total + a[head:].sum(dtype=torch.float64)
    return float(total)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum(a * b) of two flat tensors, in a fixed order (see fixed_sum)."""
    return fixed_sum(a * b)


@dataclass(frozen=True)
class LBFGSConfig:
    lr: float = 1.0
    history: int = 100
    line_search: bool = True
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_line_search: int = 25
    c1: float = 1e-4  # sufficient decrease
    c2: float = 0.9  # curvature


def minimize(objective: Objective, x: torch.Tensor, config: LBFGSConfig) -> torch.Tensor:
    """Minimize from x (N,), in place, until converged or the objective raises to stop.

    The objective itself enforces the evaluation budget (by raising); this function
    returns only on convergence.
    """
    steps = search(x, config)
    point = next(steps)
    while True:
        try:
            point = steps.send(objective(point))
        except StopIteration as converged:
            return converged.value


def _evaluate(
    point: torch.Tensor,
) -> Generator[torch.Tensor, Evaluation, tuple[float, torch.Tensor]]:
    loss, grad = yield point
    return float(loss), grad


def search(x: torch.Tensor, config: LBFGSConfig) -> Search:
    """L-BFGS from x (N,), updated in place, as a coroutine that asks for each evaluation.

    The caller decides when and how points are evaluated: one at a time (`minimize`) or
    stacked with other tasks' points into one batch, each task keeping its own history
    and line search. It stops asking by closing the coroutine at its budget.
    """
    loss, grad = yield from _evaluate(x)
    if float(grad.abs().max()) <= config.tolerance_grad:
        return x
    directions: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / y.s)
    gamma = 1.0  # scale of the initial inverse Hessian
    step = min(1.0, 1.0 / fixed_sum(grad.abs())) * config.lr
    while True:
        d = _direction(grad, directions, gamma)
        gtd = dot(grad, d)
        if gtd > -config.tolerance_change:
            return x  # not a descent direction: converged as far as float32 allows
        if config.line_search:
            step, new_loss, new_grad = yield from _strong_wolfe(x, step, d, loss, grad, gtd, config)
        else:
            new_loss, new_grad = yield from _evaluate(x + step * d)
        s = step * d
        x.add_(s)
        y = new_grad - grad
        ys = dot(y, s)
        if ys > 1e-10:
            directions.append((s, y, 1.0 / ys))
            if len(directions) > config.history:
                directions.pop(0)
            gamma = ys / dot(y, y)
        converged = (
            float(new_grad.abs().max()) <= config.tolerance_grad
            or float(s.abs().max()) <= config.tolerance_change
            or abs(new_loss - loss) < config.tolerance_change
        )
        loss, grad = new_loss, new_grad
        if converged:
            return x
        step = config.lr


def _direction(
    grad: torch.Tensor, directions: list[tuple[torch.Tensor, torch.Tensor, float]], gamma: float
) -> torch.Tensor:
    """-H grad by the two-loop recursion."""
    q = grad.neg()
    alphas = []
    for s, y, rho in reversed(directions):
        alpha = rho * dot(s, q)
        q.add_(y, alpha=-alpha)
        alphas.append(alpha)
    q.mul_(gamma)
    for (s, y, rho), alpha in zip(directions, reversed(alphas), strict=True):
        beta = rho * dot(y, q)
        q.add_(s, alpha=alpha - beta)
    return q


def _cubic_min(
    t1: float, f1: float, g1: float, t2: float, f2: float, g2: float, lo: float, hi: float
) -> float:
    """Minimizer of the cubic through (t1, f1, g1) and (t2, f2, g2), clipped to [lo, hi]."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    square = d1 * d1 - g1 * g2
    if square < 0:
        return (lo + hi) / 2
    d2 = square**0.5 * (1 if t2 > t1 else -1)
    t = t2 - (t2 - t1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    return min(max(t, lo), hi)


def _strong_wolfe(
    x: torch.Tensor,
    step: float,
    d: torch.Tensor,
    loss: float,
    grad: torch.Tensor,
    gtd: float,
    config: LBFGSConfig,
) -> _Probe:
    """A step along d meeting the strong Wolfe conditions: (step, loss, gradient) there."""
    prev = (0.0, loss, grad, gtd)
    for i in range(config.max_line_search):
        new_loss, new_grad = yield from _evaluate(x + step * d)
        new_gtd = dot(new_grad, d)
        current = (step, new_loss, new_grad, new_gtd)
        if new_loss > loss + config.c1 * step * gtd or (i > 0 and new_loss >= prev[1]):
            return (yield from _zoom(x, d, loss, gtd, prev, current, config, i + 1))
        if abs(new_gtd) <= -config.c2 * gtd:
            return step, new_loss, new_grad
        if new_gtd >= 0:
            return (yield from _zoom(x, d, loss, gtd, current, prev, config, i + 1))
        # Still descending: extrapolate, at most to 10x the step.
        next_step = _cubic_min(
            prev[0], prev[1], prev[3], step, new_loss, new_gtd,
            step + 0.01 * (step - prev[0]), 10 * step,
        )  # fmt: skip
        prev, step = current, next_step
    return prev[0], prev[1], prev[2]


def _zoom(
    x: torch.Tensor,
    d: torch.Tensor,
    loss: float,
    gtd: float,
    low: tuple[float, float, torch.Tensor, float],
    high: tuple[float, float, torch.Tensor, float],
    config: LBFGSConfig,
    used: int,
) -> _Probe:
    """Shrink the bracket [low, high] (low has the lower loss) to a strong-Wolfe step."""
    for _ in range(config.max_line_search - used):
        a, b = sorted((low[0], high[0]))
        width = b - a
        if width * float(d.abs().max()) < config.tolerance_change:
            break
        step = _cubic_min(low[0], low[1], low[3], high[0], high[1], high[3], a, b)
        if min(step - a, b - step) < 0.1 * width:
            step = (a + b) / 2  # interpolation stuck at an end: bisect
        new_loss, new_grad = yield from _evaluate(x + step * d)
        new_gtd = dot(new_grad, d)
        current = (step, new_loss, new_grad, new_gtd)
        if new_loss > loss + config.c1 * step * gtd or new_loss >= low[1]:
            high = current
        else:
            if abs(new_gtd) <= -config.c2 * gtd:
                return step, new_loss, new_grad
            if new_gtd * (high[0] - low[0]) >= 0:
                high = low
            low = current
    return low[0], low[1], low[2]
