"""Device memory accounting for batches: how many tasks of one kind fit a CUDA device.

Nothing here is predicted from image sizes: a worker measures the peak of a batch of one
and of two (`DeviceMemory.peak`), fits a line through them (`Footprint`), and sizes each
batch against the device's free memory at that moment (`DeviceMemory.budget`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# The peaks leave out what varies from one run to the next (cuDNN's choice of workspace
# under benchmark mode, the allocator's fragmentation, other processes on the device):
# a batch is sized to this fraction of the free memory.
SAFETY = 0.9

# PyTorch's caching allocator reserves memory in steps of 2 MiB: a smaller difference
# between two peaks is below what reserved memory can show, not a task that costs nothing.
MIN_PER_TASK = 2 * 2**20


@dataclass(frozen=True)
class Footprint:
    """The device bytes a batch needs: `fixed` once, plus `per_task` for each task."""

    fixed: int
    per_task: int

    @classmethod
    def measured(cls, one: int, two: int | None = None) -> Footprint:
        """From the peak bytes of a batch of one and of two: what the second task added is
        each task's share, the rest of the first peak is fixed. With only `one`, all of it
        counts per task, an overestimate for every task after the first."""
        if two is None:
            return cls(fixed=0, per_task=max(one, MIN_PER_TASK))
        per_task = max(two - one, MIN_PER_TASK)
        return cls(fixed=max(one - per_task, 0), per_task=per_task)

    def scaled(self, ratio: float) -> Footprint:
        """The footprint at `ratio` times the pixels it was measured at: each task's part
        in proportion; the fixed part (workspaces) grows with it but never shrinks."""
        return Footprint(
            fixed=int(self.fixed * max(ratio, 1.0)),
            per_task=max(int(self.per_task * ratio), MIN_PER_TASK),
        )

    def bytes(self, tasks: int) -> int:
        """The bytes a batch of `tasks` needs."""
        return self.fixed + self.per_task * tasks

    def tasks_within(self, budget: int) -> int:
        """The most tasks whose batch fits `budget` bytes; at least 1, since a task that
        does not fit alone still gets its try (and fails with the reason)."""
        return max(1, (budget - self.fixed) // self.per_task)


def balanced_chunks(tasks: int, most: int) -> list[int]:
    """Sizes of the fewest chunks of at most `most` that hold `tasks`, as even as can be:
    16 at most 6 are 6, 5, 5 (not 6, 6, 4), so that no chunk runs nearly alone."""
    assert tasks >= 1 and most >= 1
    count = -(-tasks // most)
    size, larger = divmod(tasks, count)
    return [size + 1] * larger + [size] * (count - larger)


class DeviceMemory:
    """A CUDA device's memory as the batches of one worker process see it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def budget(self) -> int:
        """Bytes a batch may take now: the device's free memory once this process has
        handed back its cached blocks, times SAFETY."""
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free * SAFETY)

    def peak(self, run: Callable[[], object]) -> int:
        """Bytes that `run()` took at its peak beyond what this process held before. Reserved
        memory, not allocated: the caching allocator's blocks and a CUDA graph's private
        pool are memory no other batch can have."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        baseline = torch.cuda.memory_reserved(self.device)
        run()
        return torch.cuda.max_memory_reserved(self.device) - baseline
