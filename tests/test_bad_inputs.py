"""Bad inputs through the `nst-batch` command: images and weights files.

Every bad input is built inside its test (tmp_path), from the bundled real images, and run
through the click command. A bad image fails only its own tasks (exit 1, a `failed` row whose
error names the file and the problem) while the good image beside it is stylized; an odd but
usable image (16-bit, CMYK, palette with transparency, grayscale, EXIF-rotated) is stylized
into a plain RGB output. A bad weights file stops the run with exit 2 and one sentence naming
the file, before anything is written (no output folder). Bad manifests, which exit 2 the same
way, are one table in test_manifest.py.

Galleries are tiny (64 px, 4 steps).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import Result
from conftest import CONTENT, STYLE, invoke
from PIL import Image

from nst_batch.results import ResultRow, read_rows

STEPS = 4
GOOD = CONTENT / "chelsea.png"  # 451x300
GOOD_OUT = (64, 43)  # its output at size 64: longest side 64, aspect kept
STARRY = STYLE / "starry_night.jpg"
ORIENTATION = 0x0112  # EXIF tag

Builder = Callable[[Path], Path]
Writer = Callable[..., Path]


# --- helpers ----------------------------------------------------------------------------------


def _run(
    write_manifest: Writer, content: list[Path], style: list[Path], **fields: Any
) -> tuple[Result, Path]:
    """Run a gallery of these images at 64 px and STEPS steps; returns (result, output folder)."""
    params = {"steps": STEPS, **fields.pop("params", {})}
    manifest = write_manifest(
        content=[str(p) for p in content], style=[str(p) for p in style], params=params, **fields
    )
    return invoke(manifest), manifest.parent / "out"


def _rows(out: Path) -> dict[tuple[str, str], ResultRow]:
    rows = read_rows(out / "results.csv")
    by_task = {(r.content, r.style): r for r in rows}
    assert len(by_task) == len(rows), rows  # one attempt per task
    return by_task


def _assert_done(row: ResultRow, out: Path, size: tuple[int, int]) -> Image.Image:
    """A done row with finite losses, and its output a valid RGB JPEG of `size`; returns it."""
    assert row.status == "done", row.error
    assert row.error == ""
    assert row.steps == STEPS
    losses = (row.content_loss, row.style_loss, row.tv_loss, row.total_loss)
    assert all(v is not None and math.isfinite(v) for v in losses), row
    path = out / row.output
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", size)
        image.load()
        return image.copy()


def _assert_failed(row: ResultRow, out: Path, bad: Path, fragments: list[str]) -> None:
    assert row.status == "failed"
    assert f"Cannot use image '{bad}'" in row.error
    for fragment in fragments:
        assert fragment in row.error
    assert row.steps is None and row.content_loss is None
    assert not (out / row.output).exists()


def _assert_nothing_of(out: Path, bad: Path) -> None:
    """No output or loss curve of the bad image's tasks, and no temporary of a failed save."""
    stray = [p for p in out.iterdir() if p.name.startswith((f"{bad.stem}__", f".{bad.stem}__"))]
    stray += list(out.rglob("*.tmp"))
    assert not stray, stray


def _gray(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.convert("L").resize(size, Image.Resampling.LANCZOS), np.float64)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _chelsea() -> Image.Image:
    with Image.open(GOOD) as image:
        return image.convert("RGB")


def _mode_of(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


# --- bad images, built from real ones ---------------------------------------------------------


def _zero_bytes(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def _truncated_jpeg(folder: Path) -> Path:
    data = (CONTENT / "rocket.jpg").read_bytes()
    path = folder / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_named_jpg(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n")
    return path


def _tiny(folder: Path) -> Path:
    path = folder / "tiny.png"
    _chelsea().resize((20, 20)).save(path)
    return path


def _png_header_only(folder: Path) -> Path:
    """A 67-byte PNG whose header declares 100000 x 100000 pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = folder / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


BAD_CONTENT: dict[str, tuple[Builder, list[str]]] = {
    "zero bytes": (_zero_bytes, ["the file is empty (0 bytes)"]),
    "truncated jpeg": (_truncated_jpeg, ["it is corrupt or truncated"]),
    "text named .jpg": (_text_named_jpg, ["it is not an image Pillow can read"]),
    "tiny 20x20": (_tiny, ["it is 20x20 pixels", "each side must be at least 32 pixels"]),
    "bomb header": (_png_header_only, ["larger than the limit of 64,000,000 pixels"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_CONTENT))
def test_bad_content_fails_its_task_and_the_good_one_runs(
    write_manifest: Writer, tmp_path: Path, case: str
) -> None:
    build, fragments = BAD_CONTENT[case]
    bad = build(tmp_path)

    result, out = _run(write_manifest, [bad, GOOD], [STARRY])

    assert result.exit_code == 1, result.output
    assert f"FAILED {bad.stem} x starry_night: Cannot use image '{bad}'" in result.stderr
    assert "2 tasks: 1 done, 0 skipped, 1 failed in " in result.stdout
    rows = _rows(out)
    assert set(rows) == {(bad.stem, "starry_night"), ("chelsea", "starry_night")}
    _assert_failed(rows[(bad.stem, "starry_night")], out, bad, fragments)
    _assert_done(rows[("chelsea", "starry_night")], out, GOOD_OUT)
    _assert_nothing_of(out, bad)


BAD_STYLE: dict[str, tuple[Builder, list[str]]] = {
    "zero bytes": (_zero_bytes, ["the file is empty (0 bytes)"]),
    "truncated jpeg": (_truncated_jpeg, ["it is corrupt or truncated"]),
    "tiny 20x20": (_tiny, ["it is 20x20 pixels", "each side must be at least 32 pixels"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_STYLE))
def test_bad_style_fails_its_task_and_the_good_one_runs(
    write_manifest: Writer, tmp_path: Path, case: str
) -> None:
    build, fragments = BAD_STYLE[case]
    bad = build(tmp_path)

    result, out = _run(write_manifest, [GOOD], [bad, STARRY])

    assert result.exit_code == 1, result.output
    assert f"FAILED chelsea x {bad.stem}: Cannot use image '{bad}'" in result.stderr
    assert "2 tasks: 1 done, 0 skipped, 1 failed in " in result.stdout
    rows = _rows(out)
    assert set(rows) == {("chelsea", bad.stem), ("chelsea", "starry_night")}
    _assert_failed(rows[("chelsea", bad.stem)], out, bad, fragments)
    _assert_done(rows[("chelsea", "starry_night")], out, GOOD_OUT)
    _assert_nothing_of(out, bad)


def _small_copy(source: Path, folder: Path, size: tuple[int, int]) -> Path:
    path = folder / f"small_{source.stem}.png"
    with Image.open(source) as image:
        image.convert("RGB").resize(size).save(path)
    return path


@pytest.mark.slow
def test_image_over_max_pixels_fails_its_task(write_manifest: Writer, tmp_path: Path) -> None:
    bomb = CONTENT / "coffee.png"  # a real 600x400 PNG: 240,000 pixels
    good = _small_copy(GOOD, tmp_path, (96, 64))  # 6,144 pixels: under the limit
    style = _small_copy(STARRY, tmp_path, (96, 60))

    result, out = _run(write_manifest, [bomb, good], [style], max_pixels=10_000)

    assert result.exit_code == 1, result.output
    assert f"FAILED coffee x small_starry_night: Cannot use image '{bomb}'" in result.stderr
    rows = _rows(out)
    _assert_failed(
        rows[("coffee", "small_starry_night")],
        out,
        bomb,
        ["it is larger than the limit of 10,000 pixels", "downscale it"],
    )
    _assert_done(rows[("small_chelsea", "small_starry_night")], out, (64, 43))


def test_image_over_max_pixels_message_names_the_key_and_the_size(
    write_manifest: Writer, tmp_path: Path
) -> None:
    bomb = CONTENT / "coffee.png"
    style = _small_copy(STARRY, tmp_path, (96, 60))

    result, out = _run(write_manifest, [bomb], [style], max_pixels=10_000)

    assert result.exit_code == 1, result.output
    error = _rows(out)[("coffee", "small_starry_night")].error
    assert "600x400" in error
    assert "max_pixels" in error


@pytest.mark.slow
def test_content_too_thin_after_resizing_fails_with_the_minimum_size(
    write_manifest: Writer, tmp_path: Path
) -> None:
    thin = tmp_path / "panorama.png"
    _chelsea().resize((640, 40)).save(thin)  # passes the 32 px check on the file itself

    result, out = _run(write_manifest, [thin], [STARRY])

    assert result.exit_code == 1, result.output
    row = _rows(out)[("panorama", "starry_night")]
    assert row.status == "failed"
    assert str(thin) in row.error
    assert "32 pixels" in row.error
    assert "internal error" not in row.error


# --- odd but usable images: stylized into plain RGB -------------------------------------------


def _sixteen_bit(folder: Path) -> tuple[Path, Image.Image]:
    gray = np.asarray(_chelsea().convert("L"), np.float64)
    full = np.round((gray - gray.min()) * 65535 / (gray.max() - gray.min())).astype(np.uint16)
    assert (full.min(), full.max()) == (0, 65535)  # the full 16-bit range
    path = folder / "sixteen.png"
    Image.fromarray(full).save(path)
    assert _mode_of(path) == "I;16"
    return path, Image.fromarray((full // 257).astype(np.uint8))


def _cmyk(folder: Path) -> tuple[Path, Image.Image]:
    path = folder / "cmyk.jpg"
    _chelsea().convert("CMYK").save(path, quality=95)
    assert _mode_of(path) == "CMYK"
    return path, _chelsea()


def _palette_with_transparency(folder: Path) -> tuple[Path, Image.Image]:
    path = folder / "palette.png"
    palette = _chelsea().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    colours = np.array(palette.getpalette() or [], np.float64)[: 16 * 3].reshape(16, 3)
    darkest = int((colours @ [0.299, 0.587, 0.114]).argmin())
    palette.save(path, transparency=darkest)  # the darkest colour is transparent: white
    with Image.open(path) as image:
        assert image.mode == "P" and image.info["transparency"] == darkest
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return path, Image.alpha_composite(white, rgba).convert("RGB")


def _grayscale(folder: Path) -> tuple[Path, Image.Image]:
    path = folder / "gray.png"
    _chelsea().convert("L").save(path)
    assert _mode_of(path) == "L"
    return path, _chelsea().convert("L")


USABLE: dict[str, Callable[[Path], tuple[Path, Image.Image]]] = {
    "16-bit png": _sixteen_bit,
    "cmyk jpeg": _cmyk,
    "palette png with transparency": _palette_with_transparency,
    "grayscale": _grayscale,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(USABLE))
def test_odd_content_mode_is_stylized(write_manifest: Writer, tmp_path: Path, case: str) -> None:
    path, expected = USABLE[case](tmp_path)

    result, out = _run(write_manifest, [path], [STARRY])

    assert result.exit_code == 0, result.output
    assert "1 tasks: 1 done, 0 skipped, 0 failed in " in result.stdout
    output = _assert_done(_rows(out)[(path.stem, "starry_night")], out, GOOD_OUT)
    # 4 steps from the content keep its picture (correlation about 0.99): a clipped 16-bit
    # (white), inverted CMYK or transparency shown black (0.1) would not match the image as it
    # should look.
    assert _correlation(_gray(output, GOOD_OUT), _gray(expected, GOOD_OUT)) > 0.8


@pytest.mark.slow
def test_odd_style_modes_are_used(write_manifest: Writer, tmp_path: Path) -> None:
    sixteen, _ = _sixteen_bit(tmp_path)
    cmyk, _ = _cmyk(tmp_path)

    result, out = _run(write_manifest, [GOOD], [sixteen, cmyk])

    assert result.exit_code == 0, result.output
    rows = _rows(out)
    for style in ("sixteen", "cmyk"):
        _assert_done(rows[("chelsea", style)], out, GOOD_OUT)


@pytest.mark.slow
def test_exif_rotated_photo_gives_an_upright_output(write_manifest: Writer, tmp_path: Path) -> None:
    upright = _chelsea().crop((100, 0, 300, 300))  # 200x300, portrait
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 300x200, as the camera wrote it
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    photo = tmp_path / "photo.jpg"
    stored.save(photo, quality=95, exif=exif.tobytes())
    with Image.open(photo) as image:
        assert image.size == (300, 200) and image.getexif()[ORIENTATION] == 6

    result, out = _run(write_manifest, [photo], [STARRY])

    assert result.exit_code == 0, result.output
    portrait = (43, 64)  # the upright 200x300 at size 64, not the stored 64x43
    output = _assert_done(_rows(out)[("photo", "starry_night")], out, portrait)
    assert output.getexif().get(ORIENTATION, 1) == 1  # no viewer rotates it again
    gray = _gray(output, portrait)
    right = _correlation(gray, _gray(upright, portrait))
    upside_down = _correlation(gray, _gray(upright.rotate(180), portrait))  # orientation 8
    assert right > 0.8 and right > upside_down + 0.5, (right, upside_down)


# --- bad weights files: exit 2, one sentence, nothing written ---------------------------------


class _Payload:
    """Unpickling this creates `marker`: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _run_weights(write_manifest: Writer, tmp_path: Path, weights: Path) -> Result:
    manifest = write_manifest(weights=weights.name)
    before = sorted(tmp_path.rglob("*"))
    result = invoke(manifest)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: weights file {weights}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert sorted(tmp_path.rglob("*")) == before
    return result


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())


def _truncated_torch_file(path: Path) -> None:
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "write", [_random_bytes, _truncated_torch_file], ids=["random-bytes", "truncated-torch-file"]
)
def test_corrupt_weights(
    write_manifest: Writer, tmp_path: Path, write: Callable[[Path], None]
) -> None:
    weights = tmp_path / "vgg.pth"
    write(weights)

    result = _run_weights(write_manifest, tmp_path, weights)

    assert "is corrupt or not a torch file; re-create it" in result.stderr


def test_wrong_shapes_weights(write_manifest: Writer, tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pth"
    torch.save({"0.weight": torch.zeros(32, 3, 3, 3), "0.bias": torch.zeros(32)}, weights)

    result = _run_weights(write_manifest, tmp_path, weights)

    assert (
        "conv1_1 has weight (32, 3, 3, 3) and bias (32,), expected (64, 3, 3, 3) and (64,); "
        "these are not VGG19 weights"
    ) in result.stderr


def test_state_dict_of_another_network(write_manifest: Writer, tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pth"
    torch.save({"fc.weight": torch.zeros(10, 4)}, weights)

    result = _run_weights(write_manifest, tmp_path, weights)

    assert "has no tensor '0.weight' (conv1_1)" in result.stderr
    assert "vgg19().features layout" in result.stderr


def test_a_tensor_instead_of_a_state_dict(write_manifest: Writer, tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pth"
    torch.save(torch.zeros(3), weights)

    result = _run_weights(write_manifest, tmp_path, weights)

    assert "holds a Tensor, not a state dict" in result.stderr


def test_pickle_payload_is_refused_and_never_runs(write_manifest: Writer, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    weights = tmp_path / "vgg.pth"
    torch.save({"0.weight": _Payload(marker)}, weights)

    result = _run_weights(write_manifest, tmp_path, weights)

    assert "holds Python objects, not only tensors, and was refused" in result.stderr
    assert not marker.exists()
    # the payload is live: an unsafe load runs it
    torch.load(weights, weights_only=False)
    assert marker.exists()
    os.remove(marker)
