"""What `precision: auto` means on the devices of a run: bf16 where they have fast bf16
arithmetic, else fp32. The measurements behind it are in docs/gpus.md (Precision).

- A CPU takes bf16 only with bf16 matrix units (Intel AMX: `amx_bf16` in /proc/cpuinfo).
  With AVX512-BF16 alone, bf16 ran slower than fp32.
- A CUDA device takes bf16 from compute capability 8.0 (tensor cores that take bf16).
- MPS, and a device this machine does not have, take fp32.
- A run over several devices takes bf16 only where every one of them would.

The plan resolves `auto` before it computes keys (plan.py), so a key holds the precision
that makes the pixels; and a task keeps the precision its existing output was made in, so
that a gallery run on nodes of different kinds is not redone back and forth.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Literal

Resolved = Literal["bf16", "fp32"]
AUTO_CHOICES: tuple[Resolved, ...] = ("bf16", "fp32")  # what `auto` may become
CPUINFO = Path("/proc/cpuinfo")
CUDA_BF16_CAPABILITY = (8, 0)


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not say."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cuda_capability(index: int) -> tuple[int, int] | None:
    """The compute capability of CUDA device `index`; None where there is no such device."""
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    major, minor = torch.cuda.get_device_capability(index)
    return major, minor


def fast_bf16(device: str) -> bool:
    """Whether bf16 pays on `device` ('cpu', 'cuda', 'cuda:N', 'mps')."""
    kind, _, number = device.partition(":")
    if kind == "cpu":
        return "amx_bf16" in cpu_flags()
    if kind == "cuda":
        capability = cuda_capability(int(number or 0))
        return capability is not None and capability >= CUDA_BF16_CAPABILITY
    return False


def resolve(devices: Sequence[str]) -> Resolved:
    """What `auto` becomes for a run on `devices` (the manifest's: ('auto',) is every CUDA
    device, else the CPU)."""
    if tuple(devices) == ("auto",):
        devices = _auto_devices()
    return "bf16" if devices and all(fast_bf16(device) for device in set(devices)) else "fp32"


def _auto_devices() -> list[str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]
