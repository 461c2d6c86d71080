"""L-BFGS with a strong-Wolfe line search (Nocedal and Wright, algorithms 3.5, 3.6), its
direction from the compact representation (Byrd, Nocedal and Schnabel 1994).

Our own rather than torch.optim.LBFGS for three reasons:

- every reduction runs in a fixed order on the CPU (`fixed_sums`), so the iterates do
  not depend on how many threads share it. BLAS dot products split their sums by thread
  count, and L-BFGS amplifies the last-bit differences into a visibly different image;
- a direction costs one product of the history with three vectors and one combination
  of it, rather than the two-loop recursion's 2 x history dot products;
- it never reads the device by itself. A search is a coroutine that asks for what it
  needs on the host (`Probe`: the loss and a few figures of the gradient at a point;
  `Read`: the products for the next direction) and the caller answers the requests of
  every search of a batch with one transfer (`to_host`). A GPU is waited for once per
  evaluation and once per accepted step, for the whole batch, instead of a dozen times
  per step and task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

_BLOCK = 4096  # below ATen's parallel grain: each block is summed by one thread


def _in_fixed_order(t: torch.Tensor) -> bool:
    """Whether sums over `t` need our fixed order: on a CPU, where BLAS and ATen split
    them by thread count. A GPU's kernels sum in a fixed order anyway, and one cuBLAS or
    reduction call beats a loop of small ones there. (Tests make this False to run the
    GPU's branches on a CPU.)"""
    return t.device.type == "cpu"


def fixed_sums(rows: torch.Tensor) -> torch.Tensor:
    """Row sums (R,) float64, on the rows' device, of a (R, N) tensor, in an order that
    does not depend on the thread count."""
    if not _in_fixed_order(rows):  # one kernel
        return rows.sum(dim=1, dtype=torch.float64)
    n = rows.shape[1]
    head = n - n % _BLOCK
    # One thread per block, then sums of fewer values than ATen ever splits across threads.
    total = rows[:, :head].reshape(len(rows), -1, _BLOCK).sum(dim=2, dtype=torch.float64)
    total = total.sum(dim=1)
    if head < n:
        total = total + rows[:, head:].sum(dim=1, dtype=torch.float64)
    return total


_CHUNK = 16  # rows per product on the CPU: bounds the (rows, N) temporary


def matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """m @ v, float64 on m's device, for m (R, N), v (N,): one cuBLAS call on a GPU (where
    the order is fixed anyway), fixed-order row sums on the CPU."""
    if not _in_fixed_order(m):
        return torch.mv(m, v).double()
    if not len(m):
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([fixed_sums(chunk * v) for chunk in m.split(_CHUNK)])


def combine(matrices: Sequence[torch.Tensor], coefficients: np.ndarray) -> torch.Tensor:
    """sum_k coefficients[k] @ matrices[k], the (N,) sum of the matrices' rows (R, N)
    weighted by host coefficients (K, R): on a GPU one transfer and a product per
    matrix, on the CPU row by row, so that the order of the sum is fixed."""
    first = matrices[0]
    if not _in_fixed_order(first):
        weights = _to_device(torch.from_numpy(coefficients), first)
        total = torch.mv(first.t(), weights[0])
        for matrix, row in zip(matrices[1:], weights[1:], strict=True):
            total.addmv_(matrix.t(), row)
        return total
    total = torch.zeros(first.shape[1], dtype=first.dtype)
    for matrix, row_weights in zip(matrices, coefficients.tolist(), strict=True):
        for row, c in zip(matrix, row_weights, strict=True):
            total.add_(row, alpha=c)
    return total


def _to_device(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Host `values` on `like`'s device and in its dtype, without waiting for the device:
    a CUDA copy from pinned memory is queued, not awaited."""
    values = values.to(like.dtype)
    if like.device.type == "cuda":
        return values.pin_memory().to(like.device, non_blocking=True)
    return values.to(like.device)


def to_host(values: Sequence[torch.Tensor]) -> list[list[float]]:
    """The tensors' values as lists of floats, in one transfer from their device.

    The only place the optimization waits for a GPU: callers gather every value a step
    needs on the host into one call (see stylize._optimize).
    """
    flat = [v.detach().reshape(-1).to(torch.float64) for v in values]
    joined: list[float] = torch.cat(flat).tolist() if flat else []
    result, at = [], 0
    for v in flat:
        result.append(joined[at : at + v.numel()])
        at += v.numel()
    return result


@dataclass(frozen=True)
class Probe:
    """A search asks for the objective at `point` (N,), and for the slope there along
    `along` (N,), the line search's direction, if any."""

    point: torch.Tensor
    along: torch.Tensor | None = None


@dataclass(frozen=True)
class Read:
    """A search asks for device values on the host: answered with their floats."""

    values: torch.Tensor


@dataclass(frozen=True)
class Evaluation:
    """The answer to a Probe: the loss and gradient (N,) at its point, and the figures of
    them a search uses on the host (see `summary`)."""

    loss: float
    grad: torch.Tensor
    slope: float = 0.0  # grad . along
    grad_max: float = math.inf  # max |grad|
    grad_norm2: float = 0.0  # grad . grad
    along_max: float = 0.0  # max |along|

    @classmethod
    def of(cls, figures: Sequence[float], grad: torch.Tensor) -> Evaluation:
        """From the host values of `summary(loss, grad, along)`."""
        loss, slope, grad_max, grad_norm2, along_max = figures
        return cls(loss, grad, slope, grad_max, grad_norm2, along_max)


def summary(
    loss: float | torch.Tensor, grad: torch.Tensor, along: torch.Tensor | None
) -> torch.Tensor:
    """(5,) float64 on grad's device: loss, grad . along, max |grad|, grad . grad and
    max |along| (0 for no direction), for `to_host` and then `Evaluation.of`."""
    grad = grad.reshape(-1)
    line = torch.zeros_like(grad) if along is None else along
    sums = fixed_sums(torch.stack([grad * line, grad * grad]))
    loss = torch.as_tensor(loss, dtype=torch.float64, device=grad.device).reshape(1)
    maxima = torch.stack([grad.abs().max(), line.abs().max()]).double()
    return torch.cat([loss, sums[:1], maxima[:1], sums[1:], maxima[1:]])


Request = Probe | Read
Answer = Evaluation | list[float]
# The optimizer as a coroutine: yields requests, is sent their answers, returns the
# final point on convergence.
Search = Generator[Request, Answer, torch.Tensor]
_Line = Generator[Request, Answer, tuple[float, Evaluation]]
Objective = Callable[[torch.Tensor], tuple[float | torch.Tensor, torch.Tensor]]


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


def answer(request: Request, objective: Objective) -> Answer:
    """A request answered on its own (one transfer each): for a single search."""
    if isinstance(request, Read):
        return to_host([request.values])[0]
    loss, grad = objective(request.point)
    (figures,) = to_host([summary(loss, grad, request.along)])
    return Evaluation.of(figures, grad)


def minimize(objective: Objective, x: torch.Tensor, config: LBFGSConfig) -> torch.Tensor:
    """Minimize from x (N,), in place, until converged or the objective raises to stop.

    The objective itself enforces the evaluation budget (by raising); this function
    returns only on convergence.
    """
    steps = search(x, config)
    request = next(steps)
    while True:
        try:
            request = steps.send(answer(request, objective))
        except StopIteration as converged:
            return converged.value


def probe(
    point: torch.Tensor, along: torch.Tensor | None = None
) -> Generator[Request, Answer, Evaluation]:
    """Ask for the objective at `point` (see Probe): the Evaluation sent back."""
    evaluation = yield Probe(point, along)
    assert isinstance(evaluation, Evaluation)
    return evaluation


def _read(values: torch.Tensor) -> Generator[Request, Answer, list[float]]:
    host = yield Read(values)
    assert isinstance(host, list)
    return host


def search(x: torch.Tensor, config: LBFGSConfig) -> Search:
    """L-BFGS from x (N,), updated in place, as a coroutine of requests (see the module's
    docstring).

    The caller decides when and how requests are answered: one at a time (`minimize`) or
    together with other tasks' (stacked into one batch), each task keeping its own
    history and line search. It stops asking by closing the coroutine at its budget.
    """
    first = yield from probe(x)
    if first.grad_max <= config.tolerance_grad:
        return x
    loss, grad = first.loss, first.grad
    history = _History(x, config.history, first.grad_norm2)
    gamma = 1.0  # scale of the initial inverse Hessian
    if loss > 0:
        step = config.first_decrease * loss / first.grad_norm2 * config.lr
    else:  # a loss that may be negative: no scale to go by
        l1 = yield from _read(fixed_sums(grad.abs().view(1, -1)))
        step = min(1.0, 1.0 / l1[0]) * config.lr
    while True:
        d, gtd = history.direction(grad, gamma)
        if gtd > -config.tolerance_change:
            return x  # not a descent direction: converged as far as float32 allows
        if config.line_search:
            step, new = yield from _strong_wolfe(x, step, d, loss, grad, gtd, config)
        else:
            new = yield from probe(x + step * d, d)
        s = step * d
        x.add_(s)
        if (
            new.grad_max <= config.tolerance_grad
            or step * new.along_max <= config.tolerance_change
            or abs(new.loss - loss) < config.tolerance_change
        ):
            return x
        y = new.grad - grad
        products = yield from _read(history.products(s, y, new.grad))
        gamma = history.update(s, y, products) or gamma
        loss, grad = new.loss, new.grad
        step = config.lr


class _History:
    """The last `size` pairs (s, y) of steps and gradient changes, for the compact
    representation of the inverse Hessian (Byrd, Nocedal and Schnabel 1994, eq. 3.1):

        H = gamma I + [S  gamma Y] M [S  gamma Y]^T,
        M = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]

    with S, Y the pairs as columns (oldest first), R the upper triangle of S^T Y and D
    its diagonal. The pairs live in slots of two (capacity, N) buffers on the device, a
    ring once full. R, Y^T Y and the products S^T g, Y^T g with the current gradient
    live on the host as float64 numpy arrays, oldest pair first: a direction is a dozen
    operations on them, each a microsecond (a tensor's take several), paid per task and
    step while a GPU waits. Each step reads the history once (`products`, three vectors
    at a time) and combines it once (`direction`).

    On the CPU the buffers grow by doubling; on a GPU they are allocated whole at the
    first step, so that a batch's memory is known from its first evaluations.
    """

    def __init__(self, like: torch.Tensor, size: int, grad_norm2: float) -> None:
        self.size = size
        self.slots: list[int] = []  # each pair's slot, oldest first
        capacity = size if like.device.type == "cuda" else min(size, 8)
        self.s = like.new_zeros((capacity, like.numel()))
        self.y = like.new_zeros((capacity, like.numel()))
        self.r = np.zeros((size, size))  # [i, j] = s_i . y_j for i <= j, else 0
        self.yy = np.zeros((size, size))  # [i, j] = y_i . y_j
        self.sg = np.zeros(size)  # [i] = s_i . g, the gradient now
        self.yg = np.zeros(size)  # [i] = y_i . g
        self.gg = grad_norm2  # g . g

    def products(self, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """What `update` needs, as one float64 vector on the device: S^T y, S^T g, Y^T y,
        Y^T g (by slot), then s.y, s.g, y.y, y.g, g.g; for the new pair (s, y) and the
        gradient g there."""
        used = len(self.slots)  # slots 0 .. used - 1, filled in order
        history_s, history_y = self.s[:used], self.y[:used]
        if not _in_fixed_order(s):  # three matrix products; each buffer is read once
            columns = torch.stack([y, g], 1)
            by_s = torch.mm(history_s, columns).t()
            by_y = torch.mm(history_y, columns).t()
            # s.y, s.g, y.y, y.g, (g.y), g.g; sliced, as indexing with a list would copy
            # the index to the device and wait for it.
            pairs = torch.mm(torch.stack([s, y, g]), columns).flatten()
            tail = torch.cat([pairs[:4], pairs[5:]])
            return torch.cat([by_s.flatten(), by_y.flatten(), tail]).double()
        parts = [matvec(history, v) for history in (history_s, history_y) for v in (y, g)]
        tail = fixed_sums(torch.stack([s * y, s * g, y * y, y * g, g * g]))
        return torch.cat([*parts, tail])

    def update(self, s: torch.Tensor, y: torch.Tensor, products: Sequence[float]) -> float | None:
        """Take the host values of `products(s, y, g)`: keep the pair if its curvature
        is positive and return the new gamma (y.s / y.y), else None; the products with g
        are kept for the next direction."""
        m = len(self.slots)
        values = np.asarray(products)
        # By slot to oldest first: the slots are a ring starting at the oldest pair's.
        s_y, s_g, y_y, y_g = np.roll(values[: 4 * m].reshape(4, m), -self._oldest(), axis=1)
        ys, sg, yy, yg, self.gg = values[4 * m :].tolist()
        self.sg[:m], self.yg[:m] = s_g, y_g
        if ys <= 1e-10:
            return None
        if m == self.size:  # the oldest pair makes way: everything moves up one place
            slot = self.slots.pop(0)
            self.r[:-1, :-1], self.yy[:-1, :-1] = self.r[1:, 1:], self.yy[1:, 1:]
            self.sg[:-1], self.yg[:-1] = self.sg[1:], self.yg[1:]
            s_y, y_y = s_y[1:], y_y[1:]
            m -= 1
        else:
            slot = m
            if slot == len(self.s):
                self._grow()
        self.s[slot], self.y[slot] = s, y
        self.slots.append(slot)
        self.r[:m, m], self.r[m, :m], self.r[m, m] = s_y, 0.0, ys
        self.yy[:m, m], self.yy[m, :m], self.yy[m, m] = y_y, y_y, yy
        self.sg[m], self.yg[m] = sg, yg
        return ys / yy

    def _oldest(self) -> int:
        return self.slots[0] if self.slots else 0

    def _grow(self) -> None:
        capacity = min(2 * len(self.s), self.size)
        for name in ("s", "y"):
            old = getattr(self, name)
            new = old.new_zeros((capacity, old.shape[1]))
            new[: len(old)] = old
            setattr(self, name, new)

    def direction(self, grad: torch.Tensor, gamma: float) -> tuple[torch.Tensor, float]:
        """-H grad on the device, and grad . (-H grad) on the host, from the products
        with grad that the last `update` kept (no transfer)."""
        m = len(self.slots)
        if not m:
            return grad.neg().mul_(gamma), -gamma * self.gg
        r, yy, a, b = self.r[:m, :m], self.yy[:m, :m], self.sg[:m], self.yg[:m]
        v = _solve_triangular(r, a, upper=True)  # R^-1 a
        u = _solve_triangular(r.T, r.diagonal() * v + gamma * (yy @ v - b), upper=False)
        # -H g = -gamma g - S u + gamma Y v; u and v oldest first, the buffers by slot.
        by_slot = np.roll(np.stack([-u, gamma * v]), self._oldest(), axis=1)
        d = combine([self.s[:m], self.y[:m]], by_slot).sub_(grad, alpha=gamma)
        return d, -gamma * self.gg - float(a @ u) + gamma * float(b @ v)


def _solve_triangular(matrix: np.ndarray, vector: np.ndarray, upper: bool) -> np.ndarray:
    """matrix^-1 vector for a triangular matrix (numpy has no triangular solve; torch's,
    on the same memory)."""
    solution = torch.linalg.solve_triangular(
        torch.from_numpy(matrix), torch.from_numpy(vector)[:, None], upper=upper
    )
    return solution[:, 0].numpy()


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
) -> _Line:
    """A step along d meeting the strong Wolfe conditions, and the evaluation there."""
    prev = (0.0, Evaluation(loss, grad, slope=gtd))
    for i in range(config.max_line_search):
        current = yield from probe(x + step * d, d)
        if current.loss > loss + config.c1 * step * gtd or (i > 0 and current.loss >= prev[1].loss):
            return (yield from _zoom(x, d, loss, gtd, prev, (step, current), config, i + 1))
        if abs(current.slope) <= -config.c2 * gtd:
            return step, current
        if current.slope >= 0:
            return (yield from _zoom(x, d, loss, gtd, (step, current), prev, config, i + 1))
        # Still descending: extrapolate, at most to 10x the step.
        next_step = _cubic_min(
            prev[0], prev[1].loss, prev[1].slope, step, current.loss, current.slope,
            step + 0.01 * (step - prev[0]), 10 * step,
        )  # fmt: skip
        prev, step = (step, current), next_step
    return prev


def _zoom(
    x: torch.Tensor,
    d: torch.Tensor,
    loss: float,
    gtd: float,
    low: tuple[float, Evaluation],
    high: tuple[float, Evaluation],
    config: LBFGSConfig,
    used: int,
) -> _Line:
    """Shrink the bracket [low, high] (low has the lower loss) to a strong-Wolfe step."""
    d_max = max(low[1].along_max, high[1].along_max)  # one of them was evaluated along d
    for _ in range(config.max_line_search - used):
        a, b = sorted((low[0], high[0]))
        width = b - a
        if width * d_max < config.tolerance_change:
            break
        (at_low, low_eval), (at_high, high_eval) = low, high
        step = _cubic_min(
            at_low, low_eval.loss, low_eval.slope, at_high, high_eval.loss, high_eval.slope, a, b
        )
        if min(step - a, b - step) < 0.1 * width:
            step = (a + b) / 2  # interpolation stuck at an end: bisect
        current = yield from probe(x + step * d, d)
        if current.loss > loss + config.c1 * step * gtd or current.loss >= low_eval.loss:
            high = (step, current)
        else:
            if abs(current.slope) <= -config.c2 * gtd:
                return step, current
            if current.slope * (at_high - at_low) >= 0:
                high = low
            low = (step, current)
    return low
