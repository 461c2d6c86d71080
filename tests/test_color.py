"""Tests of nst_batch.color on the bundled photographs and paintings at 64 to 96 px."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from conftest import CONTENT, STYLE
from PIL import Image

from nst_batch.color import (
    luminance,
    match_colors,
    match_luminance,
    recombine,
    rgb_to_yiq,
    yiq_to_rgb,
)
from nst_batch.images import load_image, resize, target_size, to_tensor

CONTENTS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
STYLES = ["shipwreck.jpg", "starry_night.jpg", "the_scream.jpg", "woman-with-hat-matisse.jpg"]


@cache
def _pil(path: str, size: int, square: bool) -> Image.Image:
    image = load_image(path)
    return resize(image, target_size(*image.size, size, square))


def content(name: str, size: int = 96, square: bool = False) -> torch.Tensor:
    return to_tensor(_pil(str(CONTENT / name), size, square))


def style(name: str, size: int = 96, square: bool = False) -> torch.Tensor:
    return to_tensor(_pil(str(STYLE / name), size, square))


def y_of(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W) luminance, computed here by the paper's formula."""
    r, g, b = image.double().unbind(1)
    return 0.299 * r + 0.587 * g + 0.114 * b


def moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour mean (3,) and population covariance (3, 3) of a (1, 3, H, W) image."""
    pixels = image[0].double().flatten(1)
    return pixels.mean(1), torch.cov(pixels, correction=0)


def moment_distance(image: torch.Tensor, target: torch.Tensor) -> float:
    (mu, cov), (mu_t, cov_t) = moments(image), moments(target)
    return float(torch.linalg.vector_norm(mu - mu_t) + torch.linalg.matrix_norm(cov - cov_t))


def inside(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mask of pixels no channel of which was clamped."""
    return ((image > 0) & (image < 1)).all(dim=1)


# ---------------------------------------------------------------------------------------------
# YIQ and luminance


def test_yiq_of_known_pixels() -> None:
    pixels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 0]])
    image = pixels.T.reshape(1, 3, 6, 1).float()
    yiq = rgb_to_yiq(image)[0, :, :, 0].T
    desired = torch.tensor(
        [
            [0.299, 0.595716, 0.211456],
            [0.587, -0.274453, -0.522591],
            [0.114, -0.321263, 0.311135],
            [1, 0, 0],
            [0.5, 0, 0],
            [0, 0, 0],
        ]
    )
    torch.testing.assert_close(yiq, desired, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CONTENTS)
def test_yiq_round_trip(name: str) -> None:
    image = content(name)
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(image)), image, atol=1e-5, rtol=0)


def test_luminance_is_grey_with_the_papers_y() -> None:
    image = content("coffee.png")
    grey = luminance(image)
    assert grey.shape == image.shape and grey.dtype == torch.float32
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    torch.testing.assert_close(grey[:, 0].double(), y_of(image), atol=1e-6, rtol=0)
    # A known pixel, by hand: 0.299 R + 0.587 G + 0.114 B.
    r, g, b = image[0, :, 10, 20].tolist()
    assert grey[0, 0, 10, 20].item() == pytest.approx(0.299 * r + 0.587 * g + 0.114 * b, abs=1e-6)


def test_luminance_agrees_with_pillows_grey() -> None:
    """Pillow's ``L`` mode uses the same ITU-R 601 weights, rounded to 8 bits."""
    pil = _pil(str(CONTENT / "astronaut.png"), 96, False)
    grey = luminance(to_tensor(pil))
    pillow = to_tensor(pil.convert("L").convert("RGB"))
    assert (grey - pillow).abs().max().item() <= 1 / 255


# ---------------------------------------------------------------------------------------------
# match_luminance


@pytest.mark.parametrize("style_name", ["starry_night.jpg", "the_scream.jpg", "shipwreck.jpg"])
def test_match_luminance_takes_the_contents_mean_and_std(style_name: str) -> None:
    """With chelsea's soft contrast nothing is clamped, so the moments are exact."""
    photo, painting = content("chelsea.png"), style(style_name)
    assert photo.shape[2:] != painting.shape[2:]
    matched = match_luminance(luminance(painting), luminance(photo))
    assert matched.shape == painting.shape and matched.dtype == torch.float32
    assert torch.equal(matched[:, 0], matched[:, 1]) and torch.equal(matched[:, 0], matched[:, 2])
    assert inside(matched).all()
    y, target = y_of(matched), y_of(photo)
    assert y.mean().item() == pytest.approx(target.mean().item(), abs=1e-5)
    assert y.std(correction=0).item() == pytest.approx(target.std(correction=0).item(), abs=1e-5)
    before = y_of(painting)
    assert abs(before.std(correction=0).item() - target.std(correction=0).item()) > 0.02


def test_match_luminance_follows_eq_13_where_not_clamped() -> None:
    """Astronaut's strong contrast pushes a few per cent of the scream's pixels out of 0..1."""
    photo, painting = content("astronaut.png"), style("the_scream.jpg")
    matched = match_luminance(painting, photo)  # colour inputs: their Y is used
    ys, yc = y_of(painting), y_of(photo)
    desired = (ys - ys.mean()) * (yc.std(correction=0) / ys.std(correction=0)) + yc.mean()
    free = (desired > 0) & (desired < 1)
    assert 0.9 < free.double().mean().item() < 1
    torch.testing.assert_close(matched[:, 0].double()[free], desired[free], atol=1e-6, rtol=0)
    assert torch.equal(matched[:, 0].double()[~free], desired[~free].clamp(0, 1).float().double())


def test_match_luminance_of_a_flat_style_is_the_contents_mean() -> None:
    photo = content("coffee.png")
    flat = torch.full((1, 3, 64, 64), 0.3)
    matched = match_luminance(flat, luminance(photo))
    assert torch.isfinite(matched).all()
    torch.testing.assert_close(
        matched, torch.full_like(flat, y_of(photo).mean().item()), atol=1e-6, rtol=0
    )


# ---------------------------------------------------------------------------------------------
# recombine


@pytest.mark.parametrize("name", CONTENTS)
def test_recombine_of_the_contents_own_luminance_is_the_content(name: str) -> None:
    photo = content(name)
    torch.testing.assert_close(recombine(luminance(photo), photo), photo, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style_name", STYLES)
def test_recombine_keeps_the_contents_chroma_and_the_stylized_luminance(style_name: str) -> None:
    photo = content("chelsea.png")
    painted = to_tensor(resize(_pil(str(STYLE / style_name), 96, False), (96, 64)))
    result = recombine(luminance(painted), photo)
    assert result.shape == photo.shape and result.dtype == torch.float32
    assert result.min().item() >= 0 and result.max().item() <= 1
    free = inside(result)
    assert free.double().mean().item() > 0.5
    result_yiq, photo_yiq, painted_yiq = rgb_to_yiq(result), rgb_to_yiq(photo), rgb_to_yiq(painted)
    for channel in (1, 2):  # I and Q
        torch.testing.assert_close(
            result_yiq[:, channel][free], photo_yiq[:, channel][free], atol=1e-4, rtol=0
        )
    torch.testing.assert_close(result_yiq[:, 0][free], painted_yiq[:, 0][free], atol=1e-4, rtol=0)
    assert (result_yiq[:, 0] - photo_yiq[:, 0]).abs().mean().item() > 0.1


def test_recombine_uses_only_the_luminance_of_a_coloured_stylized_image() -> None:
    photo = content("coffee.png")
    painted = to_tensor(resize(_pil(str(STYLE / "starry_night.jpg"), 96, False), (96, 64)))
    torch.testing.assert_close(
        recombine(painted, photo), recombine(luminance(painted), photo), atol=1e-6, rtol=0
    )


def test_recombine_refuses_images_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="at the content's size"):
        recombine(luminance(style("the_scream.jpg")), content("chelsea.png"))


# ---------------------------------------------------------------------------------------------
# match_colors


@pytest.mark.parametrize("style_name", STYLES)
def test_match_colors_gives_the_style_the_contents_mean_and_covariance(style_name: str) -> None:
    """Chelsea's muted colours keep every matched pixel inside 0..1: the match is exact."""
    photo, painting = content("chelsea.png"), style(style_name)
    matched = match_colors(painting, photo)
    assert matched.shape == painting.shape and matched.dtype == torch.float32
    before = moment_distance(painting, photo)
    assert moment_distance(matched, photo) < 1e-4 * before
    (mu, cov), (mu_c, cov_c) = moments(matched), moments(photo)
    torch.testing.assert_close(mu, mu_c, atol=1e-6, rtol=0)
    torch.testing.assert_close(cov, cov_c, atol=1e-6, rtol=0)


@pytest.mark.parametrize("style_name", STYLES)
def test_match_colors_with_clamping_still_moves_most_of_the_way(style_name: str) -> None:
    photo, painting = content("rocket.jpg"), style(style_name)
    matched = match_colors(painting, photo)
    assert matched.min().item() >= 0 and matched.max().item() <= 1
    assert moment_distance(matched, photo) < 0.05 * moment_distance(painting, photo)


def test_match_colors_keeps_the_styles_structure() -> None:
    """A linear colour map: the matched luminance is still the painting's, up to an affine map."""
    painting = style("starry_night.jpg")
    matched = match_colors(painting, content("chelsea.png"))
    pair = torch.stack([y_of(painting).flatten(), y_of(matched).flatten()])
    assert torch.corrcoef(pair)[0, 1].item() > 0.9


@pytest.mark.parametrize("name", CONTENTS)
def test_match_colors_of_an_image_to_itself_is_the_identity(name: str) -> None:
    photo = content(name)
    torch.testing.assert_close(match_colors(photo, photo), photo, atol=1e-5, rtol=0)


def test_match_colors_of_a_grey_style_has_no_nan() -> None:
    photo, grey = content("chelsea.png"), luminance(style("the_scream.jpg"))
    matched = match_colors(grey, photo)
    assert torch.isfinite(matched).all()
    assert matched.min().item() >= 0 and matched.max().item() <= 1
    # Only the grey axis carries variance, so the result varies along one colour direction.
    _, cov = moments(matched)
    values = torch.linalg.eigvalsh(cov)
    assert values[2].item() > 1e-3 and values[1].item() < 1e-6


def test_match_colors_to_a_grey_content_gives_a_grey_style() -> None:
    photo, painting = content("astronaut.png"), style("woman-with-hat-matisse.jpg")
    matched = match_colors(painting, luminance(photo))
    assert torch.isfinite(matched).all()
    torch.testing.assert_close(matched[:, 0], matched[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(matched[:, 0], matched[:, 2], atol=1e-5, rtol=0)


def test_match_colors_of_flat_images_is_the_contents_mean() -> None:
    photo = content("chelsea.png")
    flat = torch.full((1, 3, 40, 50), 0.7)
    matched = match_colors(flat, photo)
    assert torch.isfinite(matched).all()
    desired = photo.mean(dim=(2, 3), keepdim=True).expand_as(flat)
    torch.testing.assert_close(matched, desired, atol=1e-6, rtol=0)
    flat_content = torch.full((1, 3, 32, 32), 0.25)
    torch.testing.assert_close(
        match_colors(photo, flat_content), torch.full_like(photo, 0.25), atol=1e-6, rtol=0
    )


# ---------------------------------------------------------------------------------------------
# Batches, dtypes, shapes, devices


def test_batches_use_per_sample_statistics() -> None:
    photos = torch.cat([content("chelsea.png", 64, True), content("rocket.jpg", 64, True)])
    paintings = torch.cat([style("the_scream.jpg", 80, True), style("shipwreck.jpg", 80, True)])
    matched = match_colors(paintings, photos)
    grey = match_luminance(paintings, photos)
    for i in range(2):
        one, photo = paintings[i : i + 1], photos[i : i + 1]
        torch.testing.assert_close(matched[i : i + 1], match_colors(one, photo), atol=1e-6, rtol=0)
        torch.testing.assert_close(grey[i : i + 1], match_luminance(one, photo), atol=1e-6, rtol=0)
    stylized = luminance(paintings[:, :, :64, :64])
    combined = recombine(stylized, photos)
    for i in range(2):
        torch.testing.assert_close(
            combined[i : i + 1], recombine(stylized[i : i + 1], photos[i : i + 1])
        )
    # One style against a batch of contents is broadcast.
    broadcast = match_colors(paintings[:1], photos)
    assert broadcast.shape == (2, 3, 80, 80)
    torch.testing.assert_close(broadcast[1:], match_colors(paintings[:1], photos[1:]))


def test_float64_in_float64_out() -> None:
    photo, painting = content("chelsea.png").double(), style("starry_night.jpg").double()
    assert match_colors(painting, photo).dtype == torch.float64
    assert match_luminance(painting, photo).dtype == torch.float64
    assert recombine(photo, photo).dtype == torch.float64
    assert luminance(photo).dtype == torch.float64


@pytest.mark.parametrize(
    ("bad", "error", "why"),
    [
        (torch.zeros(3, 32, 32), ValueError, r"must have shape \(B, 3, H, W\), got \(3, 32, 32\)"),
        (torch.zeros(1, 1, 32, 32), ValueError, r"must have shape \(B, 3, H, W\), got \(1, 1,"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating-point tensor"),
    ],
)
def test_bad_tensors_are_refused(bad: torch.Tensor, error: type[Exception], why: str) -> None:
    photo = content("chelsea.png")
    for call in (
        lambda: luminance(bad),
        lambda: match_luminance(bad, photo),
        lambda: match_colors(photo, bad),
    ):
        with pytest.raises(error, match=why):
            call()


def test_mismatched_batches_are_refused() -> None:
    two, three = torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32)
    with pytest.raises(ValueError, match="batch sizes 2 and 3"):
        match_colors(two, three)


@pytest.mark.cuda  # skipped without a CUDA device (see conftest)
def test_results_stay_on_the_inputs_device() -> None:
    photo, painting = content("chelsea.png"), style("starry_night.jpg")
    gpu_photo, gpu_painting = photo.cuda(), painting.cuda()
    for gpu, cpu in (
        (match_colors(gpu_painting, gpu_photo), match_colors(painting, photo)),
        (match_luminance(gpu_painting, gpu_photo), match_luminance(painting, photo)),
        (recombine(luminance(gpu_photo), gpu_photo), recombine(luminance(photo), photo)),
    ):
        assert gpu.device == gpu_photo.device
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
