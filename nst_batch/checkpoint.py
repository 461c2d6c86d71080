"""Checkpoints of tasks in flight: a stopped task resumes where it was, not from zero.

A checkpoint holds what a task needs to go on: the best image so far of the scale it was
at, the steps done (over every scale, and at that scale), its loss history, the losses at
its start and its optimization time. L-BFGS's memory (the last pairs of steps and gradient
changes) is not kept: a resumed task rebuilds it in a few steps, and leaving it out keeps
a checkpoint one image's size. Adam's moments are likewise started afresh.

Files live at `layout.checkpoint_path` (`<output>/.nst-batch/checkpoints/<id>-<key>.pt`),
written with `layout.write_atomically` (a kill leaves the old file or the new one) and read
with `torch.load(weights_only=True)`: data, never code. A file that is torn, not ours, of
another format version or of another task key is ignored with a warning, never a crash;
so is one holding what `save` never writes (a tensor that is sparse, on `meta`, of another
dtype or not contiguous; an image outside 0..1; step counts that disagree), checked
before anything is used.
"""

from __future__ import annotations

import math
import warnings
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
    not a checkpoint of this format, of another key, or holds anything a run of nst-batch
    could not have saved (each cause its own message). FileNotFoundError if missing.

    Whether it fits the task (its scale count, image size and step budget) is for
    `Pyramid.resume` to say."""
    where = display(path)
    try:
        with warnings.catch_warnings():  # torch's own (a sparse tensor checked): ours says it
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torn, truncated, not a torch file, or code inside
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where} cannot be read ({detail[:120]})") from None
    # Types first: `!=` on a tensor is a tensor, whose truth may be an error.
    version = data.get("format") if isinstance(data, dict) else None
    if type(version) is not int or version != FORMAT:
        raise CheckpointError(
            f"{where} is not a checkpoint of this nst-batch (format {_shown(version)})"
        )
    made_for = data.get("key")
    if type(made_for) is not str or made_for != key:
        raise CheckpointError(f"{where} was made for another task (key {_shown(made_for)})")
    missing = sorted(FIELDS - set(data))
    if missing:
        raise CheckpointError(f"{where} is incomplete (no {', '.join(missing)})")
    image = _tensor(data["image"], torch.float32, 4, f"{where}: its image")
    if image.shape[:2] != (1, 3) or min(image.shape[2:]) < 1:
        raise CheckpointError(f"{where}: its image is of shape {tuple(image.shape)}")
    # Saved clamped to 0..1, as every image the optimization keeps: anything else is forged.
    if not bool(((image >= 0) & (image <= 1)).all()):  # NaN fails both
        raise CheckpointError(f"{where}: its image has values outside 0..1 (or not finite)")
    stage, stage_steps, done = (_count(data, name, where) for name in STEPS)
    # Scale 0 comes first: nothing was done before it. Each finer one follows coarser
    # scales of at least one step each. Whether `done` fits the budget is the pyramid's.
    before = done - stage_steps
    if stage_steps < 1 or before < stage or (stage == 0 and before != 0):
        raise CheckpointError(
            f"{where}: its step counts disagree ({done} done, {stage_steps} at scale {stage + 1})"
        )
    history = _tensor(data["history"], torch.float64, 1, f"{where}: its loss history")
    if history.shape[0] != done:
        raise CheckpointError(f"{where}: its loss history has {history.shape[0]} of {done} steps")
    if not bool(torch.isfinite(history).all()):
        raise CheckpointError(f"{where}: its loss history is not finite")
    initial = _losses(data["initial"], f"{where}: its initial losses")
    losses = _losses(data["losses"], f"{where}: its losses")
    seconds = data["seconds"]
    if type(seconds) is not float or not 0 <= seconds < math.inf:
        raise CheckpointError(f"{where}: its time is not a number of seconds")
    return Checkpoint(
        key=key,
        image=image,
        stage=stage,
        stage_steps=stage_steps,
        done=done,
        history=history.tolist(),
        initial=initial,
        losses=losses,
        seconds=seconds,
    )


FIELDS = frozenset(
    ("image", "stage", "stage_steps", "done", "history", "initial", "losses", "seconds")
)
STEPS = ("stage", "stage_steps", "done")


def _shown(value: object) -> str:
    """A value read from a file, for a message: strings and numbers as they are, anything
    else by its type (the repr of a nested list may be huge, or recurse past the limit)."""
    if isinstance(value, str | int | float):
        return repr(value)[:80]
    return f"a {type(value).__name__}"


def _tensor(value: object, dtype: torch.dtype, dim: int, what: str) -> torch.Tensor:
    """`value` if it is a plain, dense, contiguous CPU tensor of `dtype` and `dim`
    dimensions, as `save` writes them. Contiguity also bounds its size by the file's: its
    storage was read whole, and no stride of 0 can make it claim more."""
    if type(value) is not torch.Tensor:
        raise CheckpointError(f"{what} is a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided or value.is_nested or value.is_quantized:
        raise CheckpointError(f"{what} is not a dense tensor ({value.layout})")
    if value.device.type != "cpu":  # a `meta` tensor has no data
        raise CheckpointError(f"{what} has no data on the CPU (device {value.device.type})")
    if value.dtype != dtype:
        raise CheckpointError(f"{what} is {value.dtype}, not {dtype}")
    if value.dim() != dim:
        raise CheckpointError(f"{what} has {value.dim()} dimensions, not {dim}")
    if not value.is_contiguous():
        raise CheckpointError(f"{what} is not contiguous (strides {value.stride()})")
    return value


def _count(data: dict[str, object], name: str, where: str) -> int:
    """The step count `data[name]`: an int, 0 or more."""
    value = data[name]
    if type(value) is not int or value < 0:
        raise CheckpointError(f"{where}: its {name} is not a step count ({_shown(value)})")
    return value


def _losses(value: object, what: str) -> Losses:
    """Losses from the list `_losses_list` writes: five finite numbers."""
    if not (
        isinstance(value, list)
        and len(value) == 5
        and all(type(v) in (int, float) and math.isfinite(v) for v in value)
    ):
        raise CheckpointError(f"{what} are not five finite numbers")
    return Losses(*(float(v) for v in value))


def _losses_list(losses: Losses) -> list[float]:
    return [losses.content, losses.style, losses.tv, losses.total, losses.temporal]
