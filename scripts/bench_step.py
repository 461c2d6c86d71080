"""Seconds per optimization step against the device's matmul rate, per size and precision;
and a gallery's throughput in pairs per hour.

One step is a forward and backward pass of the VGG19 prefix (default layers, up to
relu5_1) with the Gram matrices, plus the optimizer update. Its FLOPs are the forward
convolutions, their input-gradient convolutions (the weights are frozen) and the Gram
matmuls. The bound is the time matmuls of the same precision take for those FLOPs at
the best rate they reach on the same device, measured in the same run.

    python scripts/bench_step.py [--sizes 256 512 1024] [--precisions fp32 tf32 bf16 fp16]
                                 [--steps 20] [--gallery 4 --gallery-size 512 --gallery-steps 300]

On a GPU the defaults are the ones above; on a CPU, sizes 64 128 256, fp32 and bf16.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from nst_batch import images
from nst_batch.params import LAYER_NAMES, Params
from nst_batch.stylize import Job, _Objective, style_targets, stylize, stylize_batch
from nst_batch.vgg import build_vgg19, conv_flops, layer_shape, precision_scope

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CONTENTS = sorted((EXAMPLES / "content").iterdir())
STYLES = sorted((EXAMPLES / "style").iterdir())
GRAPHS = os.environ.get("NST_BATCH_CUDA_GRAPHS", "1") != "0"  # 0: eager CUDA steps, to compare
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
DTYPES["fp16"] = torch.float16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(path: Path, size: int, device: torch.device) -> torch.Tensor:
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.target_size(*image.size, size))).to(device)


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
    vgg = build_vgg19("original", (*params.content_layers, *params.style_layers), device=device)
    if device.type == "cuda":
        vgg.to_channels_last()
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
    objective = _Objective(vgg, content, style_targets(vgg, style, fp32), fp32)
    with torch.no_grad():
        features = vgg(result.image, sorted(objective.layers))
        loss = float(objective.terms(features, result.image).sum())
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


def pairs_per_hour(count: int, size: int, steps: int, precision: str) -> tuple[float, int]:
    """A count x count gallery run in-process on every device: (pairs per hour, pairs)."""
    from nst_batch.manifest import load_manifest
    from nst_batch.plan import plan
    from nst_batch.results import ResultsWriter
    from nst_batch.runner import RunConfig, resolve_devices, run_tasks

    class Quiet:
        def task_started(self, *_: object) -> None: ...
        def step(self, *_: object) -> None: ...
        def task_finished(self, *_: object) -> None: ...

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "gallery.yaml"
        doc = {
            "output": "out",
            "content": [str(p) for p in CONTENTS[:count]],
            "style": [str(p) for p in STYLES[:count]],
            "params": {"size": size, "steps": steps, "precision": precision},
        }
        manifest.write_text(yaml.safe_dump(doc))
        loaded = load_manifest(manifest)
        tasks = plan(loaded)
        loaded.output.mkdir()
        devices = resolve_devices(loaded.devices, loaded.workers_per_device)
        config = RunConfig(devices=tuple(devices), cuda_graphs=GRAPHS)
        with ResultsWriter(loaded.output / "results.csv") as writer:
            stats = run_tasks(tasks, config, writer, Quiet())
    return stats.done / stats.seconds * 3600, stats.done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--gallery", type=int, default=0, help="N: also run an NxN gallery")
    parser.add_argument("--gallery-size", type=int, default=512)
    parser.add_argument("--gallery-steps", type=int, default=300)
    parser.add_argument("--gallery-precision", default="bf16" if gpu else "fp32")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}, {torch.get_num_threads()} threads), {args.steps} steps")
    rates = {mode: matmul_rate(mode, device, max(5, args.repeats)) for mode in args.precisions}
    header = f"{'size':>10} {'precision':>9} {'GFLOP':>7} {'ms/step':>8} {'TFLOP/s':>8} "
    print(
        header + f"{'matmul':>8} {'fraction':>8} {'loss (fp32)':>12} {'vs fp32':>8} {'peak GiB':>8}"
    )
    for size in args.sizes:
        reference = None
        for mode in args.precisions:
            params = Params(size=size, steps=args.steps, precision=mode)
            step, loss, h, w, peak = measure_step(params, device, args.repeats)
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
    if args.gallery:
        rate, done = pairs_per_hour(
            args.gallery, args.gallery_size, args.gallery_steps, args.gallery_precision
        )
        print(
            f"gallery {args.gallery}x{args.gallery} at {args.gallery_size} px, "
            f"{args.gallery_steps} steps, {args.gallery_precision}: {done} pairs, "
            f"{rate:.0f} pairs per hour"
        )


if __name__ == "__main__":
    main()
