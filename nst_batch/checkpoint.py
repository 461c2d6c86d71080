"""Checkpoints of tasks in flight: a stopped task resumes where it was, not from zero.

A checkpoint holds what a task needs to go on: the best image so far of the scale it was
at, the steps done (over every scale, and at that scale), its loss history, the losses at
its start and its optimization time. L-BFGS's memory (the last pairs of steps and gradient
changes) is not kept: a resumed task rebuilds it in a few steps, and leaving it out keeps
a checkpoint one image's size. Adam's moments are likewise started afresh.

Files live at `layout.checkpoint_path` (`<output>/.nst-batch/checkpoints/<id>-<key>.pt`),
written with `layout.write_atomically` (a kill leaves the old file or the new one) and read
with `torch.load(weights_only=True)`: data, never code. A file that is torn, not ours, of
another format version or of another task key is ignored with a warning, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from nst_batch.layout import display, write_atomically
from nst_batch.stylize import Losses

FORMAT = 1  # bump when the content changes; other versions are ignored


@dataclass(frozen=True)
class Checkpoint:
    key: str  # the task key it was made with
    image: torch.Tensor  # (1, 3, H, W) float32 on the CPU, 0..1: the best image of `stage`
    stage: int  # the scale it was at, 0 the coarsest
    stage_steps: int  # evaluations done at that scale
    done: int  # evaluations over every scale, `stage_steps` included
    history: list[float]  # total loss per evaluation, every scale
    initial: Losses  # at the task's start
    losses: Losses  # at `image`
    seconds: float  # optimization time so far, every scale


class CheckpointError(Exception):
    """A checkpoint file cannot be used; str() says which and why."""


def save(checkpoint: Checkpoint, path: Path, root: Path) -> None:
    """Write `checkpoint` atomically to `path` under the output folder `root`."""
    payload = {
        "format": FORMAT,
        "key": checkpoint.key,
        "image": checkpoint.image.detach().to("cpu", torch.float32).contiguous(),
        "stage": checkpoint.stage,
        "stage_steps": checkpoint.stage_steps,
        "done": checkpoint.done,
        "history": torch.tensor(checkpoint.history, dtype=torch.float64),
        "initial": _losses_list(checkpoint.initial),
        "losses": _losses_list(checkpoint.losses),
        "seconds": float(checkpoint.seconds),
    }

    def write(file: IO[bytes]) -> None:
        torch.save(payload, file)

    write_atomically(path, write, root)


def load(path: Path, key: str) -> Checkpoint:
    """The checkpoint at `path`, made for the task `key`; CheckpointError if it is torn,
    not a checkpoint of this format, or of another key. FileNotFoundError if missing."""
    where = display(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torn, truncated, not a torch file, or code inside
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where} cannot be read ({detail[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        version = data.get("format") if isinstance(data, dict) else None
        raise CheckpointError(f"{where} is not a checkpoint of this nst-batch (format {version})")
    if data.get("key") != key:
        raise CheckpointError(f"{where} was made for another task (key {data.get('key')!r})")
    try:
        image, history = data["image"], data["history"]
        stage, stage_steps, done = int(data["stage"]), int(data["stage_steps"]), int(data["done"])
        checkpoint = Checkpoint(
            key=key,
            image=image.to(torch.float32),
            stage=stage,
            stage_steps=stage_steps,
            done=done,
            history=[float(v) for v in history.tolist()],
            initial=Losses(*(float(v) for v in data["initial"])),
            losses=Losses(*(float(v) for v in data["losses"])),
            seconds=float(data["seconds"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{where} is incomplete ({type(exc).__name__}: {exc})") from None
    _check(checkpoint, where)
    return checkpoint


def _check(checkpoint: Checkpoint, where: str) -> None:
    image = checkpoint.image
    sane = (
        isinstance(image, torch.Tensor)
        and image.dim() == 4
        and image.shape[:2] == (1, 3)
        and bool(torch.isfinite(image).all())
        and checkpoint.stage >= 0
        and 1 <= checkpoint.stage_steps <= checkpoint.done == len(checkpoint.history)
        and math.isfinite(checkpoint.losses.total)
    )
    if not sane:
        raise CheckpointError(f"{where} holds inconsistent values")


def _losses_list(losses: Losses) -> list[float]:
    return [losses.content, losses.style, losses.tv, losses.total, losses.temporal]
