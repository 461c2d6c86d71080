"""Where the time of a step goes: torch.profiler over a few steps of a batch, by operator.

    python scripts/profile_step.py [--size 512] [--precision bf16] [--batch 1 8] [--steps 10]
                                   [--rows 25] [--out out/profile] [--device cuda]

For each batch size (jobs of one content, the styles in turn, as bench_step --batches
runs them): a warm-up call that is not profiled (cuDNN autotuning for the shape), then a
call of --steps + 2 evaluations under the profiler, recording only the last --steps: the
first holds the CUDA graph capture every call makes anew, the second warms the profiler
up. Prints the top --rows operators by self device time (CUDA) or self CPU time, the
calls that make the host wait for the device (CUDA), and writes a Chrome trace per batch
size to --out (chrome://tracing or ui.perfetto.dev). With CUDA graphs (the default) an
evaluation is one graph launch; NST_BATCH_CUDA_GRAPHS=0 profiles eager steps.

Times under the profiler are longer than without it: compare operators, not totals.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from nst_batch.params import Params
from nst_batch.stylize import BatchView, stylize_batch

# isort: split
# A sibling script: scripts/ is on sys.path when this one runs.
from bench_step import DTYPES, GRAPHS, WARMUP_STEPS, batch_jobs, model

# CUDA runtime calls after which the host has waited for the device (cudaMemcpyAsync waits
# only when it copies to pageable host memory, as .item() and .tolist() do).
WAITS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cudaMemcpyAsync",
)


class Stepper:
    """A stylize Watch that ends a profiler step after every evaluation of the batch."""

    def __init__(self, prof: profile) -> None:
        self.prof = prof
        self.recorded = 0  # evaluations inside the recorded window

    def evaluated(self, batch: BatchView) -> None:
        if self.prof.current_action in (
            torch.profiler.ProfilerAction.RECORD,
            torch.profiler.ProfilerAction.RECORD_AND_SAVE,
        ):
            self.recorded += 1
        self.prof.step()

    def stopped(self, batch: BatchView) -> None:
        pass


def profile_batch(args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """Profile --steps evaluations of a batch of `batch` jobs; print the tables, write the trace."""
    vgg = model(device)
    params = Params(size=args.size, steps=args.steps + 2, precision=args.precision)
    jobs = batch_jobs(vgg, params, device, batch)
    warmup = params.model_copy(update={"steps": WARMUP_STEPS})
    stylize_batch(vgg, [dataclasses.replace(job, params=warmup) for job in jobs], graphs=GRAPHS)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    trace = args.out / f"profile-{args.size}px-{args.precision}-batch{batch}.json"
    averages = []

    def ready(prof: profile) -> None:
        prof.export_chrome_trace(str(trace))
        averages.append(prof.key_averages())

    with profile(
        activities=activities,
        schedule=schedule(wait=1, warmup=1, active=args.steps, repeat=1),
        on_trace_ready=ready,
    ) as prof:
        stepper = Stepper(prof)
        stylize_batch(vgg, jobs, graphs=GRAPHS, watch=stepper)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if not averages:  # the optimization stopped before the recorded window
        print(f"== {args.size} px, batch {batch}: stopped before any evaluation was recorded")
        return
    steps = max(1, stepper.recorded)
    (table,) = averages
    cuda = device.type == "cuda"
    by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(
        f"== {args.size} px, {args.precision}, batch {batch}: {stepper.recorded} evaluations "
        f"profiled, CUDA graphs {'on' if GRAPHS and cuda else 'off'}; sorted by {by}"
    )
    print(table.table(sort_by=by, row_limit=args.rows))
    if cuda:
        device_us = sum(event.self_device_time_total for event in table)
        print(f"device time per evaluation (sum of self device times): {device_us / steps:.0f} us")
        waits = {event.key: event.count for event in table if event.key in WAITS}
        print("host-device synchronizations: " + (", ".join(
            f"{name} {count} ({count / steps:.1f} per evaluation)"
            for name, count in sorted(waits.items())
        ) or "none reported"))  # fmt: skip
    else:
        cpu_us = sum(event.self_cpu_time_total for event in table)
        print(f"CPU time per evaluation (sum of self CPU times): {cpu_us / steps:.0f} us")
        print("host-device synchronizations: none on a CPU")
    print(f"trace: {trace}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes")
    parser.add_argument("--steps", type=int, default=10, help="evaluations profiled")
    parser.add_argument("--rows", type=int, default=25, help="operators printed")
    parser.add_argument("--out", type=Path, default=Path("out/profile"), help="trace folder")
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as every worker sets it
    args.out.mkdir(parents=True, exist_ok=True)
    for batch in args.batch:
        profile_batch(args, device, batch)


if __name__ == "__main__":
    main()
