"""Optical flow between consecutive frames of a sequence, after Ruder, Dosovitskiy and Brox,
"Artistic style transfer for videos" (2016).

A frame t starts from the previous stylized frame warped along the flow, and a temporal loss
keeps its non-occluded pixels close to that warped frame. This module computes what both
need, once per frame pair: the backward flow (frame t -> frame t-1: where each pixel of t
was) and the mask of pixels that flow can be trusted for. Flow comes from OpenCV's DIS
optical flow (Kroeger et al., 2016), computed both ways; a pixel is occluded where the two
disagree or where the flow has a motion boundary, as in Ruder et al.'s eq. (4) and (5).

Motion is cached as a `.npz` (two arrays, read back as raw numbers after their headers are
checked: data, never code), named by the two frames' bytes and the size they were compared
at. A cache file that is torn, foreign or of another size is computed anew.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

FLOW_VERSION = 1  # bump when the flow or the mask changes; older cache files are not read
FLOW_DTYPE = np.dtype("<f2")  # as `to_bytes` writes them
VALID_DTYPE = np.dtype("|b1")
# The largest frame side there can be (Params.size's bound): a header claiming a larger
# array is not one of ours.
MAX_SIDE = 8192
_HEADER_BYTES = 12 + 10_000  # a .npy's magic, header length and header: numpy refuses longer
# What reading a file that is not ours may raise: torn or not a zip (BadZipFile, EOFError),
# an encrypted or oddly compressed member (RuntimeError, NotImplementedError), a header
# that is not a .npy one or not ours (ValueError), a member missing (KeyError).
_UNREADABLE = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
)


@dataclass(frozen=True)
class Motion:
    """How frame t relates to frame t-1, at frame t's size (H, W).

    `flow[y, x] = (dx, dy)`: the pixel (x, y) of frame t was at (x + dx, y + dy) in frame t-1.
    `valid[y, x]`: that position is inside frame t-1, not occluded, and off motion boundaries.
    """

    flow: np.ndarray  # (H, W, 2) float32
    valid: np.ndarray  # (H, W) bool

    @property
    def coverage(self) -> float:
        """The share of frame t's pixels the flow can be trusted for."""
        return float(self.valid.mean())


def dis_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow from `source` to `target` ((H, W) uint8 grey images):
    source's pixel (x, y) is at (x + dx, y + dy) in target."""
    import cv2

    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    if min(source.shape) < 64:  # the preset's 8 px patches leave too few on tiny frames
        dis.setPatchSize(4)
        dis.setPatchStride(2)
    no_initial_flow = cast(np.ndarray, None)  # DIS then starts from zero; its stubs lack None
    flow = dis.calc(source, target, no_initial_flow)
    return np.ascontiguousarray(flow, dtype=np.float32)


def motion(previous: Image.Image, current: Image.Image) -> Motion:
    """Backward flow and its trusted pixels, for two RGB frames of one size."""
    if previous.size != current.size:
        raise ValueError(f"frames differ in size: {previous.size} and {current.size}")
    before = np.asarray(previous.convert("L"))
    now = np.asarray(current.convert("L"))
    backward = dis_flow(now, before)  # t -> t-1
    forward = dis_flow(before, now)  # t-1 -> t
    return Motion(backward, trusted(backward, forward))


def trusted(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of frame t whose backward flow lands inside frame t-1 where the
    forward flow leads back (|w + w^|^2 <= 0.01 (|w|^2 + |w^|^2) + 0.5) and which lie off
    motion boundaries (|grad u|^2 + |grad v|^2 <= 0.01 |w|^2 + 0.002), Ruder et al. (4), (5)."""
    h, w = backward.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x_before, y_before = xs + backward[..., 0], ys + backward[..., 1]
    inside = (x_before >= 0) & (x_before <= w - 1) & (y_before >= 0) & (y_before <= h - 1)
    back_again = _sample(forward, x_before, y_before)  # forward flow where the pixel was
    disagreement = np.square(backward + back_again).sum(-1)
    magnitudes = np.square(backward).sum(-1) + np.square(back_again).sum(-1)
    consistent = disagreement <= 0.01 * magnitudes + 0.5
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    gradient = du_x**2 + du_y**2 + dv_x**2 + dv_y**2
    smooth = gradient <= 0.01 * np.square(backward).sum(-1) + 0.002
    return np.asarray(inside & consistent & smooth)


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W, C) field at float positions, clamped to the border."""
    h, w = field.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy, dtype=np.float32)


def warp(image: torch.Tensor, flow: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) frame t-1 (stylized) -> (B, C, H, W) warped onto frame t by its backward
    flow (H, W, 2); positions outside frame t-1 take its border pixels."""
    import torch

    flow = torch.as_tensor(flow, dtype=torch.float32, device=image.device)
    h, w = image.shape[-2:]
    if tuple(flow.shape) != (h, w, 2):
        raise ValueError(f"flow of shape {tuple(flow.shape)} for an image of {h}x{w}")
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=torch.float32),
        torch.arange(w, device=image.device, dtype=torch.float32),
        indexing="ij",
    )
    # grid_sample's coordinates: -1 and 1 are the centres of the corner pixels.
    gx = (xs + flow[..., 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[..., 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack((gx, gy), dim=-1).expand(image.shape[0], h, w, 2)
    return torch.nn.functional.grid_sample(
        image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    ).to(image.dtype)


def warping_error(current: torch.Tensor, previous: torch.Tensor, found: Motion) -> float:
    """Mean |S_t - warp(S_t-1)| over trusted pixels and channels, images (1, 3, H, W) in
    0..1: how much a stylized sequence flickers where the scene itself did not change."""
    import torch

    mask = torch.as_tensor(found.valid, device=current.device)
    if not bool(mask.any()):
        return 0.0
    warped = warp(previous, found.flow)
    difference = (current.float() - warped.float()).abs().mean(1)[0]  # (H, W)
    return float(difference[mask].mean())


def sequence_warping_error(frames: Sequence[Path], outputs: Sequence[Path]) -> float:
    """The mean warping error of consecutive stylized `outputs` along the flow between the
    content `frames` they were made from (compared at the outputs' size)."""
    from nst_batch import images

    errors = []
    for i in range(1, len(outputs)):
        now = images.load_image(outputs[i])
        size = now.size
        found = motion(
            images.resize(images.load_image(frames[i - 1]), size),
            images.resize(images.load_image(frames[i]), size),
        )
        previous = images.to_tensor(images.resize(images.load_image(outputs[i - 1]), size))
        errors.append(warping_error(images.to_tensor(now), previous, found))
    return sum(errors) / len(errors)


def cache_name(previous: str, current: str, size: tuple[int, int]) -> str:
    """The cache file's name for two frames, by their files' SHA-256 (hex), compared at
    `size` (W, H)."""
    key = f"{previous}:{current}:{size[0]}x{size[1]}:v{FLOW_VERSION}"
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def to_bytes(found: Motion) -> bytes:
    """The `.npz` bytes of a Motion (flow as float16: a hundredth of a pixel is plenty)."""
    buffer = io.BytesIO()
    np.savez(buffer, flow=found.flow.astype(np.float16), valid=found.valid)
    return buffer.getvalue()


def from_file(path: Path, size: tuple[int, int] | None = None) -> Motion | None:
    """The Motion cached at `path`, for frames of `size` (W, H) when given; None if it is
    missing, torn, of another size or not one of ours (then it is computed anew).

    Nothing is read past what a frame of `size` (else of MAX_SIDE px a side) needs: each
    array's header (shape, dtype) is checked before its data is read, and an archive
    member claiming more bytes is not opened. Neither code nor objects are ever loaded:
    the data is read as raw numbers."""
    most = (MAX_SIDE, MAX_SIDE) if size is None else (size[1], size[0])  # (H, W)
    try:
        with zipfile.ZipFile(path) as archive:
            flow = _member(archive, "flow", FLOW_DTYPE, (*most, 2), exact=size is not None)
            valid = _member(archive, "valid", VALID_DTYPE, flow.shape[:2], exact=True)
    except _UNREADABLE:
        return None
    flow = flow.astype(np.float32)
    if not np.isfinite(flow).all():
        return None
    return Motion(flow, valid.view(np.uint8) != 0)  # any byte but 0 is True, as numpy reads it


def _member(
    archive: zipfile.ZipFile, name: str, dtype: np.dtype, most: tuple[int, ...], exact: bool
) -> np.ndarray:
    """The array `name` of an `.npz` if it is of `dtype` in C order and of shape `most`
    (or, unless `exact`, a height and width from 1 to `most`'s and the rest as `most`);
    ValueError if not (told by its header, before its data is read), or if torn."""
    member = f"{name}.npy"
    largest = math.prod(most) * dtype.itemsize
    if archive.getinfo(member).file_size > _HEADER_BYTES + largest:
        raise ValueError(f"{member}: larger than a frame's")  # zipfile reads no more than this
    with archive.open(member) as file:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, found = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran_order, found = np.lib.format.read_array_header_2_0(file)
        else:
            raise ValueError(f"{member}: .npy format {version}")
        fits = (
            shape == most
            or (
                not exact
                and len(shape) == len(most)
                and shape[2:] == most[2:]  # the channels exactly; height and width up to most's
                and all(1 <= side <= bound for side, bound in zip(shape[:2], most[:2], strict=True))
            )
        )
        if found != dtype or fortran_order or not fits:
            raise ValueError(f"{member}: {found} of shape {shape}, not ours")
        count = math.prod(shape) * dtype.itemsize
        data = file.read(count)
        if len(data) != count or file.read(1):  # read to its end: zipfile checks the CRC
            raise ValueError(f"{member}: {len(data)} bytes of data for {count}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)
