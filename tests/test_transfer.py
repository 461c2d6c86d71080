"""`nst_batch.transfer` with bad arguments: one sentence naming the argument and the fix,
refused before any weights are loaded; and PIL images in any mode, taken as files are."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONTENT, STYLE
from PIL import Image

import nst_batch
from nst_batch.params import Params

CHELSEA = CONTENT / "chelsea.png"
STARRY = STYLE / "starry_night.jpg"
SCREAM = STYLE / "the_scream.jpg"
SMALL = {"size": 48, "steps": 2, "device": "cpu"}  # chelsea becomes 48x32
ORIENTATION = 0x0112


def run(content: object, style: object, **kwargs: object) -> Image.Image:
    return nst_batch.transfer(content, style, **{**SMALL, **kwargs})  # type: ignore[arg-type]


# -- PIL images in any mode --------------------------------------------------------------


def _start_image(path: Path, mode: str) -> Path:
    """A start image in `mode`, saved turned by EXIF orientation 6 (rotate 90 to show)."""
    image = Image.open(SCREAM).convert("RGB").resize((32, 48))
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    image = image.convert(mode)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    image.save(path, exif=exif.tobytes())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["P", "L", "RGBA", "RGB"])
def test_an_init_image_in_any_mode_starts_as_its_file_does(tmp_path: Path, mode: str) -> None:
    """A PIL init_image is converted as load_image converts its file: mode, EXIF
    orientation, transparency over white (P, L, RGBA failed; RGB skipped the orientation)."""
    path = _start_image(tmp_path / f"start_{mode}.png", mode)
    with Image.open(path) as image:
        assert image.mode == mode
        from_image = run(CHELSEA, STARRY, init="image", init_image=image)
    from_path = run(CHELSEA, STARRY, init="image", init_image=path)
    assert from_image.mode == "RGB" and from_image.size == (48, 32)
    assert np.array_equal(np.asarray(from_image), np.asarray(from_path))


@pytest.mark.slow
def test_content_and_style_images_in_any_mode_are_taken_as_files(tmp_path: Path) -> None:
    Image.open(CHELSEA).convert("P").save(tmp_path / "content.png")
    Image.open(STARRY).convert("LA").save(tmp_path / "style.png")
    with (
        Image.open(tmp_path / "content.png") as content,
        Image.open(tmp_path / "style.png") as style,
    ):
        from_images = run(content, style)
    from_paths = run(tmp_path / "content.png", tmp_path / "style.png")
    assert from_images.mode == "RGB" and from_images.size == (48, 32)
    assert np.array_equal(np.asarray(from_images), np.asarray(from_paths))


# -- style and blends --------------------------------------------------------------------


@pytest.mark.slow
def test_a_blend_of_bare_images_weighs_them_equally() -> None:
    """[a, a] is [(a, 1), (a, 1)]: the same Grams as `a` alone, so the same pixels."""
    twice = run(CHELSEA, [STARRY, Image.open(STARRY)])
    assert twice.mode == "RGB" and twice.size == (48, 32)
    assert np.array_equal(np.asarray(twice), np.asarray(run(CHELSEA, STARRY)))
    mixed = run(CHELSEA, [(STARRY, 3), SCREAM])
    assert mixed.mode == "RGB" and mixed.size == (48, 32)


def test_an_empty_blend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^style: the blend is empty; give a style image"):
        run(CHELSEA, [])


@pytest.mark.parametrize(
    ("blend", "shown"),
    [
        ([(STARRY, 1.0), (SCREAM, -1.0)], "style[1]: its weight is -1.0"),  # they sum to 0
        ([(STARRY, 2), (SCREAM, -1)], "style[1]: its weight is -1"),
        ([(STARRY, 0), (SCREAM, 1)], "style[0]: its weight is 0"),
        ([(STARRY, math.nan)], "style[0]: its weight is nan"),
        ([(STARRY, 1), (SCREAM, math.inf)], "style[1]: its weight is inf"),
    ],
)
def test_blend_weights_must_be_positive_and_finite(blend: list, shown: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{shown}; blend weights must be positive")):
        run(CHELSEA, blend)


def test_a_blend_takes_images_and_numbers_only() -> None:
    with pytest.raises(TypeError, match=r"^style\[1\]: expected an image .* got 3\.0; a blend is"):
        run(CHELSEA, (STARRY, 3.0))  # a pair not in a list
    with pytest.raises(TypeError, match=r"^style\[0\]: its weight must be a number, got '3'"):
        run(CHELSEA, [(STARRY, "3")])
    with pytest.raises(TypeError, match=r"^style: expected a path, a PIL image or a blend"):
        run(CHELSEA, None)
    with pytest.raises(TypeError, match=r"^content: expected a path or a PIL image, got int"):
        run(3, STARRY)
    with pytest.raises(TypeError, match=r"^init_image: expected a path or a PIL image, got int"):
        run(CHELSEA, STARRY, init="image", init_image=3)


# -- numbers and settings ----------------------------------------------------------------

NUMERIC = [
    name
    for name, info in Params.model_fields.items()
    if re.search(r"\b(int|float)\b", str(info.annotation))
]


def test_every_numeric_keyword_is_checked() -> None:
    assert {"size", "steps", "style_weight", "content_weight", "tolerance"} <= set(NUMERIC)
    assert {"learning_rate", "style_layer_weights", "adam_average"} <= set(NUMERIC)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", NUMERIC)
def test_non_finite_numbers_are_refused_by_name(name: str, value: float) -> None:
    given: object = [1, 1, value, 1, 1] if name == "style_layer_weights" else value
    with pytest.raises(ValueError, match=rf"^{name}(\.2)?: .*\(got {value!r}\)$"):
        run(CHELSEA, STARRY, **{name: given})


def test_settings_are_refused_in_sentences_not_pydantics_dump() -> None:
    with pytest.raises(ValueError) as caught:
        run(CHELSEA, STARRY, size=10, stlye_weight=3, tolerance="x")
    assert str(caught.value).splitlines() == [
        "size: Input should be greater than or equal to 32 (got 10)",
        "tolerance: Input should be 'auto' or a valid number (got 'x')",
        "unknown keyword argument 'stlye_weight' (did you mean 'style_weight'?)",
    ]
    with pytest.raises(ValueError, match=r"^style_weight: must be a finite number \(got nan\)$"):
        run(CHELSEA, STARRY, style_weight=math.nan)
    with pytest.raises(ValueError, match=r"^init: image needs init_image"):
        run(CHELSEA, STARRY, init="image")


@pytest.mark.parametrize("every", [0, -1])
def test_report_every_below_one_is_refused(every: int) -> None:
    with pytest.raises(ValueError, match=rf"^report_every: {every} steps .*; give 1 or more"):
        run(CHELSEA, STARRY, report_every=every, on_progress=print)


def test_report_every_and_on_progress_have_their_types() -> None:
    with pytest.raises(TypeError, match=r"^report_every: expected a whole number of steps"):
        run(CHELSEA, STARRY, report_every=2.5)
    with pytest.raises(TypeError, match=r"^on_progress: expected a function"):
        run(CHELSEA, STARRY, on_progress=3)


# -- devices -----------------------------------------------------------------------------


def _cuda_devices(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cuda_without_a_cuda_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_devices(monkeypatch, 0)
    with pytest.raises(
        ValueError, match=r"^device 'cuda': this machine has no CUDA device; use 'cpu'$"
    ):
        run(CHELSEA, STARRY, device="cuda")
    _cuda_devices(monkeypatch, 1)
    message = r"^device 'cuda:1': this machine has 1 CUDA device; use 'cuda:0' or 'cpu'$"
    with pytest.raises(ValueError, match=message):
        run(CHELSEA, STARRY, device=torch.device("cuda:1"))


@pytest.mark.parametrize(
    ("device", "error", "message"),
    [
        ("meta", ValueError, r"^device 'meta': nst-batch stylizes on 'cpu', 'cuda', 'cuda:N'"),
        ("gpu", ValueError, r"^device 'gpu': torch knows no such device; use 'cpu'"),
        (0, TypeError, r"^device: expected 'cpu', 'cuda', 'cuda:N', 'mps', a torch.device"),
    ],
)
def test_devices_that_do_not_stylize_are_refused(device: object, error: type, message: str):
    with pytest.raises(error, match=message):
        run(CHELSEA, STARRY, device=device)


# -- closed images -----------------------------------------------------------------------


def test_a_closed_image_is_named_closed() -> None:
    closed = Image.open(CHELSEA)
    closed.load()
    closed.close()
    with pytest.raises(ValueError, match=r"^content: the PIL image is closed; pass an open one"):
        run(closed, STARRY)
    with Image.open(STARRY) as never_loaded:
        pass
    with pytest.raises(ValueError, match=r"^style: the PIL image is closed"):
        run(CHELSEA, never_loaded)
    with pytest.raises(ValueError, match=r"^style\[1\]: the PIL image is closed"):
        run(CHELSEA, [(STARRY, 1), (closed, 1)])
    with pytest.raises(ValueError, match=r"^init_image: the PIL image is closed"):
        run(CHELSEA, STARRY, init="image", init_image=closed)
