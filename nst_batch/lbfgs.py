"""L-BFGS with a strong-Wolfe line search (Nocedal and Wright, algorithms 3.5, 3.6), its
direction from the compact representation (Byrd, Nocedal and Schnabel 1994).

Our own rather than torch.optim.LBFGS for two reasons:

- every reduction runs in a fixed order on the CPU (`fixed_sums`), so the iterates do
  not depend on how many threads share it. BLAS dot products split their sums by thread
  count, and L-BFGS amplifies the last-bit differences into a visibly different image;
- a direction costs a handful of matrix-vector products over the whole history rather
  than the two-loop recursion's 2 x history dot products, each of which waits for a GPU
  (200 round trips a step with the default history of 100).
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


def fixed_sums(rows: torch.Tensor) -> torch.Tensor:
    """Row sums (float64) of a (R, N) tensor, in an order that does not depend on the
    thread count."""
    if rows.device.type != "cpu":  # one kernel; a GPU's reduction order is fixed anyway
        return rows.sum(dim=1, dtype=torch.float64).cpu()
    n = rows.shape[1]
    head = n - n % _BLOCK
    # One thread per block, then sums of fewer values than ATen ever splits across threads.
    total = rows[:, :head].reshape(len(rows), -1, _BLOCK).sum(dim=2, dtype=torch.float64)
    total = total.sum(dim=1)
    if head < n:
        total = total + rows[:, head:].sum(dim=1, dtype=torch.float64)
    return total


def fixed_sum(a: torch.Tensor) -> float:
    """sum(a) of a flat tensor, in an order that does not depend on the thread count."""
    return float(fixed_sums(a.view(1, -1))[0])


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum(a * b) of two flat tensors, in a fixed order (see fixed_sums)."""
    return fixed_sum(a * b)


_CHUNK = 16  # rows per product on the CPU: bounds the (rows, N) temporary


def matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """m @ v (float64 on the CPU) for m (R, N), v (N,): one cuBLAS call on a GPU (where
    the order is fixed anyway), fixed-order row sums on the CPU."""
    if m.device.type != "cpu":
        return torch.mv(m, v).double().cpu()
    if not len(m):
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([fixed_sums(chunk * v) for chunk in m.split(_CHUNK)])


def combine(m: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """coefficients @ m, the (N,) sum of m's rows (R, N) weighted by R coefficients; on
    the CPU row by row, so the order of the sum is fixed."""
    coefficients = coefficients.to(device=m.device, dtype=m.dtype)
    if m.device.type != "cpu":
        return torch.mv(m.t(), coefficients)
    total = torch.zeros(m.shape[1], dtype=m.dtype)
    for row, c in zip(m, coefficients, strict=True):
        total.add_(row, alpha=float(c))
    return total


@dataclass(frozen=True)
class LBFGSConfig:
    lr: float = 1.0
    history: int = 100
    line_search: bool = True
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_line_search: int = 25
    # The first step along -gradient is the one whose linear model lowers a positive
    # loss by this fraction of itself (a Polyak-type step: it scales with the loss and
    # its gradient, not with the pixel count). torch's 1/|g|_1 shrinks with the pixel
    # count; at 1024 px in bf16 its change to the loss was below bf16's rounding, and
    # the line search gave up at the start.
    first_decrease: float = 0.5
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
    history = _History(x, config.history)
    gamma = 1.0  # scale of the initial inverse Hessian
    if loss > 0:
        step = config.first_decrease * loss / dot(grad, grad) * config.lr
    else:  # a loss that may be negative: no scale to go by
        step = min(1.0, 1.0 / fixed_sum(grad.abs())) * config.lr
    while True:
        d = history.direction(grad, gamma)
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
            history.append(s, y)
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


class _History:
    """The last `size` pairs (s, y) of steps and gradient changes, for the compact
    representation of the inverse Hessian (Byrd, Nocedal and Schnabel 1994, eq. 3.1):

        H = gamma I + [S  gamma Y] M [S  gamma Y]^T,
        M = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]

    with S, Y the pairs as columns (oldest first), R the upper triangle of S^T Y and D
    its diagonal. The pairs live in slots of two (capacity, N) buffers that grow by
    doubling; the small matrices S^T Y and Y^T Y (float64, on the CPU, indexed by
    slot) gain a row and column per pair, so a direction costs two products with the
    history's vectors and two with their transposes.
    """

    def __init__(self, like: torch.Tensor, size: int) -> None:
        self.size = size
        self.order: list[int] = []  # slots, oldest pair first
        capacity = min(size, 8)
        self.s = like.new_empty((capacity, like.numel()))
        self.y = like.new_empty((capacity, like.numel()))
        self.sy = torch.zeros((size, size), dtype=torch.float64)  # [i, j] = s_i . y_j
        self.yy = torch.zeros((size, size), dtype=torch.float64)  # [i, j] = y_i . y_j

    def append(self, s: torch.Tensor, y: torch.Tensor) -> None:
        if len(self.order) == self.size:
            slot = self.order.pop(0)  # the oldest pair's
        else:
            slot = len(self.order)
            if slot == len(self.s):
                self._grow()
        self.s[slot], self.y[slot] = s, y
        self.order.append(slot)
        used = max(self.order) + 1
        self.sy[:used, slot] = matvec(self.s[:used], y)
        self.sy[slot, :used] = matvec(self.y[:used], s)
        self.yy[:used, slot] = self.yy[slot, :used] = matvec(self.y[:used], y)

    def _grow(self) -> None:
        capacity = min(2 * len(self.s), self.size)
        for name in ("s", "y"):
            old = getattr(self, name)
            new = old.new_empty((capacity, old.shape[1]))
            new[: len(old)] = old
            setattr(self, name, new)

    def direction(self, grad: torch.Tensor, gamma: float) -> torch.Tensor:
        """-H grad."""
        d = grad.neg().mul_(gamma)
        if not self.order:
            return d
        used = max(self.order) + 1
        index = torch.tensor(self.order)
        s, y = self.s[:used], self.y[:used]
        a = matvec(s, grad)[index]  # S^T g, oldest first
        b = matvec(y, grad)[index]  # Y^T g
        sy = self.sy[index][:, index]
        r = sy.triu()
        v = torch.linalg.solve_triangular(r, a[:, None], upper=True)[:, 0]  # R^-1 a
        inner = sy.diagonal() * v + gamma * (self.yy[index][:, index] @ v) - gamma * b
        u = torch.linalg.solve_triangular(r.T, inner[:, None], upper=False)[:, 0]
        # H g = gamma g + S u - gamma Y v, by slot.
        by_slot_u = torch.zeros(used, dtype=torch.float64)
        by_slot_v = torch.zeros(used, dtype=torch.float64)
        by_slot_u[index], by_slot_v[index] = u, v
        return d.sub_(combine(s, by_slot_u)).add_(combine(y, by_slot_v), alpha=gamma)


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
