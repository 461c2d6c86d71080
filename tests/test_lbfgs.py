"""The L-BFGS minimizer: exact dot products, the compact direction, convergence,
thread-count independence."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from nst_batch import lbfgs
from nst_batch.lbfgs import (
    LBFGSConfig,
    _History,
    combine,
    fixed_sums,
    matvec,
    minimize,
    to_host,
)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def rosenbrock(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    a, b = x[:-1], x[1:]
    loss = (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum()
    loss.backward()
    assert x.grad is not None
    return float(loss.detach()), x.grad


@pytest.mark.parametrize("n", [1, 4095, 4096, 8256, 200_001])
def test_a_fixed_order_sum_of_products_matches_float64_reference(n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, generator=generator), torch.randn(n, generator=generator)
    desired = float((a.double() * b.double()).sum())
    assert float(fixed_sums((a * b).view(1, -1))[0]) == pytest.approx(desired, rel=1e-6, abs=1e-6)


def test_a_fixed_order_sum_of_products_does_not_depend_on_thread_count(threads: None) -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(3 * 512 * 512, generator=generator),
        torch.randn(3 * 512 * 512, generator=generator),
    )
    results = set()
    for count in (1, 2, 1):
        torch.set_num_threads(count)
        results.add(float(fixed_sums((a * b).view(1, -1))[0]))
    assert len(results) == 1


def two_loop(grad: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], gamma: float):
    """-H grad by the two-loop recursion (Nocedal and Wright, algorithm 7.4), in float64."""
    q = grad.double().neg()
    alphas = []
    for s, y in reversed(pairs):
        alpha = float(s.double() @ q) / float(y.double() @ s.double())
        q -= alpha * y.double()
        alphas.append(alpha)
    q *= gamma
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = float(y.double() @ q) / float(y.double() @ s.double())
        q += (alpha - beta) * s.double()
    return q


@pytest.mark.parametrize(("size", "pairs"), [(5, 0), (5, 1), (5, 3), (3, 7), (8, 20)])
def test_compact_direction_equals_the_two_loop_recursion(size: int, pairs: int) -> None:
    # Pairs from a convex quadratic (y = A s, so y.s > 0), more of them than the history
    # holds in some cases: the oldest are dropped and their slots reused.
    generator = torch.Generator().manual_seed(size * 100 + pairs)
    n = 9000
    a = torch.rand(n, generator=generator) * 10 + 0.1
    grad, gamma = torch.randn(n, generator=generator), 0.37
    history, kept = _History(torch.zeros(n), size, float(grad @ grad)), []
    for _ in range(pairs):
        s = torch.randn(n, generator=generator)
        # What the search does after a step: one read of the products, then the update.
        (products,) = to_host([history.products(s, a * s, grad)])
        assert history.update(s, a * s, products) == pytest.approx(
            float(s @ (a * s)) / float((a * s) @ (a * s)), rel=1e-6
        )
        kept = [*kept, (s, a * s)][-size:]
    desired = two_loop(grad, kept, gamma)
    actual, slope = history.direction(grad, gamma)
    assert actual.dtype == torch.float32 and actual.shape == (n,)
    assert torch.allclose(
        actual.double(), desired, rtol=1e-4, atol=1e-4 * float(desired.abs().max())
    )
    # The slope along it, from the products alone, is grad . direction.
    assert slope == pytest.approx(float(grad.double() @ desired), rel=1e-5)


def test_a_pair_without_positive_curvature_is_not_kept() -> None:
    n = 5000
    s, g = torch.ones(n), torch.randn(n, generator=torch.Generator().manual_seed(3))
    history = _History(torch.zeros(n), 5, float(g @ g))
    (products,) = to_host([history.products(s, -s, g)])
    assert history.update(s, -s, products) is None and history.slots == []
    direction, slope = history.direction(g, 2.0)
    assert torch.equal(direction, -2.0 * g)
    assert slope == pytest.approx(-2.0 * float(g.double() @ g.double()), rel=1e-6)


def test_matvec_and_combine_do_not_depend_on_thread_count(threads: None) -> None:
    generator = torch.Generator().manual_seed(1)
    m = torch.randn(20, 3 * 160 * 160 + 7, generator=generator)
    v = torch.randn(m.shape[1], generator=generator)
    c = torch.randn(20, dtype=torch.float64, generator=generator)
    results = []
    for count in (1, 2, 1):
        torch.set_num_threads(count)
        weights = np.stack([c[:10].numpy(), c[10:].numpy()])  # m's halves, as S and Y
        results.append((matvec(m, v), combine([m[:10], m[10:]], weights)))
    for products, sums in results[1:]:
        assert torch.equal(products, results[0][0]) and torch.equal(sums, results[0][1])
    assert torch.allclose(results[0][0], m.double() @ v.double(), rtol=1e-6, atol=1e-3)
    assert torch.allclose(results[0][1].double(), c @ m.double(), rtol=1e-5, atol=1e-3)


def test_minimizes_rosenbrock_with_line_search() -> None:
    x = torch.full((6,), -1.0, dtype=torch.float64)
    minimize(rosenbrock, x, LBFGSConfig(tolerance_grad=1e-10, tolerance_change=1e-14))
    assert torch.allclose(x, torch.ones(6, dtype=torch.float64), atol=1e-5)


def test_minimizes_a_quadratic_without_line_search() -> None:
    scales = torch.tensor([1.0, 2.0, 5.0, 10.0], dtype=torch.float64)
    target = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)

    def quadratic(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        diff = x - target
        return float((scales * diff**2).sum() / 2), scales * diff

    x = torch.zeros(4, dtype=torch.float64)
    minimize(quadratic, x, LBFGSConfig(line_search=False, tolerance_grad=1e-9))
    assert torch.allclose(x, target, atol=1e-6)


def test_the_objective_can_stop_the_run_at_a_budget() -> None:
    class Budget(Exception):
        pass

    calls = []

    def limited(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        if len(calls) == 7:
            raise Budget
        calls.append(1)
        return rosenbrock(x)

    x = torch.full((4,), -1.0, dtype=torch.float64)
    with pytest.raises(Budget):
        minimize(limited, x, LBFGSConfig())
    assert len(calls) == 7
    assert rosenbrock(x)[0] < rosenbrock(torch.full((4,), -1.0, dtype=torch.float64))[0]


@pytest.mark.parametrize(("first_decrease", "reaches"), [(0.5, True), (1e-6, False)])
def test_the_first_step_is_large_enough_to_show_through_a_noisy_loss(
    first_decrease: float, reaches: bool
) -> None:
    # A million coordinates and a loss known only to 1e-3 (as in bf16). The default first
    # step gets through; one planned to lower the loss by 1e-6 of itself (~0.5, like
    # torch's 1/|g|_1 here) is lost in the noise of ~250 and never leaves the start.
    generator = torch.Generator().manual_seed(0)
    n = 1_000_000
    noise = iter(torch.rand(1000, generator=generator).tolist())
    calls = []

    class Budget(Exception):
        pass

    def noisy(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        calls.append(1)
        if len(calls) > 10:
            raise Budget
        exact = 0.5 * float((x.double() ** 2).sum())
        return exact * (1 + 1e-3 * (next(noise) - 0.5)), x.clone()

    x = torch.ones(n)
    with contextlib.suppress(Budget):
        minimize(noisy, x, LBFGSConfig(first_decrease=first_decrease))
    loss = 0.5 * float((x.double() ** 2).sum())
    assert (loss < 0.1 * 0.5 * n) is reaches


def test_the_gpu_branches_agree_with_the_fixed_order_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU takes one cuBLAS or reduction call where the CPU sums in a fixed order. Run
    here on CPU tensors, those branches must lay out the products as the CPU's do and
    give the same directions and the same minimum."""
    generator = torch.Generator().manual_seed(7)
    n, pairs = 9000, [torch.randn(9000, generator=generator) for _ in range(6)]
    a = torch.rand(n, generator=generator) * 10 + 0.1
    grad = torch.randn(n, generator=generator)

    def directions() -> list[tuple[list[float], torch.Tensor, float]]:
        history, seen = _History(torch.zeros(n), 4, float(grad @ grad)), []
        for s in pairs:  # more pairs than the history holds: its ring turns
            (products,) = to_host([history.products(s, a * s, grad)])
            history.update(s, a * s, products)
            seen.append((products, *history.direction(grad, 0.5)))
        return seen

    fixed = directions()
    monkeypatch.setattr(lbfgs, "_in_fixed_order", lambda t: False)
    gpu = directions()
    for (products, d, slope), (products_gpu, d_gpu, slope_gpu) in zip(fixed, gpu, strict=True):
        assert products_gpu == pytest.approx(products, rel=1e-4, abs=1e-3)
        assert torch.allclose(d_gpu, d, rtol=1e-4, atol=1e-4 * float(d.abs().max()))
        assert slope_gpu == pytest.approx(slope, rel=1e-4)
    x = torch.full((6,), -1.0, dtype=torch.float64)
    minimize(rosenbrock, x, LBFGSConfig(tolerance_grad=1e-10, tolerance_change=1e-14))
    assert torch.allclose(x, torch.ones(6, dtype=torch.float64), atol=1e-5)
