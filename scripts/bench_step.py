"""Seconds per optimization step against the machine's compute bound, side by side.

One step is a forward and backward pass of the VGG19 prefix (default layers, up to
relu5_1) with the Gram matrices, plus the L-BFGS update. The bound is the time float32
matmuls take for the same FLOPs (forward convs, their input-gradient convs, the Gram
matmuls) at the best rate they reach on the same device, in the same run.

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
from nst_batch.vgg import build_vgg19, conv_flops, layer_shape

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
    """Time of `flops` at the best rate float32 matmuls reach here (several square sizes)."""
    best_rate = 0.0
    for n in (1024, 2048, 3072, 4096):
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
        best_rate = max(best_rate, 2 * n**3 / statistics.median(times))
    return flops / best_rate


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
    # Forward convs plus the input-gradient convs of the backward pass (no weight grads);
    # each Gram matrix is one matmul forward and one backward.
    conv = 2 * conv_flops(h, w, last)
    gram = 0
    for layer in params.style_layers:
        c, lh, lw = layer_shape(layer, h, w)
        gram += 2 * (2 * c * c * lh * lw)
    flops = conv + gram
    bound = matmul_seconds(flops, device, max(5, args.repeats))
    threads = torch.get_num_threads()
    print(f"device {device} ({threads} threads), image {w}x{h}, layers up to {last}")
    parts = f"convs {conv / 1e9:.2f}, Grams {gram / 1e9:.2f}"
    print(f"FLOPs per step      {flops / 1e9:.2f} GFLOP ({parts})")
    print(f"seconds per step    {step * 1e3:.1f} ms  ({flops / step / 1e9:.1f} GFLOP/s)")
    print(f"matmul, same FLOPs  {bound * 1e3:.1f} ms  ({flops / bound / 1e9:.1f} GFLOP/s)")
    print(f"ratio step / bound  {step / bound:.2f}")


if __name__ == "__main__":
    main()
