"""Loading, resizing and saving images, and converting between PIL images and tensors.

The only module that reads, decodes, resizes and writes image files (Pillow); others hold
PIL images only as values (the contact sheet draws on one, `transfer` takes and returns
them). Everything it hands out is 8-bit sRGB "RGB"; tensors are float32 ``(1, 3, H, W)`` in
0..1; torch is imported only where tensors are made.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from nst_batch.layout import UnsafeWrite, write_atomically

if TYPE_CHECKING:  # torch is imported where tensors are made: planning needs only headers
    import torch

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littlecms: colours stay unmanaged
    ImageCms = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_ERRORS",
    "MAX_SAVE_SIDE",
    "MIN_SIDE",
    "SAVE_FORMATS",
    "ImageError",
    "load_image",
    "open_output",
    "oriented_size",
    "read_metadata",
    "replace_metadata",
    "resize",
    "save_animation",
    "save_image",
    "scaled_style_size",
    "shrunk",
    "target_size",
    "to_image",
    "to_rgb",
    "to_tensor",
]

DEFAULT_MAX_PIXELS: int = 64_000_000
MIN_SIDE: int = 32
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
# The longest side each format can hold; past it Pillow fails with an encoder error whose
# text ("broken data stream") reads like a write error.
MAX_SAVE_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "GIF": 65_535}
# GIF keeps a frame's duration in hundredths of a second, and browsers show a frame of 0 or
# 1 hundredth for 100 ms; so no frame is shorter than 2 hundredths (50 frames a second).
MIN_FRAME_HUNDREDTHS = 2

_IMAGE_DESCRIPTION = 0x010E
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_COLOR_MANAGED_MODES = frozenset({"RGB", "RGBA", "CMYK"})

# Pillow's bomb limit and truncation flag are process-wide globals; load_image pins them for
# the duration of one load, and this lock keeps concurrent loads from seeing each other's values.
_PILLOW_GLOBALS = threading.Lock()


class ImageError(Exception):
    """A user's image cannot be used; str() is one sentence naming the file and what to do."""


# What reading an image can raise for a file that is not a complete image.
IMAGE_ERRORS = (
    ImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


# ---------------------------------------------------------------------------------------------
# Loading


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, verify and fully decode an image file into an 8-bit sRGB ``RGB`` image.

    EXIF orientation is applied. Any mode is converted: alpha and palette transparency are
    composited over white; 16-bit and 32-bit integer data are scaled (not clipped) to 8 bit;
    an embedded ICC profile (Adobe RGB, Display P3, CMYK, ...) is converted to sRGB. The
    returned image carries no ``info`` (no stale profile or EXIF), shape ``H x W x 3``.

    The pixel count from the header is checked against ``max_pixels`` before anything is
    decoded. Raises ImageError, naming the file, for a missing, empty, unreadable, non-image,
    corrupt or truncated file, one over ``max_pixels`` and one under ``MIN_SIDE`` on a side.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    name = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise _unusable(name, "the file is empty (0 bytes)", "re-export or re-copy it")
            image = _decode(fh, name, max_pixels)
    except FileNotFoundError:
        raise _unusable(name, "file not found", "check the path") from None
    except IsADirectoryError:
        raise _unusable(name, "it is a folder, not a file", "give an image file") from None
    except PermissionError:
        raise _unusable(name, "permission denied", "check the file's permissions") from None
    except OSError as exc:
        raise _unusable(name, f"it cannot be read ({exc.strerror or exc})", "check it") from exc

    return to_rgb(image, name)


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """An image in memory as load_image makes a file's: EXIF orientation applied, any mode
    converted to 8-bit sRGB ``RGB``, no ``info``. ImageError for a mode it cannot convert."""
    try:
        image.load()
    except ValueError as exc:  # Pillow: "Operation on closed image"
        if "closed" not in str(exc):
            raise
        raise _unusable(name, "the PIL image is closed", "pass an open image or its path") from None
    with suppress(Exception):  # a broken EXIF block should not make a usable photo unusable
        image = ImageOps.exif_transpose(image)
    try:
        rgb = _to_srgb_rgb(image)
    except ValueError as exc:
        raise _unusable(
            name, f"its colour mode {image.mode} is not supported", "convert it to RGB"
        ) from exc
    rgb.info = {}
    return rgb


def _unusable(name: str, problem: str, advice: str) -> ImageError:
    return ImageError(f"Cannot use image '{name}': {problem}; {advice}.")


def _too_many_pixels(name: str, max_pixels: int, size: tuple[int, int] | None = None) -> ImageError:
    dims = f" ({size[0]}x{size[1]} = {size[0] * size[1]:,} pixels)" if size else ""
    return _unusable(
        name,
        f"it is larger than the limit of {max_pixels:,} pixels{dims}",
        "downscale it, or raise max_pixels in the manifest if the image is trusted",
    )


@contextmanager
def _strict_pillow(max_pixels: int) -> Iterator[None]:
    """Pin Pillow's globals: bomb limit = max_pixels (warning raised), truncation = error."""
    with _PILLOW_GLOBALS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(fh: io.BufferedReader, name: str, max_pixels: int) -> Image.Image:
    with _strict_pillow(max_pixels):
        try:
            _probe(fh, name, max_pixels)
            fh.seek(0)  # verify() leaves the image unusable; decode from a fresh open
            image = Image.open(fh)
            image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(name, max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise _unusable(
                name, "it is not an image Pillow can read", "give a JPEG, PNG or WebP file"
            ) from exc
        except MemoryError:
            raise
        except Exception as exc:  # decoders raise many types (OSError, SyntaxError, EOFError...)
            raise _unusable(
                name, f"it is corrupt or truncated ({exc})", "re-export or re-copy it"
            ) from exc
    return image


def _probe(fh: io.BufferedReader, name: str, max_pixels: int) -> None:
    """Check the header's size against ``max_pixels`` and ``MIN_SIDE``, then verify the file.

    Pillow's own bomb check is off while the header is read (open() decodes no pixels), so
    that the message can give the size; the decode that follows has it back on.
    """
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(fh) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise _too_many_pixels(name, max_pixels, probe.size)
            if min(width, height) < MIN_SIDE:
                raise _unusable(
                    name,
                    f"it is {width}x{height} pixels but each side must be at least "
                    f"{MIN_SIDE} pixels",
                    "use a larger image",
                )
            probe.verify()
    finally:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _to_srgb_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        image = _to_8bit_gray(image)
    image = _icc_to_srgb(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """``I;16*``, ``I`` and ``F`` -> ``L`` by a linear map of the value range onto 0..255.

    The range is that of the storage (0..65535 for 16-bit; ``I`` values within 0..65535 are
    taken as 16-bit data in a 32-bit container, the usual case; ``F`` within 0..1 or 0..255
    as normalised or 8-bit floats); data outside those is stretched from its own min..max.
    """
    low, high = cast(tuple[float, float], image.getextrema())
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        low, high = 0, 65535
    elif image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0, 1
    elif image.mode == "F" and low >= 0 and high <= 255:
        low, high = 0, 255
    elif high == low:
        high = low + 1
    scale = 255 / (high - low)
    offset = 0.5 - low * scale  # +0.5: the F -> L conversion truncates
    return image.convert("F").point(lambda v: v * scale + offset).convert("L")


def _icc_to_srgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("P", "PA"):  # the palette's colours are in the profile's space
        transparent = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")  # keeps info, the profile too
    if not icc or ImageCms is None or image.mode not in _COLOR_MANAGED_MODES:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            image, source, ImageCms.createProfile("sRGB"), outputMode=mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # a broken profile: the pixels are still usable as if sRGB
    assert converted is not None
    converted.info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    return converted


def open_output(path: str | os.PathLike[str]) -> Image.Image:
    """One of nst-batch's own outputs as ``RGB``: no limits or colour profiles to handle."""
    with Image.open(path) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Sizes


def target_size(width: int, height: int, size: int, square: bool = False) -> tuple[int, int]:
    """``(w, h)`` whose longest side is ``size``, keeping the aspect ratio (rounded half up,
    each side at least 1); ``(size, size)`` if ``square``."""
    if width < 1 or height < 1 or size < 1:
        raise ValueError(f"sizes must be positive, got {width}x{height} -> {size}")
    if square:
        return size, size
    if width >= height:
        return size, max(1, _div_round(height * size, width))
    return max(1, _div_round(width * size, height)), size


def oriented_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(w, h)`` of an image as load_image will return it, from the header alone (EXIF
    rotations swap the sides); None when the header cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            with suppress(Exception):
                if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
            return width, height
    except Exception:
        return None


_ORIENTATION = 0x0112  # EXIF tag: rotations 5..8 turn the picture by 90 degrees


def _div_round(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, in exact integer arithmetic."""
    return (2 * numerator + denominator) // (2 * denominator)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to exactly ``size`` = ``(w, h)`` with Lanczos; strong downscaling first reduces
    by an integer factor (``reducing_gap``), which is faster and indistinguishable in quality."""
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


def shrunk(image: Image.Image, side: int) -> Image.Image:
    """A copy no larger than ``side`` x ``side``, aspect kept (Lanczos); never enlarged."""
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def scaled_style_size(style_wh: tuple[int, int], size: int, style_scale: float) -> tuple[int, int]:
    """Size ``(w, h)`` for the style image: longest side ``size * style_scale``, the style's
    aspect kept; scaled up (aspect kept) if a side would fall below ``MIN_SIDE``.

    Relative to the output's `size`, not to each content's shape, so one style's targets
    serve every content image of a gallery.
    """
    style_w, style_h = style_wh
    if min(style_w, style_h, size) < 1:
        raise ValueError(f"sizes must be positive, got style {style_wh} and size {size}")
    if not (math.isfinite(style_scale) and style_scale > 0):
        raise ValueError(f"style_scale must be a positive number, got {style_scale}")
    factor = size * style_scale / max(style_w, style_h)
    factor = max(factor, MIN_SIDE / min(style_w, style_h))
    return (
        max(MIN_SIDE, math.floor(style_w * factor + 0.5)),
        max(MIN_SIDE, math.floor(style_h * factor + 0.5)),
    )


# ---------------------------------------------------------------------------------------------
# Tensors


def to_tensor(image: Image.Image) -> torch.Tensor:
    """``RGB`` image -> float32 tensor ``(1, 3, H, W)`` in 0..1."""
    import torch

    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode} (use load_image)")
    width, height = image.size
    # A writable copy of the pixels: frombuffer warns about read-only bytes.
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels_first = pixels.view(height, width, 3).permute(2, 0, 1)  # (3, H, W)
    return channels_first.to(torch.float32).div_(255).unsqueeze_(0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """Float tensor ``(1, 3, H, W)`` or ``(3, H, W)`` in 0..1 -> ``RGB`` image.

    Values outside 0..1 are clamped and then rounded to the nearest 8-bit level; NaN raises
    ValueError. Any device and floating dtype are accepted.
    """
    import torch

    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected shape (1, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {tensor.dtype}")
    pixels = tensor.detach().to("cpu", torch.float32)
    if torch.isnan(pixels).any():
        raise ValueError("the image tensor contains NaN values")
    levels = pixels.clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(levels.permute(1, 2, 0).contiguous().numpy())


# ---------------------------------------------------------------------------------------------
# Saving


def save_image(
    image: Image.Image,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    quality: int = 95,
    root: Path | None = None,
) -> None:
    """Write ``image`` atomically in the format its extension names (.jpg/.jpeg, .png, .webp).

    Through `layout.write_atomically`: the target is either untouched or complete, parent
    folders under ``root`` (the output folder; default the target's folder) are created, and
    no symbolic link on the way is followed.
    ``metadata`` goes into PNG text chunks, or for JPEG/WebP into the EXIF ImageDescription as
    JSON; ``read_metadata`` reads it back. ``quality`` (1..100) applies to JPEG and WebP.
    Raises ValueError for an unsupported extension and ImageError (naming the path and the
    reason, e.g. disk full, or an image larger than the format allows) when it cannot be
    written.
    """
    target = Path(path)
    fmt = SAVE_FORMATS.get(target.suffix.lower())
    if fmt is None:
        supported = ", ".join(sorted(SAVE_FORMATS))
        raise ValueError(
            f"Cannot save '{target}': unsupported extension '{target.suffix}'; use one of "
            f"{supported}."
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, got {quality}")
    limit = MAX_SAVE_SIDE.get(fmt)
    if limit is not None and max(image.size) > limit:
        raise ImageError(
            f"Cannot save '{target}': the image is {image.width}x{image.height} px and {fmt} "
            f"holds at most {limit:,} px a side; save it smaller or as PNG."
        )
    options = _save_options(fmt, metadata, quality)
    if fmt != "PNG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    _save(target, lambda file: image.save(file, format=fmt, **options), root)


def save_animation(
    frames: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    duration: int,
    metadata: Mapping[str, str],
    root: Path | None = None,
    fmt: Literal["GIF", "WEBP"] = "GIF",
) -> None:
    """Write the image files `frames`, in order, as one GIF (or animated WebP) at `path`
    that loops forever, each frame shown `duration` ms; atomically and never through a
    link, as save_image writes.

    In a GIF each frame gets its own palette of 256 colours (median cut, without dithering,
    whose noise would shimmer from frame to frame); a WebP keeps full colour. A frame of
    another size is scaled to the first's. Frames are read one at a time. Pillow shows two
    identical frames in a row as one of twice the duration. ``metadata`` goes into the GIF's
    comment (the WebP's EXIF) as JSON, which ``read_metadata`` reads back. Raises ImageError
    naming the frame that cannot be read, or the path and the reason when the file cannot
    be written.
    """
    target = Path(path)
    if not frames:
        raise ValueError(f"Cannot save '{target}': an animation needs at least one frame")
    if duration < 1:
        raise ValueError(f"a frame's duration must be positive, got {duration} ms")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    palette = fmt == "GIF"
    first = _gif_frame(frames[0], None, palette)
    if max(first.size) > MAX_SAVE_SIDE[fmt]:
        raise ImageError(
            f"Cannot save '{target}': its frames are {first.width}x{first.height} px and {fmt} "
            f"holds at most {MAX_SAVE_SIDE[fmt]:,} px a side."
        )
    # Read as Pillow writes them.
    rest = (_gif_frame(frame, first.size, palette) for frame in frames[1:])
    comment = json.dumps(dict(metadata), ensure_ascii=True)
    if fmt == "WEBP":
        exif = Image.Exif()
        exif[_IMAGE_DESCRIPTION] = comment
        options: dict[str, Any] = {"quality": 90, "exif": exif.tobytes(), "duration": duration}
    else:
        options = {"comment": comment, "duration": max(duration, 10 * MIN_FRAME_HUNDREDTHS)}
    _save(
        target,
        lambda file: first.save(file, fmt, save_all=True, append_images=rest, loop=0, **options),
        root,
    )


def _gif_frame(
    path: str | os.PathLike[str], size: tuple[int, int] | None, palette: bool = True
) -> Image.Image:
    """An output as an animation's frame: `size` (w, h) if given, and for a GIF
    (`palette`) a palette of its own colours."""
    try:
        image = open_output(path)
    except IMAGE_ERRORS as exc:
        raise _unusable(
            os.fspath(path), f"it cannot be read as a frame ({exc})", "rerun its task"
        ) from exc
    if size is not None and image.size != size:
        image = resize(image, size)
    if not palette:
        return image
    return image.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def save_text(text: str, path: str | os.PathLike[str], root: Path | None = None) -> None:
    """Write a small text file atomically, like save_image; raises ImageError on failure."""
    _save(Path(path), text.encode("utf-8", "backslashreplace"), root)


def _save(target: Path, write: Any, root: Path | None) -> None:
    if root is None:
        root = target.parent
        root.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(target, write, root)
    except UnsafeWrite as exc:
        raise ImageError(f"Cannot save '{target}': {exc}.") from exc
    except OSError as exc:
        problem, advice = _write_failure(exc)
        raise ImageError(f"Cannot save '{target}': {problem}; {advice}.") from exc


def _save_options(fmt: str, metadata: Mapping[str, str] | None, quality: int) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        # Chroma subsampling smears the fine colour strokes of a stylised image; like
        # ImageMagick, keep full chroma at high quality.
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        options.update(quality=quality)
    if not metadata:
        return options
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    if fmt == "PNG":
        info = PngInfo()
        for key, value in metadata.items():
            if not 1 <= len(key) <= 79 or not key.isprintable() or not key.isascii():
                raise ValueError(f"PNG text keys must be 1-79 printable ASCII characters: {key!r}")
            info.add_text(key, value)  # falls back to iTXt for non-Latin-1 values
        options["pnginfo"] = info
    else:
        exif = Image.Exif()
        exif[_IMAGE_DESCRIPTION] = json.dumps(dict(metadata), ensure_ascii=True)
        options["exif"] = exif.tobytes()
    return options


def _write_failure(exc: OSError) -> tuple[str, str]:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "disk full" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return reason, "free some space or choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied", "check the folder's permissions or choose another output folder"
    if exc.errno == errno.EROFS:
        return "read-only file system", "choose another output folder"
    if exc.errno is None:  # raised by Pillow's encoder, not by the file system
        return f"the image could not be encoded ({exc})", "the file system is not the cause"
    return exc.strerror or str(exc), "check the output path"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The mapping ``save_image`` (or ``save_animation``) stored in the file; empty if none
    or the file is unreadable."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                # Our text chunks precede the pixel data, so they are in info without decoding.
                return {str(k): str(v) for k, v in image.info.items() if isinstance(v, str)}
            if image.format == "GIF":
                # save_animation's comment is in the header, read without decoding a frame.
                description = image.info.get("comment")
            else:
                description = image.getexif().get(_IMAGE_DESCRIPTION)
        stored = json.loads(description) if isinstance(description, str | bytes) else None
    except Exception:
        return {}
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        return {}
    return stored


def replace_metadata(
    path: str | os.PathLike[str], metadata: Mapping[str, str], root: Path | None = None
) -> None:
    """Rewrite the metadata ``save_image`` stored in ``path`` without touching its pixels:
    PNG is written again (lossless), JPEG and WebP get their EXIF segment or chunk replaced
    byte for byte, so the picture is not encoded a second time. Atomic, never through a link;
    ImageError naming the file when it is not one of ours or cannot be written."""
    target = Path(path)
    name = str(target)
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    try:
        data = target.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            if fmt == "PNG":
                image.load()
                pixels = image.copy()
    except (OSError, *IMAGE_ERRORS) as exc:
        raise ImageError(f"{name}: cannot read it to record its metadata ({exc})") from None
    if fmt == "PNG":
        options = _save_options("PNG", metadata, 95)
        _save(target, lambda file: pixels.save(file, format="PNG", **options), root)
        return
    exif = Image.Exif()
    exif[_IMAGE_DESCRIPTION] = json.dumps(dict(metadata), ensure_ascii=True)
    if fmt == "JPEG":
        rewritten = _jpeg_with_exif(data, exif.tobytes())
    elif fmt == "WEBP":
        rewritten = _webp_with_exif(data, exif.tobytes().removeprefix(b"Exif\x00\x00"))
    else:
        rewritten = None
    if rewritten is None:
        raise ImageError(
            f"{name}: its metadata cannot be rewritten without encoding the picture again "
            f"({fmt} without the EXIF block nst-batch writes)"
        )
    _save(target, lambda file: file.write(rewritten), root)


def _jpeg_with_exif(data: bytes, exif: bytes) -> bytes | None:
    """The JPEG `data` with its first EXIF (APP1) segment's payload replaced by `exif`
    (b'Exif\\0\\0' + TIFF); None when it has none or is not a JPEG we can walk."""
    if not data.startswith(b"\xff\xd8") or len(exif) + 2 > 0xFFFF:
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            return None
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xE1 and data[at + 4 : at + 10] == b"Exif\x00\x00":
            segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
            return data[:at] + segment + data[at + 2 + length :]
        at += 2 + length
    return None


def _webp_with_exif(data: bytes, exif: bytes) -> bytes | None:
    """The WebP `data` with its EXIF chunk's payload replaced by `exif` (TIFF); None when it
    has none or is not a RIFF WebP."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks, at = [], 12
    found = False
    while at + 8 <= len(data):
        fourcc, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        payload = data[at + 8 : at + 8 + size]
        if fourcc == b"EXIF":
            payload, found = exif, True
        chunks.append(
            fourcc + len(payload).to_bytes(4, "little") + payload + b"\0" * (len(payload) % 2)
        )
        at += 8 + size + size % 2
    if not found:
        return None
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body
