"""Colour control of Gatys et al. (2017), "Controlling Perceptual Factors in Neural Style
Transfer" (its colour section), as pure functions on image tensors.

Two ways to keep the content's colours:

- luminance-only transfer: VGG sees grey images (``luminance``), the style's luminance is
  first matched to the content's (``match_luminance``), and the stylized luminance is put
  back under the content's chroma (``recombine``);
- colour histogram matching: the style's pixels get the content's colour mean and
  covariance (``match_colors``) before the usual transfer.

Images are float tensors ``(B, 3, H, W)``, RGB in 0..1, on any device. Where a style and a
content image meet, their batch sizes must be equal or one of them 1 (it is broadcast), and
their sizes may differ: statistics are computed per image over its own pixels.
"""

from __future__ import annotations

import torch

# FCC NTSC YIQ. The chroma rows sum to exactly zero, so grey pixels have I = Q = 0 and the
# inverse maps (Y, 0, 0) back to the grey (Y, Y, Y): recombine(luminance(c), c) == c.
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

# Below this a standard deviation (luminance) or a variance (colour covariance eigenvalue)
# counts as flat: 8-bit quantisation alone gives a variance of (1/255)^2 / 12 ~ 1.3e-6, so
# smaller values carry no image content and must not be divided by.
_MIN_STD = 1e-3
_MIN_VARIANCE = 1e-6


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) YIQ, in the input's dtype and on its device.

    Y is the luma 0.299 R + 0.587 G + 0.114 B, the colour space the paper uses to separate
    luminance from colour.
    """
    _check_image(image, "image")
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) YIQ -> (B, 3, H, W) RGB, not clamped (YIQ reaches outside the RGB cube)."""
    _check_image(image, "image")
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) grey RGB: Y in all three channels.

    VGG19 takes three channels, so in luminance mode it sees this grey image in place of
    the colour one; the result is in 0..1 whenever the input is.
    """
    _check_image(image, "image")
    return _luma(image).expand_as(image).contiguous()


def match_luminance(style_grey: torch.Tensor, content_grey: torch.Tensor) -> torch.Tensor:
    """The style's luminance with the content's mean and standard deviation, grey (B, 3, H, W).

    Paper eq. 13: L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c, so that the style's
    brightness and contrast do not overrule the content's. The inputs may be grey or colour
    (their Y is used) and differ in size; the result has the style's size, clamped to 0..1.
    A flat style (sigma_s ~ 0) becomes the content's mean.
    """
    _check_image(style_grey, "style_grey")
    _check_image(content_grey, "content_grey")
    _check_batches(style_grey, content_grey)
    work = _work_dtype(style_grey.device)
    style_y = _luma(style_grey.to(work))  # (Bs, 1, H, W)
    content_y = _luma(content_grey.to(style_grey.device, work))  # (Bc, 1, H', W')
    mu_s, sigma_s = _mean_std(style_y)
    mu_c, sigma_c = _mean_std(content_y)
    matched = (style_y - mu_s) * (sigma_c / sigma_s.clamp_min(_MIN_STD)) + mu_c
    shape = (matched.shape[0], 3, *matched.shape[2:])
    return matched.clamp(0, 1).expand(shape).to(style_grey.dtype).contiguous()


def recombine(stylized_grey: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized image's Y under the content's I and Q, as RGB (B, 3, H, W) in 0..1.

    The last step of luminance-only transfer: the network only changed the luminance, so
    the colours are the content's. ``stylized_grey`` may have drifted from grey during the
    optimization; only its Y counts. Both images must have the same height and width.
    """
    _check_image(stylized_grey, "stylized_grey")
    _check_image(content, "content")
    _check_batches(stylized_grey, content)
    if stylized_grey.shape[2:] != content.shape[2:]:
        raise ValueError(
            f"recombine needs the stylized image at the content's size, got "
            f"{_hw(stylized_grey)} and {_hw(content)}; stylize at the content's size"
        )
    dtype = torch.promote_types(stylized_grey.dtype, content.dtype)
    batch = max(stylized_grey.shape[0], content.shape[0])
    content_yiq = rgb_to_yiq(content.to(dtype))
    y = _luma(stylized_grey.to(dtype)).expand(batch, -1, -1, -1)  # (B, 1, H, W)
    iq = content_yiq[:, 1:].expand(batch, -1, -1, -1)  # (B, 2, H, W)
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp_(0, 1)


def match_colors(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's pixels moved to the content's colour mean and covariance, (B, 3, H, W).

    The paper's colour histogram matching: x' = A (x - mu_s) + mu_c with
    A = Sigma_c^{1/2} Sigma_s^{-1/2} (symmetric square roots), so the style keeps its
    strokes and textures in the content's palette. Computed in float64 (float32 on MPS) and
    returned in the style's dtype at the style's size, clamped to 0..1.

    Style eigenvalues below quantisation noise are raised to it before the inverse root:
    a grey or flat style stays grey or flat instead of amplifying noise (or dividing by
    zero). The map is the identity when style and content are the same image (exactly,
    to rounding, unless its colours are flat in some direction).
    """
    _check_image(style, "style")
    _check_image(content, "content")
    _check_batches(style, content)
    work = _work_dtype(style.device)
    style_px = style.to(work).flatten(2)  # (Bs, 3, N)
    content_px = content.to(style.device, work).flatten(2)  # (Bc, 3, N')
    mu_s, sigma_s = _mean_cov(style_px)
    mu_c, sigma_c = _mean_cov(content_px)
    transform = _root_transform(sigma_c, sigma_s)  # (B, 3, 3)
    matched = transform @ (style_px - mu_s) + mu_c  # (B, 3, N)
    shape = (matched.shape[0], 3, *style.shape[2:])
    return matched.reshape(shape).clamp_(0, 1).to(style.dtype)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel's 3-vector by ``matrix`` (3, 3)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(image.device, image.dtype), image)


def _luma(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) Y."""
    return _apply(_RGB_TO_YIQ[:1], image)


def _mean_std(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and population standard deviation of (B, 1, H, W), each (B, 1, 1, 1)."""
    std, mean = torch.std_mean(y, dim=(1, 2, 3), correction=0, keepdim=True)
    return mean, std


def _mean_cov(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean (B, 3, 1) and population covariance (B, 3, 3) of pixels (B, 3, N)."""
    mean = pixels.mean(dim=2, keepdim=True)
    centered = pixels - mean
    return mean, centered @ centered.transpose(1, 2) / pixels.shape[2]


def _root_transform(sigma_c: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """Sigma_c^{1/2} Sigma_s^{-1/2} for covariances (B, 3, 3), in their dtype and on their device.

    The 3x3 eigendecompositions run on the CPU in float64: tiny, exact, and available
    whatever the device (some accelerators have no eigh, or no float64).
    """
    sqrt_c = _sym_power(sigma_c.detach().to("cpu", torch.float64), 0.5, floor=0.0)
    inv_sqrt_s = _sym_power(sigma_s.detach().to("cpu", torch.float64), -0.5, floor=_MIN_VARIANCE)
    return (sqrt_c @ inv_sqrt_s).to(sigma_c.device, sigma_c.dtype)


def _sym_power(matrix: torch.Tensor, power: float, floor: float) -> torch.Tensor:
    """V diag(max(lambda, floor)^power) V^T for symmetric matrices (B, 3, 3).

    The floor turns rounding's tiny negative eigenvalues into 0 for the square root, and
    keeps the inverse root from dividing by (near) zero in directions where an image is flat.
    """
    values, vectors = torch.linalg.eigh(matrix)
    scaled = vectors * values.clamp_min(floor).pow(power).unsqueeze(1)  # columns v_k * root_k
    return scaled @ vectors.transpose(1, 2)


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 for the statistics, except on Apple's MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_image(image: torch.Tensor, name: str) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in 0..1, got {image.dtype}")


def _check_batches(first: torch.Tensor, second: torch.Tensor) -> None:
    b1, b2 = first.shape[0], second.shape[0]
    if b1 != b2 and 1 not in (b1, b2):
        raise ValueError(f"batch sizes {b1} and {b2} differ; pass equal batches or one of 1")


def _hw(image: torch.Tensor) -> str:
    return f"{image.shape[3]}x{image.shape[2]}"
