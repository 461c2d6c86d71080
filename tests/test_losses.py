"""Tests of nst_batch.losses on small synthetic tensors with hand-computed values."""

from __future__ import annotations

import pytest
import torch

from nst_batch.losses import (
    _tf32_matmuls,
    content_loss,
    gram_matrix,
    style_loss,
    temporal_loss,
    total_variation_loss,
)


def _features(seed: int, shape: tuple[int, ...] = (1, 4, 5, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# gram_matrix


@pytest.mark.parametrize("channels", [1, 3, 64])
def test_gram_of_ones_is_one_over_channels(channels: int) -> None:
    # Every entry is sum over the 8*8 positions of 1*1 = 64, divided by C*H*W = C*64.
    actual = gram_matrix(torch.ones((1, channels, 8, 8)))
    desired = torch.full((1, channels, channels), 64 / (channels * 8 * 8))
    assert actual.shape == (1, channels, channels)
    assert torch.allclose(actual, desired, rtol=0, atol=1e-7)
    assert torch.allclose(actual, torch.ones_like(actual) / channels, rtol=0, atol=1e-7)


def test_gram_two_channel_example_by_hand() -> None:
    # channel 0 = 1 2 / 3 4, channel 1 = 0 1 / 0 1 (C=2, H=W=2, so the divisor is 8).
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    # <c0, c0> = 1+4+9+16 = 30, <c0, c1> = 2+4 = 6, <c1, c1> = 2
    desired = torch.tensor([[[30.0, 6.0], [6.0, 2.0]]]) / 8
    actual = gram_matrix(features)
    assert torch.allclose(actual, desired, rtol=0, atol=1e-7)
    assert torch.allclose(actual, torch.tensor([[[3.75, 0.75], [0.75, 0.25]]]), rtol=0, atol=1e-7)


def test_gram_is_symmetric_and_matches_einsum_definition() -> None:
    features = _features(0, (3, 5, 7, 4))
    b, c, h, w = features.shape
    desired = torch.einsum("bihw,bjhw->bij", features, features) / (c * h * w)
    actual = gram_matrix(features)
    assert actual.shape == (b, c, c)
    assert torch.allclose(actual, desired, rtol=1e-5, atol=1e-6)
    assert torch.allclose(actual, actual.transpose(1, 2))


def test_gram_of_a_batch_is_the_gram_of_each_item() -> None:
    first, second = _features(1), _features(2) * 3
    actual = gram_matrix(torch.cat([first, second]))
    assert actual.shape == (2, 4, 4)
    assert torch.allclose(actual[0:1], gram_matrix(first), rtol=1e-6, atol=1e-7)
    assert torch.allclose(actual[1:2], gram_matrix(second), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(actual[0], actual[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gram_of_half_precision_features_is_float32(dtype: torch.dtype) -> None:
    features = _features(3).to(dtype)
    actual = gram_matrix(features)
    assert actual.dtype == torch.float32
    # Computed from the float32 upcast of the same values, not in half precision.
    desired = gram_matrix(features.float())
    assert torch.allclose(actual, desired, rtol=1e-6, atol=1e-7)


def test_gram_of_half_precision_does_not_overflow() -> None:
    # 300 * 300 * 64 * 64 = 3.7e8 per entry before the division: far beyond float16's 65504.
    features = torch.full((1, 2, 64, 64), 300.0, dtype=torch.float16)
    actual = gram_matrix(features)
    assert torch.isfinite(actual).all()
    assert torch.allclose(actual, torch.full((1, 2, 2), 300.0**2 / 2))


def test_gram_keeps_float64() -> None:
    assert gram_matrix(_features(3).double()).dtype == torch.float64


def test_gram_gradient_matches_the_definition() -> None:
    # gram_matrix has a hand-written backward; check it numerically and against autograd's.
    features = _features(16, (2, 3, 4, 5)).double().requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (features,))
    upstream = _features(17, (2, 3, 3)).double()  # not symmetric
    (actual,) = torch.autograd.grad(gram_matrix(features), features, upstream)
    reference = torch.einsum("bihw,bjhw->bij", features, features) / (3 * 4 * 5)
    (desired,) = torch.autograd.grad(reference, features, upstream)
    assert torch.allclose(actual, desired, rtol=1e-10, atol=1e-12)


def test_gram_gradient_flows_through_half_precision_input() -> None:
    features = _features(18).bfloat16().requires_grad_(True)
    gram_matrix(features).sum().backward()
    assert features.grad is not None
    assert features.grad.dtype == torch.bfloat16
    assert torch.isfinite(features.grad.float()).all()
    assert features.grad.float().abs().sum() > 0


@pytest.mark.parametrize(
    ("channels", "positions"), [(512, 24), (512, 40), (256, 150), (64, 150), (128, 5000)]
)
def test_gram_and_its_gradient_do_not_depend_on_the_thread_count(
    channels: int, positions: int
) -> None:
    # A deep layer of a small image (512 channels, 24 or 40 positions) is where one BLAS
    # product split its sum over channels between threads; 5000 positions take the plain one.
    features = _features(19, (1, channels, 1, positions))
    upstream = _features(20, (1, channels, channels))
    before, results = torch.get_num_threads(), {}
    try:
        for threads in (1, 2, 3, 4, 6, 8, 16):
            torch.set_num_threads(threads)
            x = features.clone().requires_grad_(True)
            gram = gram_matrix(x)
            (grad,) = torch.autograd.grad(gram, x, upstream)
            results[threads] = (gram.detach(), grad)
    finally:
        torch.set_num_threads(before)
    differ = [
        n
        for n, (gram, grad) in results.items()
        if not (torch.equal(gram, results[1][0]) and torch.equal(grad, results[1][1]))
    ]
    assert differ == []


def test_tf32_matmuls_are_allowed_only_within_and_only_where_asked() -> None:
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    with _tf32_matmuls(False):
        assert matmul.allow_tf32 is before
    with pytest.raises(RuntimeError), _tf32_matmuls(True):
        assert matmul.allow_tf32 is True
        raise RuntimeError("out of memory, say")
    assert matmul.allow_tf32 is before  # restored, even on the way out of an error


def test_gram_is_invariant_to_tiling_the_feature_map() -> None:
    # A 2x2 tiling repeats every position four times: the sums grow 4x and so does H*W.
    features = _features(4, (2, 3, 5, 7))
    tiled = torch.tile(features, (1, 1, 2, 2))
    assert tiled.shape == (2, 3, 10, 14)
    assert torch.allclose(gram_matrix(tiled), gram_matrix(features), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# content_loss


def test_content_loss_is_zero_at_its_target() -> None:
    target = _features(5)
    actual = content_loss(target.clone(), target)
    assert torch.equal(actual, torch.zeros(()))


def test_content_loss_is_the_mean_squared_difference() -> None:
    features, target = _features(6), _features(7)
    actual = content_loss(features, target)
    desired = ((features - target) ** 2).sum() / features.numel()
    assert actual.shape == ()
    assert actual > 0
    assert torch.allclose(actual, desired, rtol=1e-6)


def test_content_loss_by_hand() -> None:
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [3.0, 7.0]]]])
    # differences 0, 2, 0, -3 -> (0 + 4 + 0 + 9) / 4
    assert torch.allclose(content_loss(features, target), torch.tensor(13 / 4))


def test_content_loss_of_half_precision_features_is_float32() -> None:
    features, target = _features(8).bfloat16(), _features(9)
    actual = content_loss(features, target)
    assert actual.dtype == torch.float32
    assert torch.allclose(actual, content_loss(features.float(), target))


# ---------------------------------------------------------------------------------------------
# style_loss


@pytest.fixture
def two_layers() -> dict[str, torch.Tensor]:
    return {"a": _features(10, (1, 3, 4, 4)), "b": _features(11, (1, 5, 2, 3))}


def test_style_loss_is_zero_when_grams_equal_the_targets(two_layers: dict) -> None:
    targets = {name: gram_matrix(f) for name, f in two_layers.items()}
    actual = style_loss(two_layers, targets, {"a": 1.0, "b": 2.5})
    assert torch.allclose(actual, torch.zeros(()), rtol=0, atol=1e-12)


def test_style_loss_is_the_weighted_sum_of_gram_mses(two_layers: dict) -> None:
    targets = {
        "a": gram_matrix(_features(12, (1, 3, 6, 6))),
        "b": gram_matrix(_features(13, (1, 5, 3, 3))),
    }
    weights = {"a": 0.5, "b": 3.0}
    desired = sum(
        w * ((gram_matrix(two_layers[k]) - targets[k]) ** 2).mean() for k, w in weights.items()
    )
    actual = style_loss(two_layers, targets, weights)
    assert actual > 0
    assert torch.allclose(actual, torch.as_tensor(desired), rtol=1e-6)


def test_style_loss_by_hand() -> None:
    # Gram of the 2-channel example above is [[3.75, .75], [.75, .25]]; against a zero
    # target the mean squared entry is (3.75^2 + 2 * 0.75^2 + 0.25^2) / 4.
    features = {"x": torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])}
    targets = {"x": torch.zeros((1, 2, 2))}
    desired = (3.75**2 + 2 * 0.75**2 + 0.25**2) / 4
    assert torch.allclose(style_loss(features, targets, {"x": 1.0}), torch.tensor(desired))
    assert torch.allclose(style_loss(features, targets, {"x": 4.0}), torch.tensor(4 * desired))


def test_style_loss_zero_weight_drops_the_layer(two_layers: dict) -> None:
    targets = {"a": torch.zeros((1, 3, 3)), "b": torch.full((1, 5, 5), float("nan"))}
    # "b" is skipped, not multiplied by zero: its NaN target cannot leak into the sum.
    actual = style_loss(two_layers, targets, {"a": 1.0, "b": 0.0})
    desired = style_loss({"a": two_layers["a"]}, {"a": targets["a"]}, {"a": 1.0})
    assert torch.isfinite(actual)
    assert torch.equal(actual, desired)
    # A layer without a weight entry is not used either.
    assert torch.equal(style_loss(two_layers, targets, {"a": 1.0}), desired)


def test_style_loss_scales_linearly_with_the_weights(two_layers: dict) -> None:
    targets = {k: torch.zeros((1, f.shape[1], f.shape[1])) for k, f in two_layers.items()}
    only_a = style_loss(two_layers, targets, {"a": 1.0, "b": 0.0})
    only_b = style_loss(two_layers, targets, {"a": 0.0, "b": 1.0})
    assert only_a > 0 and only_b > 0
    both = style_loss(two_layers, targets, {"a": 2.0, "b": 7.0})
    assert torch.allclose(both, 2 * only_a + 7 * only_b, rtol=1e-6)
    assert torch.allclose(
        style_loss(two_layers, targets, {"a": 10.0, "b": 10.0}),
        10 * style_loss(two_layers, targets, {"a": 1.0, "b": 1.0}),
        rtol=1e-6,
    )


def test_style_loss_broadcasts_one_target_over_a_batch() -> None:
    first, second = _features(14, (1, 3, 4, 4)), _features(15, (1, 3, 4, 4))
    target = {"a": gram_matrix(first)}  # (1, C, C)
    batch = style_loss({"a": torch.cat([first, second])}, target, {"a": 1.0})
    # The mean over the batch: item 0 matches exactly, item 1 contributes half its own loss.
    desired = style_loss({"a": second}, target, {"a": 1.0}) / 2
    assert batch > 0
    assert torch.allclose(batch, desired, rtol=1e-6)


def test_style_loss_with_no_weighted_layer_is_zero(two_layers: dict) -> None:
    actual = style_loss(two_layers, {}, {"a": 0.0})
    assert torch.equal(actual, torch.zeros(()))


# ---------------------------------------------------------------------------------------------
# total_variation_loss


def test_tv_of_a_constant_image_is_zero() -> None:
    image = torch.full((2, 3, 9, 7), 0.37)
    assert torch.equal(total_variation_loss(image), torch.zeros(()))


def test_tv_by_hand() -> None:
    # 0 1 3
    # 2 2 2
    image = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # vertical differences 2, 1, -1 -> mean square 6/3 = 2
    # horizontal differences 1, 2 and 0, 0 -> mean square 5/4 = 1.25
    assert torch.allclose(total_variation_loss(image), torch.tensor(2 + 1.25))


def test_tv_counts_both_directions() -> None:
    stripes_w = torch.tensor([[[[0.0, 1.0, 0.0, 1.0]] * 4]])  # changes along the width only
    stripes_h = stripes_w.transpose(-1, -2)  # changes along the height only
    assert torch.allclose(total_variation_loss(stripes_w), torch.tensor(1.0))
    assert torch.allclose(total_variation_loss(stripes_h), torch.tensor(1.0))
    # Adding a constant does not change it; scaling the image by k scales it by k^2.
    assert torch.allclose(total_variation_loss(stripes_w + 5), torch.tensor(1.0))
    assert torch.allclose(total_variation_loss(3 * stripes_w), torch.tensor(9.0))


def test_temporal_loss_counts_only_trusted_pixels() -> None:
    image = torch.zeros(1, 3, 4, 4)
    warped = torch.ones(1, 3, 4, 4)
    trusted = torch.zeros(1, 1, 4, 4)
    trusted[..., :2, :] = 1  # the top half is trusted
    assert temporal_loss(image, warped, trusted).item() == pytest.approx(0.5)
    assert temporal_loss(image, warped, torch.zeros(1, 1, 4, 4)).item() == 0.0
    assert temporal_loss(warped, warped, torch.ones(1, 1, 4, 4)).item() == 0.0


def test_temporal_loss_gradient_pulls_towards_the_warped_frame() -> None:
    image = torch.full((1, 3, 2, 2), 0.2, requires_grad=True)
    warped = torch.full((1, 3, 2, 2), 0.6)
    trusted = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    temporal_loss(image, warped, trusted).backward()
    assert image.grad is not None
    assert (image.grad[..., 0, 0] < 0).all()  # descending raises the pixel towards 0.6
    assert (image.grad[..., 0, 1] == 0).all()  # an occluded pixel is free
