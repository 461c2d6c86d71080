"""Tests of nst_batch.memory: footprints from measured peaks, what fits, balanced chunks,
and the budget and peak read from torch's CUDA counters (replaced here by fakes)."""

from __future__ import annotations

import pytest
import torch

from nst_batch import memory
from nst_batch.memory import (
    MIN_PER_TASK,
    SAFETY,
    DeviceMemory,
    Footprint,
    balanced_chunks,
)

MiB = 2**20


def test_a_footprint_from_two_peaks_is_a_line_through_them() -> None:
    footprint = Footprint.measured(one=700 * MiB, two=1000 * MiB)
    assert footprint == Footprint(fixed=400 * MiB, per_task=300 * MiB)
    assert footprint.bytes(1) == 700 * MiB
    assert footprint.bytes(2) == 1000 * MiB
    assert footprint.bytes(5) == 1900 * MiB


def test_a_footprint_from_one_peak_counts_all_of_it_per_task() -> None:
    footprint = Footprint.measured(one=700 * MiB)
    assert footprint == Footprint(fixed=0, per_task=700 * MiB)
    assert footprint.bytes(3) == 2100 * MiB  # more than the line through two peaks gives
    assert footprint.bytes(3) > Footprint.measured(700 * MiB, 1000 * MiB).bytes(3)


@pytest.mark.parametrize(
    ("one", "two", "desired"),
    [
        # the allocator's slack absorbed the second task: the smallest step it can show
        (700 * MiB, 700 * MiB, Footprint(fixed=698 * MiB, per_task=MIN_PER_TASK)),
        (700 * MiB, 690 * MiB, Footprint(fixed=698 * MiB, per_task=MIN_PER_TASK)),
        # the second task cost more than the first: nothing is fixed, never less than 0
        (300 * MiB, 1000 * MiB, Footprint(fixed=0, per_task=700 * MiB)),
        (0, 0, Footprint(fixed=0, per_task=MIN_PER_TASK)),
    ],
)
def test_a_footprint_is_clamped_to_what_the_allocator_can_show(
    one: int, two: int, desired: Footprint
) -> None:
    assert Footprint.measured(one, two) == desired


def test_the_tasks_within_a_budget() -> None:
    footprint = Footprint(fixed=400 * MiB, per_task=300 * MiB)
    assert footprint.tasks_within(1900 * MiB) == 5
    assert footprint.tasks_within(1899 * MiB) == 4
    assert footprint.tasks_within(700 * MiB) == 1
    # not even one fits: it still gets its try, and fails with the out-of-memory reason
    assert footprint.tasks_within(500 * MiB) == 1
    assert footprint.tasks_within(0) == 1
    assert Footprint(fixed=0, per_task=MIN_PER_TASK).tasks_within(139 * 2**30) == 71168


def test_a_footprint_scaled_to_another_image_size() -> None:
    footprint = Footprint(fixed=400 * MiB, per_task=300 * MiB)
    # four times the pixels: four times each task's part, and the fixed part
    assert footprint.scaled(4.0) == Footprint(fixed=1600 * MiB, per_task=1200 * MiB)
    # a quarter: each task's part shrinks, the fixed part stays
    assert footprint.scaled(0.25) == Footprint(fixed=400 * MiB, per_task=75 * MiB)
    assert footprint.scaled(1.0) == footprint
    assert footprint.scaled(1e-9).per_task == MIN_PER_TASK


@pytest.mark.parametrize(
    ("tasks", "most", "desired"),
    [
        (16, 6, [6, 5, 5]),
        (16, 16, [16]),
        (16, 20, [16]),
        (16, 1, [1] * 16),
        (5, 2, [2, 2, 1]),
        (5, 4, [3, 2]),
        (10, 3, [3, 3, 2, 2]),
        (1, 8, [1]),
    ],
)
def test_balanced_chunks(tasks: int, most: int, desired: list[int]) -> None:
    assert balanced_chunks(tasks, most) == desired
    assert sum(desired) == tasks


def test_the_budget_is_a_share_of_the_free_memory_after_emptying_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    free = 100 * 2**30

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        calls.append(f"mem_get_info {device}")
        return (free + 8 * 2**30 if "empty_cache" in calls else free), 139 * 2**30

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    budget = DeviceMemory(torch.device("cuda", 1)).budget()
    assert calls == ["empty_cache", "mem_get_info cuda:1"]
    assert SAFETY == 0.9
    assert budget == int(108 * 2**30 * 0.9)


def test_the_peak_of_a_run_is_reserved_memory_beyond_the_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    reserved = {"now": 3 * 2**30, "peak": 3 * 2**30}

    def run() -> None:
        calls.append("run")
        reserved["peak"] = 5 * 2**30  # allocated inside, then returned to the cache

    def reset(device: torch.device) -> None:
        calls.append("reset")
        reserved["peak"] = reserved["now"]

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: reserved["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: reserved["peak"])
    peak = memory.DeviceMemory(torch.device("cuda", 0)).peak(run)
    assert calls == ["empty_cache", "reset", "run"]
    assert peak == 2 * 2**30
