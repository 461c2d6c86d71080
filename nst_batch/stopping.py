"""When an optimization stops, and why: the reason a results row records.

- `budget`: it ran every step of its budget (`steps`): what a cold start does by default.
- `tolerance`: its best loss fell by less than `tolerance` of itself over the last
  CONVERGENCE_WINDOW evaluations (set by the user; `auto` for a sequence's frames).
- `warm`: a warm start (`init: previous` from the task's own output) ran its share of the
  budget: WARM_SHARE of `steps` and at least WARM_FLOOR evaluations; from an output of
  another size, WARM_RESIZED_SHARE and at least WARM_RESIZED_FLOOR.
- `converged`: L-BFGS found no step that lowers the loss (a flat gradient); nothing to gain.

Why a share of the budget for warm starts, and not a tolerance: a warm start begins a few
percent above what a cold run of the new settings ends at, passes it within tens of
evaluations, then goes on falling about as fast as the cold run did. A tolerance tuned where
cold runs are converged lets it run on for most of the budget wherever they are not (small
budgets, small images): the loss it tests still falls fast. The point a warm start reaches
a cold run's result grows with the budget, since a cold run gets further the more steps it
has; a share of the budget tracks that. Measured over sizes, budgets, changes of settings
and images never tuned on with scripts/bench_warm.py (docs/performance.md has the grid).

A warm start across a size change (a preview's output, upscaled, as the start of the final)
begins near ten times a cold run's final loss: the upscaling lost the fine texture the style
loss asks for at the new size. Regrowing it took the grid's hard pair 63 to 72 evaluations
at 100 steps, and at 300 steps the run came within 2% of the cold result about where the
cold run comes within 2% of its own end, halfway. So it runs half the budget, and at least
the evaluations the texture takes.

The rule is replayable on a recorded loss curve (`StopRule.replay`): one evaluation at a
time, as the optimization calls it, with the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nst_batch.params import (
    CONVERGENCE_WINDOW,
    WARM_FLOOR,
    WARM_RESIZED_FLOOR,
    WARM_RESIZED_SHARE,
    WARM_SHARE,
    WARM_TOLERANCE,
    Params,
)

StopReason = Literal["budget", "tolerance", "warm", "converged"]
STOP_REASONS: tuple[StopReason, ...] = ("budget", "tolerance", "warm", "converged")
# How an optimization starts, for its rule: from the content (or noise, style, an image),
# the task's previous output of the same size, of another size, or a sequence's frame before.
Start = Literal["cold", "previous", "resized", "frame"]


@dataclass(frozen=True)
class Stop:
    """Where and why a replayed curve stops: after `step` evaluations, for `reason`."""

    step: int
    reason: StopReason


def warm_budget(steps: int, resized: bool = False) -> int:
    """A warm start's evaluations for a cold budget of `steps`: WARM_SHARE of it, at least
    WARM_FLOOR (WARM_RESIZED_SHARE and WARM_RESIZED_FLOOR when `resized`), never more than
    `steps`."""
    share, floor = (WARM_RESIZED_SHARE, WARM_RESIZED_FLOOR) if resized else (WARM_SHARE, WARM_FLOOR)
    return min(steps, max(floor, math.ceil(share * steps)))


@dataclass
class StopRule:
    """Decides after each evaluation whether an optimization stops: at `steps` evaluations
    (the budget, or a warm start's share of it when `warm`), or earlier once its best loss
    fell by less than `tolerance` of itself over the last `window` evaluations."""

    steps: int
    tolerance: float = 0.0
    warm: bool = False
    window: int = CONVERGENCE_WINDOW
    bests: list[float] = field(default_factory=list)  # the best loss after each evaluation

    @classmethod
    def of(cls, params: Params, start: Start) -> StopRule:
        """The rule for `params` (its `steps` the budget) and how the optimization starts:
        `tolerance` as set; for `auto`, the warm share of the budget from a previous
        output (of the same size or resized), WARM_TOLERANCE for a sequence's frame from
        the one before, else the whole budget."""
        if params.tolerance != "auto":
            return cls(params.steps, params.tolerance)
        if start in ("previous", "resized"):
            share = warm_budget(params.steps, resized=start == "resized")
            return cls(share, warm=share < params.steps)
        if start == "frame":
            return cls(params.steps, WARM_TOLERANCE)
        return cls(params.steps)

    def evaluated(self, total: float) -> StopReason | None:
        """After an evaluation whose total loss is `total` (its host value): the reason to
        stop now, or None to go on."""
        self.bests.append(min(total, self.bests[-1]) if self.bests else total)
        if len(self.bests) >= self.steps:
            return self.spent()
        if self.tolerance > 0 and len(self.bests) > self.window:
            before, now = self.bests[-1 - self.window], self.bests[-1]
            if math.isfinite(before) and before - now < self.tolerance * before:
                return "tolerance"
        return None

    def spent(self) -> StopReason:
        """The reason when every allowed evaluation was done."""
        return "warm" if self.warm else "budget"

    def replay(self, totals: Sequence[float]) -> Stop:
        """Where the rule stops on a recorded curve of total losses (each evaluation's); at
        its end, as spent, if the rule never stops on it (a curve cut short)."""
        for total in totals:
            reason = self.evaluated(total)
            if reason is not None:
                return Stop(len(self.bests), reason)
        return Stop(len(self.bests), self.spent())
