"""The losses of Gatys et al. as pure functions on tensors.

Normalized so that one set of weights gives the same look at 256 and at 1024 px:
Gram matrices are averages over positions, and every loss is a mean, not a sum.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch


@contextlib.contextmanager
def _tf32_matmuls(enabled: bool) -> Iterator[None]:
    """CUDA matmuls on TF32 tensor cores within, where `enabled`."""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved, matmul.allow_tf32 = matmul.allow_tf32, True
    try:
        yield
    finally:
        matmul.allow_tf32 = saved


GRAM_BLOCK = 1024  # positions per partial Gram on the CPU


def _outer_products(flat: torch.Tensor) -> torch.Tensor:
    """F F^T: (B, C, N) -> (B, C, C), summed in an order that does not depend on the
    thread count.

    On a CPU, one BLAS product splits a long sum over positions between threads when C is
    small (64 and 128 channels on AVX-512; every layer at 16 threads), so the Gram's rounding,
    and with it every later pixel, followed the number of threads. Here the positions go in
    blocks of at most GRAM_BLOCK, always at least two of them, as one batched product, whose
    threads take whole blocks; the blocks' products are then added in a fixed order. As fast
    as the single product. A GPU's kernels sum in a fixed order already.
    """
    if not flat.is_cpu:
        return torch.bmm(flat, flat.transpose(1, 2))
    return torch.stack([_blocked_gram(f) for f in flat])


def _blocked_gram(f: torch.Tensor) -> torch.Tensor:
    """(C, N) -> (C, C) as above."""
    c, n = f.shape
    block = min(GRAM_BLOCK, max(n // 2, 1))
    whole = n - n % block
    blocks = f[:, :whole].reshape(c, -1, block).transpose(0, 1)  # (whole/block, C, block)
    gram = torch.bmm(blocks, blocks.transpose(1, 2)).sum(0)
    if whole < n:  # the rest as two half blocks, the second padded with a zero if need be
        half = (n - whole + 1) // 2
        rest = torch.nn.functional.pad(f[:, whole:], (0, 2 * half - (n - whole)))
        rest = rest.reshape(c, 2, half).transpose(0, 1)  # (2, C, half)
        gram = gram + torch.bmm(rest, rest.transpose(1, 2)).sum(0)
    return gram


class _Gram(torch.autograd.Function):
    """F F^T x scale, with a backward of one matmul: G is symmetric, so dL/dF = (dG + dG^T) F.

    `half_values`: F holds bf16 or fp16 values (cast to float32 from a half-precision
    VGG19). On CUDA its matmuls then run on TF32 tensor cores rather than at the float32
    rate: TF32 keeps 10 bits of mantissa, so half values enter it exactly and the Gram
    is float32's, sums and all; the backward rounds dG to TF32, finer than the bf16 and
    fp16 gradients it flows into.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, scale: float, half_values: bool) -> torch.Tensor:
        ctx.save_for_backward(flat)
        ctx.scale, ctx.tf32 = scale, half_values and flat.is_cuda
        with torch.autocast(flat.device.type, enabled=False), _tf32_matmuls(ctx.tf32):
            return _outer_products(flat).mul_(scale)  # float32 under autocast too

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (flat,) = ctx.saved_tensors
        # Autograd's own F @ F^T backward takes two matmuls and an add; this is one.
        with _tf32_matmuls(ctx.tf32):
            return _symmetric_product(grad + grad.transpose(1, 2), flat).mul_(ctx.scale), None, None


BACKWARD_FEW_POSITIONS = 4096  # at most this many positions: the product taken transposed


def _symmetric_product(s: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """S F for a symmetric (B, C, C) S and (B, C, N) F, summed over channels in an order that
    does not depend on the thread count.

    On a CPU, one BLAS product S F with few positions (a deep layer: 40 of them at 64 px)
    splits its sum over channels between threads from 3 threads on (MKL's AVX2 kernels),
    and the input gradient, with every later pixel, followed the number of threads. Taken
    as (F^T S)^T, the same product splits the positions and channels it writes instead,
    at every thread count from 1 to 16 and every layer's shape measured; it costs more
    where the positions are many, and there the plain product splits only the positions.
    """
    if not flat.is_cpu or flat.shape[-1] > BACKWARD_FEW_POSITIONS:
        return torch.bmm(s, flat)
    return torch.bmm(flat.transpose(1, 2), s).transpose(1, 2).contiguous()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), divided by C*H*W.

    Gatys et al. use the raw sum over positions; dividing by H*W makes targets
    independent of image size, and the extra 1/C keeps deep and shallow layers
    comparable (the PyTorch tutorial's normalization, which the default weights assume).
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    half = flat.dtype in (torch.float16, torch.bfloat16)
    if half:
        flat = flat.float()  # Gram in float32 even under autocast: sums over H*W overflow halves
    return _Gram.apply(flat, 1.0 / (c * h * w), half)


def mean_square(x: torch.Tensor) -> torch.Tensor:
    """mean(x^2) as a float32 scalar, accumulated in float64.

    A float32 sum's rounding depends on how many threads share it; in float64 the
    result rounds to the same float32 whatever the thread count, so one seed gives one
    image whether a CPU is shared by one worker or several.
    """
    return x.double().square().mean().float()


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared feature difference: (B, C, H, W) x (B, C, H, W) -> scalar."""
    return mean_square(features.float() - target.float())


def style_loss(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """Sum over layers of weight x mean squared Gram difference.

    features: layer -> (B, C, H, W) activations of the image being optimized;
    targets: layer -> (B or 1, C, C) Gram matrices of the style.
    """
    total = torch.zeros((), device=next(iter(features.values())).device)
    for layer, weight in layer_weights.items():
        if weight:
            gram = gram_matrix(features[layer])  # (B, C, C)
            total = total + weight * mean_square(gram - targets[layer].float())
    return total


def total_variation_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, (B, 3, H, W) -> scalar."""
    dh = image[..., 1:, :] - image[..., :-1, :]
    dw = image[..., :, 1:] - image[..., :, :-1]
    return mean_square(dh) + mean_square(dw)


def temporal_loss(image: torch.Tensor, warped: torch.Tensor, trusted: torch.Tensor) -> torch.Tensor:
    """Mean squared difference to the previous stylized frame warped onto this one, over the
    pixels its flow can be trusted for (Ruder et al. 2016, eq. 7): (B, 3, H, W) x (B, 3, H, W)
    x (B or 1, 1, H, W) 0/1 -> scalar. Averaged over all pixels, as Ruder et al. do, so that a
    frame with much occlusion is held less, not more."""
    return mean_square((image.float() - warped.float()) * trusted.float())
