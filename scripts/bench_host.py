"""The host's share of an L-BFGS step, per task: what a GPU waits for between evaluations.

A batch's round on a GPU is its evaluation (device time) plus, for every task, the
search's own work on the host: the small solves of the compact direction, the line
search's logic, launching the history's products and combination, and the transfers.
On a problem of 192 values the device's share is nil, so the seconds per evaluation
here are that host work alone: the part that does not shrink as the GPU gets faster
and that grows with the batch size. On a CPU they include the CPU's fixed-order sums,
which a GPU does not run.

    python scripts/bench_host.py [--history 100] [--steps 400] [--batch 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from nst_batch import lbfgs


def host_seconds_per_step(
    history: int, steps: int, n: int, device: torch.device
) -> tuple[float, float]:
    """(seconds per evaluation on the host, transfers per evaluation) of `steps`
    evaluations on n values, the history filled first; the objective's own time (in a
    batch, one CUDA graph's launch) left out."""
    inside = [0.0]

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Rosenbrock chain: long curved valleys, thousands of steps to its minimum."""
        begun = time.perf_counter()
        x = x.detach().requires_grad_(True)
        a, b = x[:-1], x[1:]
        loss = (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, x)
        inside[0] += time.perf_counter() - begun
        return loss.detach(), grad

    config = lbfgs.LBFGSConfig(history=history, tolerance_grad=0, tolerance_change=0)
    search = lbfgs.search(torch.full((n,), -1.2, device=device), config)
    request = next(search)
    evaluations = transfers = 0
    start = 0.0
    while evaluations < history + steps:
        if evaluations == history:  # the history is full from here on
            start, transfers, inside[0] = time.perf_counter(), 0, 0.0
        if isinstance(request, lbfgs.Probe):
            evaluations += 1
        transfers += 1
        try:
            request = search.send(lbfgs.answer(request, objective))
        except StopIteration:
            raise SystemExit("converged before the measurement; use fewer steps") from None
    return (time.perf_counter() - start - inside[0]) / steps, transfers / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16, help="tasks per batch, for the total")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    seconds, transfers = host_seconds_per_step(args.history, args.steps, 3 * 8 * 8, device)
    print(
        f"{device}, history {args.history}: {seconds * 1e6:.0f} us of host work per task "
        "and evaluation "
        f"({transfers:.2f} transfers each when alone); a batch of {args.batch}: "
        f"{seconds * args.batch * 1e3:.2f} ms per round"
    )


if __name__ == "__main__":
    main()
