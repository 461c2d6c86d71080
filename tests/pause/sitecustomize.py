"""A pause point for tests of real runs, so that they wait for an event instead of a time.

Python imports this module at start-up in every process whose PYTHONPATH names this folder,
the run's spawned workers included (conftest's `pause` fixture sets it). NST_BATCH_TEST_PAUSE
holds JSON {"folder": ..., "step": N, "after": "evaluation" | "checkpoint", "skip": K}:

- "evaluation": a batch whose tasks have each done N steps pauses between two evaluations,
  just before it looks whether it must stop; the first K batches of a process run through;
- "checkpoint": a batch pauses right after writing a checkpoint of a task N steps or more in.

A process pauses once. Pausing writes `<folder>/paused-<pid>` (its text: the steps done, the
least of the batch's tasks) and waits until the worker is told to stop (SIGTERM, its parent
gone; in the command's own process SIGTERM raises out of the wait) or `<folder>/go` exists;
leaving the pause renames the file to `resumed-<pid>`. The run stands where the test wants
it for as long as the test needs, however fast or loaded the machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from pathlib import Path

SPEC = os.environ.get("NST_BATCH_TEST_PAUSE")


def _install(spec: dict[str, object]) -> None:
    from nst_batch import checkpoint, worker

    folder = Path(str(spec["folder"]))
    step = int(str(spec["step"]))
    skip = int(str(spec.get("skip", 0)))
    paused = False
    passed: list[object] = []  # the batches let through (kept: an id must not be reused)

    def pause(done: int) -> None:
        nonlocal paused
        paused = True
        marker, written = folder / f"paused-{os.getpid()}", folder / f".paused-{os.getpid()}"
        written.write_text(str(done))
        written.rename(marker)  # whole when seen
        handler = signal.getsignal(signal.SIGTERM)
        flag = getattr(handler, "__self__", None)  # a spawned worker's stop flag
        stop = flag if isinstance(flag, worker._StopFlag) else (lambda: False)
        try:
            while not (stop() or (folder / "go").exists()):
                time.sleep(0.01)
        finally:
            marker.rename(folder / f"resumed-{os.getpid()}")

    evaluated = worker._Saver.evaluated

    def paused_evaluated(saver: worker._Saver, batch: worker.BatchView) -> None:
        if not paused:
            flights = enumerate(saver.flights)
            steps = [flight.pyramid.done + batch.steps(i) for i, flight in flights]
            if min(steps) >= step and not any(saver is seen for seen in passed):
                if len(passed) < skip:
                    passed.append(saver)
                else:
                    pause(min(steps))
        evaluated(saver, batch)

    save = checkpoint.save

    def paused_save(saved: checkpoint.Checkpoint, *args: object, **kwargs: object) -> None:
        save(saved, *args, **kwargs)  # type: ignore[arg-type]
        if not paused and saved.done >= step:
            pause(saved.done)

    if spec["after"] == "evaluation":
        worker._Saver.evaluated = paused_evaluated  # type: ignore[method-assign]
    else:
        checkpoint.save = paused_save  # type: ignore[assignment]


if SPEC:
    try:
        _install(json.loads(SPEC))
    except Exception:  # the test reads this file and fails with it rather than time out
        folder = Path(json.loads(SPEC)["folder"])
        (folder / f"error-{os.getpid()}").write_text(traceback.format_exc())
        raise
