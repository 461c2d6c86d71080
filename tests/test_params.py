"""Tests of nst_batch.params: the defaults, ranges, layer names and presets of `Params`.

First `Params` itself, then the same rules as a manifest reports them (the file, the key and
the value named), which is how a user meets them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CONTENT, STYLE
from pydantic import ValidationError

from nst_batch.manifest import ManifestError, load_manifest
from nst_batch.params import (
    FLAT_ALIASES,
    GATYS_CONTENT_LAYERS,
    GATYS_STYLE_LAYERS,
    LAYER_NAMES,
    PRESETS,
    Params,
    canonical_layer,
)

WriteManifest = Callable[..., Path]


def _error(path: Path) -> str:
    """The message of the ManifestError that loading `path` raises."""
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return str(info.value)


def _write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gallery.yaml"
    path.write_text(text)
    return path


def _bound(key: str, kind: str) -> float:
    """A Params field's ge/le bound, read from the model so the tests follow its definition."""
    return next(getattr(m, kind) for m in Params.model_fields[key].metadata if hasattr(m, kind))


def _problem(**values: object) -> tuple[tuple[object, ...], str]:
    """(location, message) of the one error validating `values` raises."""
    with pytest.raises(ValidationError) as info:
        Params(**values)
    (error,) = info.value.errors()
    return error["loc"], error["msg"]


# --- Params itself --------------------------------------------------------------------------


def test_defaults() -> None:
    params = Params()
    assert (params.size, params.steps, params.square, params.style_scale) == (512, 300, False, 1.0)
    assert (params.optimizer, params.line_search, params.learning_rate) == (
        "lbfgs",
        "strong_wolfe",
        None,
    )
    assert (params.content_weight, params.style_weight, params.tv_weight) == (1.0, 10.0, 0.0)
    assert params.content_layers == GATYS_CONTENT_LAYERS == ("relu4_2",)
    assert params.style_layers == GATYS_STYLE_LAYERS
    assert params.style_layer_weights is None and params.layer_weights == (1.0,) * 5
    assert (params.init, params.init_image, params.seed, params.pooling) == (
        "content",
        None,
        0,
        "max",
    )
    assert (params.preserve_color, params.scales, params.scale_steps) == ("none", 1, None)
    assert params.adam_average == 0.9
    assert params.scale_sizes == (512,) and params.total_steps == 300


def test_learning_rate_defaults_by_optimizer() -> None:
    assert Params().lr == 1.0
    assert Params(optimizer="adam").lr == 0.02
    assert Params(optimizer="adam", learning_rate=0.5).lr == 0.5
    assert Params(learning_rate=0.25).lr == 0.25


def test_params_are_frozen_and_refuse_unknown_keys() -> None:
    params = Params()
    with pytest.raises(ValidationError):
        params.size = 64  # type: ignore[misc]
    assert _problem(stlye_weight=1) == (("stlye_weight",), "Extra inputs are not permitted")


def test_booleans_are_not_numbers() -> None:
    assert _problem(size=True) == (("size",), "Input should be a valid integer")
    assert _problem(style_weight=False)[0] == ("style_weight",)
    assert Params(square=True).square is True


def test_weights_take_numeric_text_and_refuse_non_finite_values() -> None:
    params = Params(style_weight="1e6", tv_weight="1.5e-3")  # type: ignore[arg-type]
    assert (params.style_weight, params.tv_weight) == (1e6, 1.5e-3)
    assert Params(content_weight=2).content_weight == 2.0
    for value in (float("inf"), float("nan"), "inf"):
        assert _problem(style_weight=value) == (
            ("style_weight",),
            "Value error, must be a finite number",
        )
    loc, message = _problem(style_layer_weights=[1, 1, float("nan"), 1, 1])
    assert loc == ("style_layer_weights", 2) and message.endswith("must be a finite number")


def test_layer_names_are_canonical() -> None:
    assert canonical_layer("relu4_2") == "relu4_2"
    assert canonical_layer("conv_4") == "conv2_2"
    assert canonical_layer("relu_16") == "relu5_4"
    assert canonical_layer("pool_5") == "pool5"
    assert len(LAYER_NAMES) == 2 * 16 + 5 and LAYER_NAMES[-1] == "pool5"
    assert all(canonical_layer(flat) == FLAT_ALIASES[flat] for flat in FLAT_ALIASES)
    with pytest.raises(ValueError, match=r"unknown VGG19 layer 'relu4_9' \(did you mean"):
        canonical_layer("relu4_9")
    params = Params(content_layers="conv_4", style_layers=["relu_1", "pool2"])
    assert params.content_layers == ("conv2_2",)
    assert params.style_layers == ("relu1_1", "pool2")


def test_a_layer_list_is_not_empty() -> None:
    assert _problem(style_layers=[]) == (("style_layers",), "Value error, needs at least one layer")


def test_style_layer_weights_one_per_layer() -> None:
    assert Params(style_layer_weights=[2, 1, 1, 1, 0]).layer_weights == (2, 1, 1, 1, 0)
    loc, message = _problem(style_layer_weights=[1, 2])
    assert loc == ()
    assert message.endswith(
        "style_layer_weights has 2 values but style_layers has 5; give one weight per layer"
    )


@pytest.mark.parametrize("values", [{"init": "image"}, {"init_image": "x.png"}])
def test_init_image_goes_with_init_image(values: dict[str, str]) -> None:
    assert _problem(**values)[1].endswith(
        "init: image needs init_image (a path), and init_image needs init: image"
    )
    assert Params(init="image", init_image="x.png").init_image == "x.png"


def test_precision_choices() -> None:
    assert Params(precision="bf16").precision == "bf16"
    assert Params().precision == "fp32"


# --- coarse-to-fine scales ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "scales", "sizes"),
    [
        (100, 3, (100,)),  # 25 and 50 are under 64
        (128, 3, (64, 128)),
        (128, 1, (128,)),
        (512, 4, (64, 128, 256, 512)),
        (512, 6, (64, 128, 256, 512)),
        (200, 2, (100, 200)),
        (127, 2, (127,)),  # 63
    ],
)
def test_scale_sizes_drop_coarse_sizes_under_64(
    size: int, scales: int, sizes: tuple[int, ...]
) -> None:
    params = Params(size=size, scales=scales, steps=10)
    assert params.scale_sizes == sizes
    assert params.total_steps == 10 * len(sizes)
    assert Params(size=size, scales=scales, steps=10, scale_steps=3).total_steps == (
        10 + 3 * (len(sizes) - 1)
    )


# --- presets ----------------------------------------------------------------------------------


def test_pytorch_tutorial_preset() -> None:
    params = Params(**PRESETS["pytorch-tutorial"])
    assert params.content_layers == ("conv2_2",)
    assert params.style_layers == ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1")
    assert params.style_weight == 1e6
    assert params.content_weight == 1.0
    assert (params.size, params.square, params.steps) == (512, True, 300)
    assert params.layer_weights == (1.0,) * 5


# --- the same rules through a manifest: the messages a user sees ------------------------------


def test_wrong_type(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"size": "big"})
    message = _error(path)
    assert message.startswith(f"{path}: params.size: ")
    assert "valid integer" in message
    assert "(got 'big')" in message


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("size", 0, "ge"),
        ("size", 9000, "le"),
        ("steps", -1, "ge"),
        ("steps", 0, "ge"),
        ("style_weight", -1, "ge"),
        ("content_weight", -0.5, "ge"),
    ],
)
def test_out_of_range(write_manifest: WriteManifest, key: str, value: object, kind: str) -> None:
    limit = _bound(key, kind)
    relation = "greater than or equal to" if kind == "ge" else "less than or equal to"
    assert (value < limit) if kind == "ge" else (value > limit)  # type: ignore[operator]
    path = write_manifest(params={key: value})
    assert _error(path) == (
        f"{path}: params.{key}: Input should be {relation} {limit} (got {value!r})"
    )


def test_infinite_weight(tmp_path: Path) -> None:
    path = _write_text(
        tmp_path,
        f"output: out\ncontent: {CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
        "params:\n  style_weight: .inf\n",
    )
    assert _error(path) == f"{path}: params.style_weight: must be a finite number (got inf)"


def test_nan_weight_is_rejected(tmp_path: Path) -> None:
    path = _write_text(
        tmp_path,
        f"output: out\ncontent: {CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
        "params:\n  style_weight: .nan\n",
    )
    message = _error(path)
    assert message.startswith(f"{path}: params.style_weight: ")
    assert "(got nan)" in message


def test_nan_weight_message_says_finite(tmp_path: Path) -> None:
    path = _write_text(
        tmp_path,
        f"output: out\ncontent: {CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
        "params:\n  style_weight: .nan\n",
    )
    assert "must be a finite number" in _error(path)


def test_unknown_layer(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"style_layers": ["relu1_1", "relu9_1"]})
    message = _error(path)
    assert message.startswith(f"{path}: params.style_layers: unknown VGG19 layer 'relu9_1'")
    assert "use names like relu4_2, conv1_1, pool3 or the flat conv_1 ... conv_16" in message


def test_flat_layer_names_are_canonicalized(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(params={"content_layers": "conv_4"}))
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert params.content_layers == ("conv2_2",)


def test_style_layer_weights_must_match_the_layers(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"style_layer_weights": [1, 2]})
    message = _error(path)
    assert "style_layer_weights has 2 values but style_layers has 5" in message


@pytest.mark.parametrize(("value", "shown"), [(".inf", "inf"), (".nan", "nan"), ("-.inf", "-inf")])
def test_non_finite_style_layer_weight(tmp_path: Path, value: str, shown: str) -> None:
    path = _write_text(
        tmp_path,
        f"output: out\ncontent: {CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
        f"params:\n  style_layer_weights: [1, 1, {value}, 1, 1]\n",
    )
    assert _error(path) == (
        f"{path}: params.style_layer_weights.2: must be a finite number (got {shown})"
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("scales", 0, "greater than or equal to 1"),
        ("scales", 7, "less than or equal to 6"),
        ("scale_steps", 0, "greater than or equal to 1"),
        ("adam_average", 1, "less than 1"),
        ("adam_average", -0.1, "greater than or equal to 0"),
    ],
)
def test_scale_and_average_ranges(
    write_manifest: WriteManifest, key: str, value: float, problem: str
) -> None:
    path = write_manifest(params={key: value})
    assert _error(path) == f"{path}: params.{key}: Input should be {problem} (got {value!r})"


def test_scales_must_be_an_integer(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"scales": 2.0})
    assert _error(path).startswith(f"{path}: params.scales: Input should be a valid integer")
