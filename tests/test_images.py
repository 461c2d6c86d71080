"""Tests of nst_batch.images on the sample photographs and odd files built from them."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_unprivileged
from PIL import Image, ImageFile

from nst_batch import images, layout
from nst_batch.images import (
    MIN_SIDE,
    ImageError,
    load_image,
    read_metadata,
    resize,
    save_image,
    scaled_style_size,
    target_size,
    to_image,
    to_rgb,
    to_tensor,
)

IMAGES = Path(__file__).resolve().parent.parent / "examples" / "images"
CHELSEA = IMAGES / "content" / "chelsea.png"  # 451x300, sRGB profile
ROCKET = IMAGES / "content" / "rocket.jpg"  # 640x427, Adobe RGB (1998) profile
SAMPLES = sorted((IMAGES / "content").iterdir()) + sorted((IMAGES / "style").glob("*.jpg"))


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def _chelsea() -> Image.Image:
    return _open(CHELSEA).convert("RGB")


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return float(diff.mean())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- loading real images ---------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_loads_every_sample_as_plain_rgb(path: Path) -> None:
    with Image.open(path) as header:
        size = header.size
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == size
    assert image.info == {}  # no stale ICC profile or EXIF travels on to saved outputs
    assert np.asarray(image).max() > 200  # really decoded, not a blank canvas


def test_adobe_rgb_photo_is_converted_to_srgb() -> None:
    """Known values: Adobe RGB's wider green and its 2.2 gamma shift dark saturated pixels
    in sRGB (a dark blue sky, a dark rock) and leave mid tones nearly as they are."""
    original = _open(ROCKET).convert("RGB")
    loaded = load_image(ROCKET)
    # (x, y): (the file's values, taken as sRGB), (the values in sRGB)
    known = {
        (10, 10): ((20, 36, 61), (0, 31, 59)),
        (320, 200): ((125, 120, 101), (128, 121, 100)),
        (600, 400): ((23, 28, 32), (13, 21, 26)),
    }
    for xy, (raw, srgb) in known.items():
        assert original.getpixel(xy) == raw
        assert all(abs(a - b) <= 1 for a, b in zip(loaded.getpixel(xy), srgb, strict=True)), xy
    assert _mean_abs_diff(loaded, original) > 1  # the profile made a visible difference


@pytest.mark.parametrize("transparent", [False, True])
def test_a_palette_image_with_a_profile_is_colour_managed(tmp_path: Path, transparent) -> None:
    """The same picture and profile load alike as a palette PNG and as RGB(A)."""
    icc = _open(ROCKET).info["icc_profile"]
    palette = _open(ROCKET).convert("RGB").quantize(64)
    palette.info = {"transparency": 0} if transparent else {}
    direct = palette.convert("RGBA" if transparent else "RGB")
    palette.save(tmp_path / "palette.png", icc_profile=icc, **palette.info)
    direct.save(tmp_path / "direct.png", icc_profile=icc)
    as_palette, as_direct = (
        load_image(tmp_path / "palette.png"),
        load_image(tmp_path / "direct.png"),
    )
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert as_palette.tobytes() == as_direct.tobytes()
    assert _mean_abs_diff(as_direct, direct.convert("RGB")) > 1  # the profile was applied


def test_srgb_profile_leaves_pixels_unchanged() -> None:
    assert load_image(CHELSEA).tobytes() == _chelsea().tobytes()


# --- odd modes --------------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = _chelsea().convert("L")
    gray.save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.mode == "RGB"
    assert loaded.tobytes() == gray.convert("RGB").tobytes()


def test_gray_alpha_is_composited_over_white(tmp_path: Path) -> None:
    gray = _chelsea().convert("L")
    alpha = Image.new("L", gray.size, 255)
    alpha.paste(0, (0, 0, 100, gray.height))  # left 100 columns fully transparent
    Image.merge("LA", (gray, alpha)).save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.getpixel((50, 150)) == (255, 255, 255)
    value = gray.getpixel((300, 150))
    assert loaded.getpixel((300, 150)) == (value, value, value)


def test_rgba_half_transparent_is_blended_with_white(tmp_path: Path) -> None:
    rgb = _chelsea()
    rgba = rgb.copy()
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    expected = np.asarray(rgb, dtype=np.float64) * 128 / 255 + 255 * 127 / 255
    assert loaded.mode == "RGB"
    assert np.abs(np.asarray(loaded) - expected).max() <= 1


def test_palette_transparency_is_white(tmp_path: Path) -> None:
    palette = _chelsea().quantize(64)
    hidden = palette.getpixel((0, 0))
    palette.save(tmp_path / "p.png", transparency=hidden)
    loaded = load_image(tmp_path / "p.png")
    indices = np.asarray(palette)
    pixels = np.asarray(loaded)
    assert (pixels[indices == hidden] == 255).all()
    shown = np.asarray(palette.convert("RGB"))[indices != hidden]
    assert (pixels[indices != hidden] == shown).all()


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    rgb = _chelsea()
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert _open(tmp_path / "cmyk.jpg").mode == "CMYK"
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert loaded.mode == "RGB"
    assert loaded.size == rgb.size
    assert _mean_abs_diff(loaded, rgb) < 3


def _full_range_gray() -> np.ndarray:
    gray = np.asarray(_chelsea().convert("L"), dtype=np.float64)
    return np.round((gray - gray.min()) * 255 / (gray.max() - gray.min())).astype(np.uint8)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = _full_range_gray()
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as header:
        assert header.mode.startswith("I;16")
        assert header.getextrema() == (0, 65535)
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.getextrema() == ((0, 255),) * 3
    assert (np.asarray(loaded)[..., 0] == levels).all()


@pytest.mark.parametrize(
    ("mode", "scale"), [("I", 257), ("F", 1 / 255)], ids=["32-bit-int", "float"]
)
def test_wide_tiff_modes_are_scaled(tmp_path: Path, mode: str, scale: float) -> None:
    levels = _full_range_gray()
    dtype = np.int32 if mode == "I" else np.float32
    Image.fromarray((levels.astype(np.float64) * scale).astype(dtype)).save(tmp_path / "wide.tif")
    assert _open(tmp_path / "wide.tif").mode == mode
    loaded = load_image(tmp_path / "wide.tif")
    assert (np.asarray(loaded)[..., 1] == levels).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = _chelsea()  # 451x300
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright.save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (300, 451)
    assert _mean_abs_diff(loaded, upright.transpose(Image.Transpose.ROTATE_270)) < 2


# --- unusable files ---------------------------------------------------------------------------


def _load_error(path: Path, **kwargs: int) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _load_error(tmp_path / "nowhere.png")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert "folder" in _load_error(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").touch()
    assert "empty (0 bytes)" in _load_error(tmp_path / "empty.png")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not a picture at all\n" * 20)
    assert "not an image" in _load_error(tmp_path / "notes.jpg")


def _half_jpeg(tmp_path: Path) -> Path:
    data = ROCKET.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "half.jpg"


def test_truncated_jpeg(tmp_path: Path) -> None:
    assert "corrupt or truncated" in _load_error(_half_jpeg(tmp_path))


def test_truncated_jpeg_is_an_error_even_if_pillow_was_told_to_accept_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "truncated" in _load_error(_half_jpeg(tmp_path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_corrupt_png_checksum(tmp_path: Path) -> None:
    data = bytearray(CHELSEA.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    assert "corrupt or truncated" in _load_error(tmp_path / "flipped.png")


def test_more_pixels_than_allowed(tmp_path: Path) -> None:
    assert "limit of 100,000 pixels" in _load_error(CHELSEA, max_pixels=100_000)
    assert load_image(CHELSEA, max_pixels=451 * 300).size == (451, 300)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, then a few kB of zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes(3 * width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("max_pixels", [images.DEFAULT_MAX_PIXELS, 5_000_000])
def test_bomb_header_is_refused_before_decoding(tmp_path: Path, max_pixels: int) -> None:
    # 10 billion pixels declared: decoding would need 30 GB, so this must fail on the header.
    (tmp_path / "bomb.png").write_bytes(_png_bomb(100_000, 100_000))
    assert f"{max_pixels:,} pixels" in _load_error(tmp_path / "bomb.png", max_pixels=max_pixels)
    assert max_pixels != Image.MAX_IMAGE_PIXELS  # Pillow's own limit is restored


def test_too_small(tmp_path: Path) -> None:
    _chelsea().resize((20, 20)).save(tmp_path / "tiny.png")
    message = _load_error(tmp_path / "tiny.png")
    assert "20x20" in message
    assert f"at least {MIN_SIDE} pixels" in message


def test_smallest_allowed_size_loads(tmp_path: Path) -> None:
    _chelsea().resize((MIN_SIDE, 200)).save(tmp_path / "narrow.png")
    assert load_image(tmp_path / "narrow.png").size == (MIN_SIDE, 200)


# --- sizes ------------------------------------------------------------------------------------


def test_target_size() -> None:
    assert target_size(451, 300, 256) == (256, 170)  # 170.29
    assert target_size(300, 451, 256) == (170, 256)
    assert target_size(640, 427, 512) == (512, 342)  # 341.6
    assert target_size(200, 50, 10) == (10, 3)  # 2.5 rounds up
    assert target_size(512, 512, 300) == (300, 300)
    assert target_size(451, 300, 256, square=True) == (256, 256)
    assert target_size(10_000, 1, 100) == (100, 1)  # never 0
    with pytest.raises(ValueError, match=r"sizes must be positive, got 0x300 -> 256"):
        target_size(0, 300, 256)


def test_scaled_style_size() -> None:
    assert scaled_style_size((1024, 640), 512, 1.0) == (512, 320)  # longest side = size
    assert scaled_style_size((1024, 640), 512, 0.5) == (256, 160)
    assert scaled_style_size((640, 1024), 300, 2.0) == (375, 600)
    assert scaled_style_size((1024, 640), 512, 0.01) == (51, MIN_SIDE)  # aspect kept
    with pytest.raises(ValueError, match=r"style_scale must be a positive number, got 0\.0"):
        scaled_style_size((1024, 640), 512, 0.0)


def test_resize_hits_exact_size() -> None:
    scream = load_image(IMAGES / "style" / "the_scream.jpg")  # 1200x1528
    small = resize(scream, (40, 51))
    assert (small.size, small.mode) == ((40, 51), "RGB")
    plain = scream.resize((40, 51), Image.Resampling.LANCZOS)
    assert _mean_abs_diff(small, plain) < 2  # the reducing step does not change the look
    assert resize(_chelsea(), (1000, 17)).size == (1000, 17)
    flat = Image.new("RGB", (300, 200), (12, 34, 56))
    assert resize(flat, (123, 45)).getextrema() == ((12, 12), (34, 34), (56, 56))
    with pytest.raises(ValueError, match="size must be positive, got 0x10"):
        resize(flat, (0, 10))


# --- tensors ----------------------------------------------------------------------------------


def test_to_tensor_layout_and_values() -> None:
    image = _chelsea()
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 300, 451)
    assert tensor.dtype == torch.float32
    assert tensor.min() >= 0 and tensor.max() <= 1
    assert tensor[0, :, 5, 7].mul(255).round().tolist() == np.asarray(image)[5, 7].tolist()
    with pytest.raises(ValueError, match="RGB"):
        to_tensor(image.convert("L"))


def test_tensor_round_trip_is_exact_for_8_bit() -> None:
    image = _chelsea()
    assert to_image(to_tensor(image)).tobytes() == image.tobytes()
    assert to_image(to_tensor(image)[0]).tobytes() == image.tobytes()


def test_to_image_clamps_and_rounds() -> None:
    values = torch.tensor([-1.0, 0.999, 2.0, 0.5 / 255 + 1e-4, 0.4 / 255])
    tensor = values.expand(3, 1, 5).clone()
    image = to_image(tensor)
    assert (image.size, image.mode) == ((5, 1), "RGB")
    assert np.asarray(image)[0, :, 0].tolist() == [0, 255, 255, 1, 0]
    assert to_image(tensor.to(torch.float16)).tobytes() == image.tobytes()


def test_to_image_rejects_bad_input() -> None:
    tensor = torch.rand(1, 3, 4, 4)
    tensor[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        to_image(tensor)
    with pytest.raises(ValueError, match="shape"):
        to_image(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        to_image(torch.rand(4, 4))
    with pytest.raises(TypeError, match=r"expected a floating-point tensor, got torch\.uint8"):
        to_image(torch.zeros(3, 4, 4, dtype=torch.uint8))


# --- saving -----------------------------------------------------------------------------------

METADATA = {"content": "chelsea.png", "style": "Turner — The Shipwreck", "steps": "300"}


@pytest.mark.parametrize(
    ("name", "fmt", "tolerance"),
    [("out.png", "PNG", 0), ("out.jpg", "JPEG", 2), ("OUT.JPEG", "JPEG", 2), ("o.webp", "WEBP", 3)],
)
def test_save_round_trip(tmp_path: Path, name: str, fmt: str, tolerance: float) -> None:
    image = _chelsea()
    target = tmp_path / "gallery" / "nested" / name
    save_image(image, target, metadata=METADATA)
    assert os.listdir(target.parent) == [name]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with Image.open(target) as saved:
        assert saved.format == fmt
    loaded = load_image(target)
    assert loaded.size == image.size
    assert _mean_abs_diff(loaded, image) <= tolerance
    assert read_metadata(target) == METADATA


def test_save_replaces_existing_file_and_without_metadata(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    save_image(_chelsea(), target)
    assert load_image(target).size == (451, 300)
    assert read_metadata(target) == {}


def test_read_metadata_of_foreign_or_bad_files(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello")
    assert read_metadata(IMAGES / "style" / "starry_night.jpg") == {}
    assert read_metadata(tmp_path / "notes.jpg") == {}
    assert read_metadata(tmp_path / "missing.png") == {}


def test_unsupported_extension(tmp_path: Path) -> None:
    for name in ("out.gif", "out"):
        with pytest.raises(ValueError, match=r"\.jpeg, \.jpg, \.png, \.webp"):
            save_image(_chelsea(), tmp_path / name)
    assert os.listdir(tmp_path) == []


def _save_that_fails_midway(error: BaseException):
    def save(self: Image.Image, fp: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG half of an image")
        fp.flush()
        raise error

    return save


def test_disk_full_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(error))
    with pytest.raises(ImageError) as caught:
        save_image(_chelsea(), target)
    assert str(target) in str(caught.value)
    assert "disk full" in str(caught.value)
    assert os.listdir(tmp_path) == ["out.png"]
    assert target.read_bytes() == b"previous result"


def test_other_failures_propagate_and_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_image(_chelsea(), tmp_path / "out.webp")
    assert os.listdir(tmp_path) == []


def test_failed_rename_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: str, dst: object, **dir_fds: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), src)

    monkeypatch.setattr(layout.os, "replace", refuse)
    with pytest.raises(ImageError, match="permission denied"):
        save_image(_chelsea(), tmp_path / "out.jpg")
    assert os.listdir(tmp_path) == []


def test_read_only_folder(shared_tmp: Path) -> None:
    # a real refusal of the file system, also as root (see run_unprivileged)
    folder = shared_tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    target = folder / "out.png"
    done = run_unprivileged(
        "from PIL import Image\nfrom nst_batch.images import ImageError, save_image",
        f"try:\n    save_image(Image.new('RGB', (8, 6)), {str(target)!r})\n"
        "except ImageError as e:\n    print(e)",
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert str(target) in message
    assert "permission denied" in message
    assert os.listdir(folder) == []


@pytest.mark.parametrize(("name", "side"), [("tall.jpg", 65_501), ("wide.webp", 16_384)])
def test_an_image_over_its_formats_side_limit_is_refused_by_name(
    tmp_path: Path, name: str, side: int
) -> None:
    image = Image.new("RGB", (1, side) if name.endswith(".jpg") else (side, 1))
    with pytest.raises(ImageError) as caught:
        save_image(image, tmp_path / name)
    message = str(caught.value)
    assert str(tmp_path / name) in message
    assert f"the image is {image.width}x{image.height} px" in message
    assert "broken data stream" not in message and "check the output path" not in message
    assert os.listdir(tmp_path) == []


def test_an_encoder_failure_is_not_blamed_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = OSError("broken data stream when writing image file")  # Pillow's, without errno
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(error))
    with pytest.raises(ImageError) as caught:
        save_image(_chelsea(), tmp_path / "out.jpg")
    assert str(caught.value) == (
        f"Cannot save '{tmp_path / 'out.jpg'}': the image could not be encoded (broken data "
        "stream when writing image file); the file system is not the cause."
    )


def test_a_closed_pil_image_is_named_as_closed() -> None:
    image = Image.new("RGB", (40, 40))
    image.close()
    with pytest.raises(ImageError, match=r"Cannot use image 'x': the PIL image is closed"):
        to_rgb(image, "x")


# --- animations: the refusals ----------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "side"), [("GIF", 65_536), ("WEBP", 16_384)])
def test_an_animation_of_frames_over_its_formats_side_limit_is_refused(
    tmp_path: Path, fmt: str, side: int
) -> None:
    frame = tmp_path / "frame.png"
    Image.new("RGB", (side, 1)).save(frame)
    target = tmp_path / f"walk.{fmt.lower()}"
    with pytest.raises(ImageError) as caught:
        images.save_animation([frame, frame], target, 100, {}, fmt=fmt)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"Cannot save '{target}': its frames are {side}x1 px and {fmt} "
        f"holds at most {side - 1:,} px a side."
    )
    assert sorted(os.listdir(tmp_path)) == ["frame.png"]


def test_an_animation_needs_frames_a_duration_and_str_metadata(tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    _chelsea().save(frame)
    target = tmp_path / "walk.gif"
    with pytest.raises(ValueError, match=r"walk\.gif': an animation needs at least one frame$"):
        images.save_animation([], target, 100, {})
    with pytest.raises(ValueError, match=r"^a frame's duration must be positive, got 0 ms$"):
        images.save_animation([frame], target, 0, {})
    with pytest.raises(TypeError, match=r"^metadata must map str to str, got 'k': 1$"):
        images.save_animation([frame], target, 100, {"k": 1})  # type: ignore[dict-item]
    assert sorted(os.listdir(tmp_path)) == ["frame.png"]


def test_an_animation_names_the_frame_it_cannot_read(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.png", tmp_path / "b.png"
    _chelsea().save(good)
    bad.write_bytes(b"not a picture")
    with pytest.raises(ImageError) as caught:
        images.save_animation([good, bad], tmp_path / "walk.gif", 100, {})
    message = str(caught.value)
    assert message.startswith(f"Cannot use image '{bad}': it cannot be read as a frame ("), message
    assert message.endswith("; rerun its task."), message
    assert not (tmp_path / "walk.gif").exists()


def test_save_image_refuses_an_unknown_extension_and_a_quality_out_of_range(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"unsupported extension '\.bmp'; use one of "):
        save_image(_chelsea(), tmp_path / "out.bmp")
    with pytest.raises(ValueError, match=r"^quality must be within 1\.\.100, got 0$"):
        save_image(_chelsea(), tmp_path / "out.jpg", quality=0)
    assert os.listdir(tmp_path) == []
