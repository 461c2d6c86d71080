"""Optical flow, trusted pixels, warping and the flow cache, on crops of a real photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_batch import flow
from nst_batch.images import to_tensor
from nst_batch.manifest import natural_key

PHOTO = Path(__file__).resolve().parent.parent / "examples/images/content/chelsea.png"
DX, DY = 3, 2  # the camera pans right and down between the two frames


def frames(width: int = 96, height: int = 72) -> tuple[Image.Image, Image.Image]:
    """Two crops of the photo: the second DX px right and DY px down of the first."""
    photo = Image.open(PHOTO).convert("RGB").resize((240, 160))
    x, y = 60, 40
    previous = photo.crop((x, y, x + width, y + height))
    current = photo.crop((x + DX, y + DY, x + DX + width, y + DY + height))
    return previous, current


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["f10.png", "f2.png", "F1.png", "f2b.png", "g0.png", "f002.png"]
    assert sorted(names, key=natural_key) == [
        "F1.png",
        "f2.png",
        "f002.png",
        "f2b.png",
        "f10.png",
        "g0.png",
    ]


def test_backward_flow_finds_the_pan() -> None:
    previous, current = frames()
    found = flow.motion(previous, current)
    assert found.flow.shape == (72, 96, 2) and found.flow.dtype == np.float32
    inner = found.flow[8:-8, 8:-8].reshape(-1, 2)
    dx, dy = np.median(inner, axis=0)
    assert dx == pytest.approx(DX, abs=0.25) and dy == pytest.approx(DY, abs=0.25)


def test_pixels_entering_the_frame_are_not_trusted() -> None:
    previous, current = frames()
    valid = flow.motion(previous, current).valid
    # The last DX columns and DY rows of the current frame were outside the previous one.
    assert not valid[:, -1].any() and not valid[-1, :].any()
    assert valid[10:-10, 10:-10].mean() > 0.9
    assert 0.75 < valid.mean() < 0.99


def test_a_still_scene_is_trusted_everywhere() -> None:
    previous, _ = frames()
    found = flow.motion(previous, previous)
    assert np.abs(found.flow).max() < 0.1
    assert found.coverage == 1.0


def test_warp_moves_the_previous_frame_onto_the_current_one() -> None:
    previous, current = frames()
    found = flow.motion(previous, current)
    before, now = to_tensor(previous), to_tensor(current)
    warped = flow.warp(before, found.flow)
    mask = torch.from_numpy(found.valid)
    assert warped.shape == before.shape
    error_warped = (warped - now).abs().mean(1)[0][mask].mean()
    error_still = (before - now).abs().mean(1)[0][mask].mean()
    assert error_warped < 0.02 < error_still
    assert error_warped < error_still / 3


def test_warp_by_an_exact_integer_flow_is_a_shift() -> None:
    image = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    shift = np.zeros((5, 6, 2), dtype=np.float32)
    shift[..., 0] = 1  # each pixel was one to the right
    warped = flow.warp(image, shift)
    torch.testing.assert_close(warped[..., :-1], image[..., 1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(warped[..., -1], image[..., -1], atol=1e-4, rtol=0)  # border


def test_warp_refuses_a_flow_of_another_size() -> None:
    with pytest.raises(ValueError, match="flow of shape"):
        flow.warp(torch.zeros(1, 3, 4, 4), np.zeros((4, 5, 2), dtype=np.float32))


def test_warping_error_is_zero_for_a_perfectly_warped_sequence() -> None:
    previous, current = frames()
    found = flow.motion(previous, current)
    stylized_before = to_tensor(previous)
    consistent = flow.warp(stylized_before, found.flow)
    flickering = consistent + 0.1 * torch.randn_like(consistent)
    assert flow.warping_error(consistent, stylized_before, found) == pytest.approx(0, abs=1e-6)
    assert flow.warping_error(flickering, stylized_before, found) > 0.05


def test_cache_round_trip_and_names(tmp_path: Path) -> None:
    previous, current = frames()
    found = flow.motion(previous, current)
    path = tmp_path / flow.cache_name("aa", "bb", (96, 72))
    path.write_bytes(flow.to_bytes(found))
    again = flow.from_file(path)
    assert again is not None
    assert np.array_equal(again.valid, found.valid)
    assert np.abs(again.flow - found.flow).max() < 0.01
    names = {
        flow.cache_name("aa", "bb", (96, 72)),
        flow.cache_name("bb", "aa", (96, 72)),
        flow.cache_name("aa", "bb", (48, 36)),
        flow.cache_name("aa", "cc", (96, 72)),
    }
    assert len(names) == 4  # order, size and bytes all count


def test_a_torn_or_foreign_cache_file_is_ignored(tmp_path: Path) -> None:
    previous, current = frames()
    whole = flow.to_bytes(flow.motion(previous, current))
    torn = tmp_path / "torn.npz"
    torn.write_bytes(whole[: len(whole) // 2])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, flow=np.zeros((4, 4, 3)), valid=np.ones((4, 4), dtype=bool))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, flow=np.array([object()], dtype=object), valid=np.ones(1, dtype=bool))
    assert flow.from_file(torn) is None
    assert flow.from_file(foreign) is None
    assert flow.from_file(pickled) is None
    assert flow.from_file(tmp_path / "missing.npz") is None
