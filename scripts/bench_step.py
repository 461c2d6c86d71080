"""Seconds per optimization step against the device's matmul rate, per size and precision;
ms per image-step against batch size; the largest size that fits; and a gallery's
throughput in pairs per hour, its failures, and its losses against an fp32 run.

One step is a forward and backward pass of the VGG19 prefix (default layers, up to
relu5_1) with the Gram matrices, plus the optimizer update. Its FLOPs are the forward
convolutions, their input-gradient convolutions (the weights are frozen) and the Gram
matmuls. The bound is the time matmuls of the same precision take for those FLOPs at
the best rate they reach on the same device, measured in the same run.

    python scripts/bench_step.py [--sizes 256 512 1024] [--precisions fp32 tf32 bf16 fp16]
                                 [--steps 20] [--repeats 3]
    python scripts/bench_step.py --batches 1 2 4 8 16 [--sizes ...] [--precisions ...]
    python scripts/bench_step.py --largest [--largest-sizes 1024 ... 8192] [--largest-steps 5]
    ... [--gallery 4 --gallery-size 512 --gallery-steps 300 --gallery-precision bf16
         --gallery-batch-size B --gallery-compare-fp32]

--batches and --largest print their tables instead of the step table (see measure_batch
for how a batch is timed); --gallery adds the gallery to whichever ran. On a GPU the
defaults are the ones above; on a CPU, sizes 64 128 256, fp32 and bf16, and largest
sizes 128 256 512.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from nst_batch import images, precision
from nst_batch.losses import content_loss, style_loss, total_variation_loss
from nst_batch.params import LAYER_NAMES, Params
from nst_batch.stylize import (
    BatchView,
    Job,
    StyleTargets,
    StylizeError,
    style_targets,
    stylize,
    stylize_batch,
)
from nst_batch.vgg import VGG19Features, build_vgg19, conv_flops, layer_shape, precision_scope

if TYPE_CHECKING:
    from nst_batch.plan import Task
    from nst_batch.results import ResultRow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CONTENTS = sorted((EXAMPLES / "content").iterdir())
STYLES = sorted((EXAMPLES / "style").iterdir())
GRAPHS = os.environ.get("NST_BATCH_CUDA_GRAPHS", "1") != "0"  # 0: eager CUDA steps, to compare
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
DTYPES["fp16"] = torch.float16
# What running out of device memory raises: torch.cuda.OutOfMemoryError is an alias of it
# in torch 2.14 (checked); older torch has only the CUDA one.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(path: Path, size: int, device: torch.device) -> torch.Tensor:
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.target_size(*image.size, size))).to(device)


@functools.cache
def model(device: torch.device) -> VGG19Features:
    """The default layers' VGG19 on `device`, built once and laid out as a worker lays it out."""
    params = Params()
    vgg = build_vgg19("original", (*params.content_layers, *params.style_layers), device=device)
    return vgg.to_channels_last() if device.type == "cuda" else vgg


@torch.no_grad()
def fp32_loss(
    vgg: VGG19Features,
    image: torch.Tensor,
    content: torch.Tensor,
    targets: StyleTargets,
    params: Params,
) -> float:
    """The weighted loss `params` define for `image` (1, 3, H, W), evaluated in fp32.

    One yardstick for outputs of every precision: `content` (1, 3, H, W) is the content at
    the image's shape and `targets` the style's Gram matrices computed in fp32. Built from
    the loss functions themselves, as the optimization combines them (no temporal term).
    """
    fp32 = params.model_copy(update={"precision": "fp32"})
    layers = sorted({*fp32.content_layers, *fp32.style_layers}, key=LAYER_NAMES.index)
    with precision_scope(image.device, "fp32"):
        features = vgg(image, layers)
        wanted = vgg(content, fp32.content_layers)
    c = sum(content_loss(features[k], wanted[k]) for k in fp32.content_layers)
    weights = dict(zip(fp32.style_layers, fp32.layer_weights, strict=True))
    s = style_loss(features, targets, weights)
    tv = total_variation_loss(image) if fp32.tv_weight else 0.0
    return float(fp32.content_weight * c + fp32.style_weight * s + fp32.tv_weight * tv)


def step_flops(params: Params, h: int, w: int) -> tuple[int, int]:
    """(convolution, Gram) FLOPs of one forward and backward pass on an (h, w) image."""
    last = max((*params.content_layers, *params.style_layers), key=LAYER_NAMES.index)
    conv = 2 * conv_flops(h, w, last)
    gram = 0
    for layer in params.style_layers:
        c, lh, lw = layer_shape(layer, h, w)
        gram += 2 * (2 * c * c * lh * lw)
    return conv, gram


def measure_step(
    params: Params, device: torch.device, repeats: int
) -> tuple[float, float, int, int, float | None]:
    """(median seconds per step, loss evaluated in fp32, h, w, peak GiB on CUDA)."""
    vgg = model(device)
    content = load(EXAMPLES / "content" / "astronaut.png", params.size, device)
    style = load(EXAMPLES / "style" / "starry_night.jpg", params.size, device)
    targets = style_targets(vgg, style, params)
    # Warm-up and cuDNN autotuning; a few steps may not lower a large image's loss in
    # bf16 (the first L-BFGS step is tiny), which is no failure here.
    warmup = Job(content, targets, params.model_copy(update={"steps": 5}))
    stylize_batch(vgg, [warmup], graphs=GRAPHS)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        result = stylize(vgg, content, targets, params, graphs=GRAPHS)
        _sync(device)
        times.append(result.seconds / result.steps)
    assert result is not None
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    # One fixed yardstick for every precision: the fp32 loss of the output.
    fp32 = params.model_copy(update={"precision": "fp32"})
    loss = fp32_loss(vgg, result.image, content, style_targets(vgg, style, fp32), fp32)
    h, w = content.shape[-2:]
    return statistics.median(times), loss, h, w, peak


def matmul_rate(mode: str, device: torch.device, repeats: int) -> float:
    """The best FLOP/s square matmuls of this precision reach here (several sizes)."""
    sizes = (2048, 4096, 8192) if device.type == "cuda" else (1024, 2048)
    best = 0.0
    with precision_scope(device, "tf32" if mode == "tf32" else "fp32"):
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=DTYPES[mode])
            b = torch.randn(n, n, device=device, dtype=DTYPES[mode])
            torch.mm(a, b)
            times = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                torch.mm(a, b)
                _sync(device)
                times.append(time.perf_counter() - start)
            best = max(best, 2 * n**3 / statistics.median(times))
    return best


def batch_jobs(vgg: VGG19Features, params: Params, device: torch.device, batch: int) -> list[Job]:
    """`batch` jobs of one content shape (the astronaut at `params.size`), each with the
    next style's targets in turn: what one batch of a gallery's row holds."""
    content = load(EXAMPLES / "content" / "astronaut.png", params.size, device)
    targets = [style_targets(vgg, load(p, params.size, device), params) for p in STYLES[:batch]]
    return [Job(content, targets[i % len(targets)], params) for i in range(batch)]


class Clock:
    """A stylize Watch that notes, after every evaluation of a batch, the time and the
    image-steps done so far (the batch's jobs' steps, however many are still running)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def evaluated(self, batch: BatchView) -> None:
        self.marks.append((time.perf_counter(), sum(batch.steps(i) for i in range(len(batch)))))

    def stopped(self, batch: BatchView) -> None:
        pass


def run_batch(vgg: VGG19Features, jobs: list[Job], device: torch.device) -> tuple[float, float]:
    """(seconds per image-step after the first evaluation, the same over the whole call) of
    one stylize_batch call; see measure_batch."""
    clock = Clock()
    _sync(device)
    start = time.perf_counter()
    stylize_batch(vgg, jobs, graphs=GRAPHS, watch=clock)
    _sync(device)
    wall = time.perf_counter() - start
    (first, done_first), (last, done) = clock.marks[0], clock.marks[-1]
    steady = (last - first) / (done - done_first) if done > done_first else wall / done
    return steady, wall / done


WARMUP_STEPS = 5


def measure_batch(
    vgg: VGG19Features, params: Params, device: torch.device, batch: int, repeats: int
) -> tuple[float, float, float | None]:
    """(seconds per image-step, the same with each call's set-up, peak GiB on CUDA) of a
    batch of `batch` jobs at `params`, medians over `repeats` calls after a warm-up call
    (cuDNN autotuning for this batch's shape).

    Wall time, taken after every evaluation of the batch (a Watch, which stylize_batch
    calls once the L-BFGS steps have read their losses), from the end of the first
    evaluation to the end of the last, over the image-steps in between: the first
    evaluation holds the CUDA graph capture (two eager evaluations and the recording) that
    every stylize_batch call makes anew, and which Result.seconds would count. 'With
    set-up' is wall time around the whole call over all its image-steps: capture and the
    per-call set-up included, as a gallery's batch pays them once for all its steps.
    """
    jobs = batch_jobs(vgg, params, device, batch)
    warmup = params.model_copy(update={"steps": min(params.steps, WARMUP_STEPS)})
    run_batch(vgg, [dataclasses.replace(job, params=warmup) for job in jobs], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [run_batch(vgg, jobs, device) for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(t for t, _ in times), statistics.median(t for _, t in times), peak


def batch_table(args: argparse.Namespace, device: torch.device) -> None:
    """ms per image-step against batch size, per size and precision; a batch that fails
    (out of memory) says why, and the larger batches of that size and precision are skipped."""
    print(
        f"batches of one content shape, different styles, {args.steps} steps, median of "
        f"{args.repeats}; 'with set-up': graph capture and set-up included; pairs/h: steps "
        f"alone at {args.gallery_steps} steps a pair"
    )
    print(
        f"{'size':>10} {'precision':>9} {'batch':>5} {'ms/batch-step':>13} {'ms/img-step':>11} "
        f"{'with set-up':>11} {'img-steps/s':>11} {'pairs/h':>8} {'peak GiB':>8}"
    )
    for size in args.sizes:
        for mode in args.precisions:
            params = Params(size=size, steps=args.steps, precision=mode)
            for batch in args.batches:
                try:
                    step, first, peak = measure_batch(
                        model(device), params, device, batch, args.repeats
                    )
                except Exception as exc:
                    print(f"{size:>10} {mode:>9} {batch:>5} failed: {reason(exc)}")
                    break
                finally:
                    free(device)
                print(
                    f"{size:>10} {mode:>9} {batch:>5} {step * batch * 1e3:>13.2f} "
                    f"{step * 1e3:>11.3f} {first * 1e3:>11.3f} {1 / step:>11.1f} "
                    f"{3600 / (step * args.gallery_steps):>8.0f} "
                    f"{'-' if peak is None else f'{peak:.2f}':>8}"
                )


def try_size(params: Params, device: torch.device) -> tuple[float | None, str]:
    """(peak GiB on CUDA, a note) of one image optimized at `params`; raises what it raises.

    A loss that did not fall in so few steps (a large bf16 image's first L-BFGS step is
    tiny) is no failure here, only a note: the size fits.
    """
    outcome = stylize_batch(
        model(device), batch_jobs(model(device), params, device, 1), graphs=GRAPHS
    )[0]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return peak, f" ({reason(outcome)})" if isinstance(outcome, StylizeError) else ""


def largest_table(args: argparse.Namespace, device: torch.device) -> None:
    """Per precision, the sizes in ascending order for a few steps each, up to the first that
    fails: the largest that ran, and the first failure's reason."""
    print(f"largest size: {args.largest_steps} steps at each size, one image, until one fails")
    print(f"{'size':>10} {'precision':>9} {'peak GiB':>8}  outcome")
    for mode in args.precisions:
        ran, failed = None, None
        for size in sorted(args.largest_sizes):
            params = Params(size=size, steps=args.largest_steps, precision=mode)
            try:
                peak, note = try_size(params, device)
            except Exception as exc:
                failed = (size, reason(exc))
                print(f"{size:>10} {mode:>9} {'-':>8}  failed: {failed[1]}")
                break
            finally:
                free(device)
            print(f"{size:>10} {mode:>9} {'-' if peak is None else f'{peak:.2f}':>8}  ran{note}")
            ran = size
        line = f"largest {mode}: " + (f"{ran} px" if ran else "none of the sizes ran")
        line += f"; {failed[0]} px failed: {failed[1]}" if failed else " (every size tried ran)"
        print(line)


@dataclass(frozen=True)
class GalleryRun:
    """A gallery run: its finished tasks with their result rows, how many it planned, its
    wall time, and the problem that stopped it early if one did (RunStats.fatal)."""

    precision: str
    finished: list[tuple[Task, ResultRow]]
    planned: int
    seconds: float
    fatal: str

    @property
    def done(self) -> int:
        return sum(row.status == "done" for _, row in self.finished)

    @property
    def pairs_per_hour(self) -> float:
        return self.done / self.seconds * 3600


def label(task: Task) -> str:
    return f"{task.content.name} x {task.style.name}"


def run_gallery(
    args: argparse.Namespace, precision: str, folder: Path, output_format: str
) -> GalleryRun:
    """An N x N gallery of the sample images, run in-process as the command runs it (every
    device, batches as the runner chooses them unless --gallery-batch-size), in `folder`."""
    from nst_batch.manifest import load_manifest
    from nst_batch.plan import plan
    from nst_batch.results import ResultsWriter
    from nst_batch.runner import RunConfig, resolve_devices, run_tasks
    from nst_batch.worker import WorkerOptions

    class Collect:
        def __init__(self) -> None:
            self.finished: list[tuple[Task, ResultRow]] = []

        def task_started(self, *_: object) -> None: ...
        def step(self, *_: object) -> None: ...

        def task_finished(self, task: Task, row: ResultRow) -> None:
            self.finished.append((task, row))

    count = args.gallery
    folder.mkdir(parents=True)
    manifest = folder / "gallery.yaml"
    doc = {
        "output": "out",
        "format": output_format,
        "content": [str(p) for p in CONTENTS[:count]],
        "style": [str(p) for p in STYLES[:count]],
        "params": {"size": args.gallery_size, "steps": args.gallery_steps, "precision": precision},
    }
    manifest.write_text(yaml.safe_dump(doc))
    loaded = load_manifest(manifest)
    tasks = plan(loaded)
    loaded.output.mkdir()
    devices = resolve_devices(loaded.devices, loaded.workers_per_device)
    config = RunConfig(
        devices=tuple(devices),
        batch_size=args.gallery_batch_size,
        worker=WorkerOptions(cuda_graphs=GRAPHS),
    )
    events = Collect()
    with ResultsWriter(loaded.output / "results.csv") as writer:
        stats = run_tasks(tasks, config, writer, events)
    return GalleryRun(precision, events.finished, len(tasks), stats.seconds, stats.fatal)


def print_gallery(args: argparse.Namespace, run: GalleryRun, output_format: str) -> None:
    """The run's pairs per hour, then every failed task's reason, one a line."""
    n = args.gallery
    print(
        f"gallery {n}x{n} at {args.gallery_size} px, {args.gallery_steps} steps, "
        f"{run.precision}, {output_format}: {run.done} of {run.planned} pairs done, "
        f"{run.pairs_per_hour:.0f} pairs per hour"
    )
    if run.fatal:
        print(f"  stopped after {len(run.finished)} tasks: {run.fatal}")
    for task, row in run.finished:
        if row.status != "done":
            print(f"  {row.status} {label(task)}: {row.error}")


def output_loss(task: Task, device: torch.device, cache: dict[Path, StyleTargets]) -> float:
    """The fp32-evaluated loss (fp32_loss) of a done task's saved output, against its
    content at the output's shape and its style sized as the worker sizes it."""
    fp32 = task.params.model_copy(update={"precision": "fp32"})
    vgg = model(device)
    image = images.to_tensor(images.load_image(task.output)).to(device)  # (1, 3, H, W)
    h, w = image.shape[-2:]
    content = images.to_tensor(images.resize(images.load_image(task.content.path), (w, h)))
    if task.style.path not in cache:
        style = images.load_image(task.style.path)
        sized = images.resize(
            style, images.scaled_style_size(style.size, fp32.size, fp32.style_scale)
        )
        cache[task.style.path] = style_targets(vgg, images.to_tensor(sized).to(device), fp32)
    return fp32_loss(vgg, image, content.to(device), cache[task.style.path], fp32)


TOLERANCE = 0.02  # the target: each output's fp32-evaluated loss within 2% of the fp32 run's


def compare_fp32(run: GalleryRun, reference: GalleryRun, device: torch.device) -> None:
    """Per pair, the fp32-evaluated loss of each run's output and their ratio; the worst
    ratio (the farthest from 1) against TOLERANCE."""
    cache: dict[Path, StyleTargets] = {}
    theirs = {label(task): (task, row) for task, row in reference.finished}
    print(
        f"fp32-evaluated loss of each output, {run.precision} against fp32 "
        f"(target: within {TOLERANCE:.0%})"
    )
    print(f"  {'pair':<40} {run.precision:>12} {'fp32':>12} {'ratio':>8}")
    worst: tuple[float, str] | None = None
    ratios = 0
    for task, row in sorted(run.finished, key=lambda f: label(f[0])):
        other, other_row = theirs.get(label(task), (task, None))
        failed = [name for name, x in ((f"the {run.precision} run", row),
                                       ("the fp32 reference", other_row))
                  if x is None or x.status != "done"]  # fmt: skip
        if failed:
            dashes = f"{'-':>12} {'-':>12} {'-':>8}"
            print(f"  {label(task):<40} {dashes}  no output in {' and '.join(failed)}")
            continue
        mine, fp32 = output_loss(task, device, cache), output_loss(other, device, cache)
        ratio, ratios = mine / fp32, ratios + 1
        print(f"  {label(task):<40} {mine:>12.6g} {fp32:>12.6g} {ratio:>8.4f}")
        if worst is None or abs(ratio - 1) > abs(worst[0] - 1):
            worst = (ratio, label(task))
    if worst is None:
        print("worst ratio: none (no pair was done in both runs)")
        return
    ratio, pair = worst
    verdict = "within" if abs(ratio - 1) <= TOLERANCE else "NOT within"
    line = f"worst ratio: {ratio:.4f} ({ratio - 1:+.2%}, {pair}), {verdict} {TOLERANCE:.0%}"
    if ratios < run.planned:
        line += f"; {run.planned - ratios} of {run.planned} pairs have no ratio (failed or not run)"
    print(line)


def gallery_report(args: argparse.Namespace, device: torch.device) -> None:
    """The gallery, its failures, and with --gallery-compare-fp32 the fp32 run and the
    per-pair comparison. Outputs are PNG when compared (JPEG's artefacts would move the
    losses), else the default JPEG."""
    output_format = "png" if args.gallery_compare_fp32 else "jpg"
    with tempfile.TemporaryDirectory() as tmp:
        run = run_gallery(args, args.gallery_precision, Path(tmp) / "run", output_format)
        print_gallery(args, run, output_format)
        if args.gallery_compare_fp32:
            reference = run_gallery(args, "fp32", Path(tmp) / "fp32", output_format)
            print_gallery(args, reference, output_format)
            compare_fp32(run, reference, device)


def reason(exc: BaseException) -> str:
    """'Type: first line of the message' of `exc`, or of the out-of-memory error behind it
    (a CUDA graph capture cut short by one raises its own error, with the first as context)."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    first = next((e for e in chain if isinstance(e, OUT_OF_MEMORY)), exc)
    lines = str(first).strip().splitlines()
    return f"{type(first).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def free(device: torch.device) -> None:
    """Give the cached blocks of a failed or finished try back, so the next one starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def step_table(args: argparse.Namespace, device: torch.device) -> None:
    """Seconds per step, FLOP rate and fp32-evaluated loss per size and precision; a row
    that fails says why and the table goes on."""
    rates = {mode: matmul_rate(mode, device, max(5, args.repeats)) for mode in args.precisions}
    header = f"{'size':>10} {'precision':>9} {'GFLOP':>7} {'ms/step':>8} {'TFLOP/s':>8} "
    print(
        header + f"{'matmul':>8} {'fraction':>8} {'loss (fp32)':>12} {'vs fp32':>8} {'peak GiB':>8}"
    )
    for size in args.sizes:
        reference = None
        for mode in args.precisions:
            params = Params(size=size, steps=args.steps, precision=mode)
            try:
                step, loss, h, w, peak = measure_step(params, device, args.repeats)
            except Exception as exc:
                print(f"{size:>10} {mode:>9} failed: {reason(exc)}")
                continue
            finally:
                free(device)
            conv, gram = step_flops(params, h, w)
            flops = conv + gram
            reference = loss if reference is None else reference
            achieved = flops / step
            fraction = achieved / rates[mode]
            print(
                f"{w:>5}x{h:<4} {mode:>9} {flops / 1e9:>7.1f} {step * 1e3:>8.2f} "
                f"{achieved / 1e12:>8.3f} {rates[mode] / 1e12:>8.2f} {fraction:>8.1%} "
                f"{loss:>12.5g} {loss / reference - 1:>+8.2%} "
                f"{'-' if peak is None else f'{peak:.2f}':>8}"
            )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "CPU" where it does not say."""
    for line in precision.CPUINFO.read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 512, 1024] if gpu else [64, 128, 256]
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=list(DTYPES),
        default=["fp32", "tf32", "bf16", "fp16"] if gpu else ["fp32", "bf16"],
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument(
        "--batches", type=int, nargs="+", metavar="B",
        help="ms per image-step against these batch sizes, per size and precision (instead "
        "of the step table)",
    )  # fmt: skip
    parser.add_argument(
        "--largest", action="store_true",
        help="per precision, the largest of --largest-sizes that runs (instead of the step table)",
    )  # fmt: skip
    parser.add_argument(
        "--largest-sizes", type=int, nargs="+", metavar="PX",
        default=[1024, 1536, 2048, 3072, 4096, 6144, 8192] if gpu else [128, 256, 512],
    )  # fmt: skip
    parser.add_argument("--largest-steps", type=int, default=5)
    parser.add_argument("--gallery", type=int, default=0, help="N: also run an NxN gallery")
    parser.add_argument("--gallery-size", type=int, default=512)
    parser.add_argument("--gallery-steps", type=int, default=300)
    parser.add_argument(
        "--gallery-precision", choices=list(DTYPES), default="bf16" if gpu else "fp32"
    )
    parser.add_argument(
        "--gallery-batch-size", type=int, default=None,
        help="tasks optimized together (default: the runner's choice)",
    )  # fmt: skip
    parser.add_argument(
        "--gallery-compare-fp32", action="store_true",
        help="also run the gallery in fp32 and compare each output's fp32-evaluated loss",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as every worker sets it: what a gallery runs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device {device} ({name}, {torch.get_num_threads()} threads), {args.steps} steps")
    if device.type == "cpu":
        flags = sorted(f for f in precision.cpu_flags() if f in ("amx_bf16", "avx512_bf16"))
        print(
            f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, bf16 units: "
            f"{', '.join(flags) or 'none'}; precision: auto is {precision.resolve(['cpu'])} here"
        )
    if args.batches:
        batch_table(args, device)
    if args.largest:
        largest_table(args, device)
    if not (args.batches or args.largest):
        step_table(args, device)
    if args.gallery:
        gallery_report(args, device)


if __name__ == "__main__":
    main()
