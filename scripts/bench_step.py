"""Seconds per optimization step against the machine's compute bound, side by side.

One step is a forward and backward pass of the VGG19 prefix (default layers, up to
relu5_1) plus the L-BFGS update. The bound is a float32 matmul doing the same FLOPs
(forward convs + their input-gradient convs) on the same device, in the same run.

    python scripts/bench_step.py [--size 256] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from nst_batch import images
from nst_batch.params import LAYER_NAMES, Params
from nst_batch.stylize import style_targets, stylize
from nst_batch.vgg import build_vgg19, conv_flops

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(path: Path, size: int, device: torch.device) -> torch.Tensor:
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.target_size(*image.size, size))).to(device)


def seconds_per_step(params: Params, device: torch.device, repeats: int) -> tuple[float, int, int]:
    vgg = build_vgg19("original", (*params.content_layers, *params.style_layers), device=device)
    content = load(EXAMPLES / "content" / "astronaut.png", params.size, device)
    style = load(EXAMPLES / "style" / "starry_night.jpg", params.size, device)
    targets = style_targets(vgg, style, params)
    stylize(vgg, content, targets, params.model_copy(update={"steps": 3}))  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        result = stylize(vgg, content, targets, params)
        _sync(device)
        times.append(result.seconds / result.steps)
    h, w = content.shape[-2:]
    return statistics.median(times), h, w


def matmul_seconds(flops: float, device: torch.device, repeats: int) -> float:
    n = round((flops / 2) ** (1 / 3))
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * flops / (2 * n**3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = Params(size=args.size, steps=args.steps)
    step, h, w = seconds_per_step(params, device, args.repeats)
    last = max((*params.content_layers, *params.style_layers), key=LAYER_NAMES.index)
    # Forward convs plus the input-gradient convs of the backward pass (no weight grads).
    flops = 2 * conv_flops(h, w, last)
    bound = matmul_seconds(flops, device, max(5, args.repeats))
    threads = torch.get_num_threads()
    print(f"device {device} ({threads} threads), image {w}x{h}, layers up to {last}")
    print(f"FLOPs per step      {flops / 1e9:.2f} GFLOP")
    print(f"seconds per step    {step * 1e3:.1f} ms  ({flops / step / 1e9:.1f} GFLOP/s)")
    print(f"matmul, same FLOPs  {bound * 1e3:.1f} ms  ({flops / bound / 1e9:.1f} GFLOP/s)")
    print(f"ratio step / bound  {step / bound:.2f}")


if __name__ == "__main__":
    main()
