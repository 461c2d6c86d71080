"""When an optimization stops, and why: the reason a results row records.

- `budget`: it ran every step of its budget (`steps`): what a cold start does by default.
- `tolerance`: its best loss fell by less than `tolerance` of itself over the last
  CONVERGENCE_WINDOW evaluations (set by the user; `auto` for a sequence's frames).
- `warm`: a warm start (`init: previous` from the task's own output, of the same size) ran
  its share of the budget, WARM_SHARE of `steps` and at least WARM_FLOOR evaluations.
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
keeps the whole budget: the upscaled image has lost the fine texture the style loss asks
for at the new size, and starts near ten times a cold run's final loss; measured at 64 to
128 px, it was still 3% to 10% above the cold result after 40% of the budget.

The rule is replayable on a recorded loss curve (`StopRule.replay`): one evaluation at a
time, as the optimization calls it, with the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nst_batch.params import CONVERGENCE_WINDOW, WARM_FLOOR, WARM_SHARE, WARM_TOLERANCE, Params

StopReason = Literal["budget", "tolerance", "warm", "converged"]
STOP_REASONS: tuple[StopReason, ...] = ("budget", "tolerance", "warm", "converged")
Start = Literal["cold", "previous", "frame"]  # how an optimization starts, for its rule


@dataclass(frozen=True)
class Stop:
    """Where and why a replayed curve stops: after `step` evaluations, for `reason`."""

    step: int
    reason: StopReason


def warm_budget(steps: int) -> int:
    """A warm start's evaluations for a cold budget of `steps`: WARM_SHARE of it, at least
    WARM_FLOOR, never more than `steps`."""
    return min(steps, max(WARM_FLOOR, math.ceil(WARM_SHARE * steps)))


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
        output, WARM_TOLERANCE for a sequence's frame from the one before, else the whole
        budget."""
        if params.tolerance != "auto":
            return cls(params.steps, params.tolerance)
        if start == "previous":
            share = warm_budget(params.steps)
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
