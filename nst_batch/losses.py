"""The losses of Gatys et al. as pure functions on tensors.

Normalized so that one set of weights gives the same look at 256 and at 1024 px:
Gram matrices are averages over positions, and every loss is a mean, not a sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class _Gram(torch.autograd.Function):
    """F F^T x scale, with a backward of one matmul: G is symmetric, so dL/dF = (dG + dG^T) F."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(flat)
        ctx.scale = scale
        with torch.autocast(flat.device.type, enabled=False):  # float32 under bf16/fp16 too
            return torch.bmm(flat, flat.transpose(1, 2)).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (flat,) = ctx.saved_tensors
        # Autograd's own F @ F^T backward takes two matmuls and an add.
        return torch.bmm(grad + grad.transpose(1, 2), flat).mul_(ctx.scale), None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), divided by C*H*W.

    Gatys et al. use the raw sum over positions; dividing by H*W makes targets
    independent of image size, and the extra 1/C keeps deep and shallow layers
    comparable (the PyTorch tutorial's normalization, which the default weights assume).
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # Gram in float32 even under autocast: sums over H*W overflow halves
    return _Gram.apply(flat, 1.0 / (c * h * w))


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
