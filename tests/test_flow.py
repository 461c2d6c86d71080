"""Optical flow, trusted pixels, warping and the flow cache, on crops of a real photo."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from pydantic import ValidationError

from nst_batch import flow
from nst_batch.cli import main
from nst_batch.images import to_tensor
from nst_batch.manifest import natural_key
from nst_batch.params import Params
from nst_batch.results import read_rows
from nst_batch.weights import file_sha256

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


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header(shape: tuple[int, ...], descr: str = "<f2") -> bytes:
    """A .npy header alone, claiming an array of `shape`."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _npz(path: Path, compression: int = zipfile.ZIP_STORED, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


VALID = _npy(np.ones((72, 96), dtype=bool))
NESTED = "[" * 100_000 + "]" * 100_000  # deeper than a parser recurses


def _hostile(folder: Path) -> dict[str, Path]:
    """Cache files that are not ours, each of which once crashed a run or claimed memory."""
    plain = folder / "plain.npz"  # a plain .npy under the cache's name
    plain.write_bytes(_npy(np.zeros((72, 96, 2), dtype=np.float16)))
    nested = folder / "nested.npz"
    nested.write_text(NESTED)
    deep_header = "{'descr': " + "[" * 3000 + "]" * 3000 + ", 'fortran_order': False, 'shape': ()}"
    return {
        "plain_npy": plain,
        "nested_json": nested,
        "huge_header": _npz(  # 149 GiB claimed by 64 bytes
            folder / "huge.npz", flow=_header((200_000, 200_000, 2)) + bytes(64), valid=VALID
        ),
        "huge_member": _npz(  # 16 MiB of zeros in 16 KiB: inflated no further than the array
            folder / "bomb.npz",
            zipfile.ZIP_DEFLATED,
            flow=_header((72, 96, 2)) + bytes(16 << 20),
            valid=VALID,
        ),
        "nested_header": _npz(
            folder / "deep.npz",
            flow=b"\x93NUMPY\x01\x00"
            + len(deep_header).to_bytes(2, "little")
            + deep_header.encode(),
            valid=VALID,
        ),
        "objects": _npz(
            folder / "objects.npz", flow=_header((72, 96, 2), "|O") + b"N.", valid=VALID
        ),
        "one_channel": _npz(
            folder / "one.npz", flow=_npy(np.zeros((72, 96, 1), np.float16)), valid=VALID
        ),
        "float32": _npz(
            folder / "f32.npz", flow=_npy(np.zeros((72, 96, 2), np.float32)), valid=VALID
        ),
        "fortran": _npz(
            folder / "fortran.npz",
            flow=_npy(np.asfortranarray(np.zeros((72, 96, 2), np.float16))),
            valid=VALID,
        ),
        "valid_of_another_size": _npz(
            folder / "other.npz",
            flow=_npy(np.zeros((72, 96, 2), np.float16)),
            valid=_npy(np.ones((72, 95), dtype=bool)),
        ),
        "no_valid": _npz(folder / "novalid.npz", flow=_npy(np.zeros((72, 96, 2), np.float16))),
        "not_finite": _npz(
            folder / "inf.npz", flow=_npy(np.full((72, 96, 2), np.inf, np.float16)), valid=VALID
        ),
        "data_past_the_array": _npz(
            folder / "longer.npz",
            flow=_npy(np.zeros((72, 96, 2), np.float16)) + b"\0\0",
            valid=VALID,
        ),
    }


def test_a_cache_file_not_ours_is_absent_whatever_its_header_claims(tmp_path: Path) -> None:
    for name, path in _hostile(tmp_path).items():
        assert flow.from_file(path) is None, name
        assert flow.from_file(path, (96, 72)) is None, name


def test_a_cache_file_of_another_frame_size_is_absent(tmp_path: Path) -> None:
    previous, current = frames()
    path = tmp_path / "motion.npz"
    path.write_bytes(flow.to_bytes(flow.motion(previous, current)))
    assert flow.from_file(path, (96, 72)) is not None
    assert flow.from_file(path, (72, 96)) is None
    assert flow.from_file(path, (48, 36)) is None


def test_valid_pixels_read_as_numpy_reads_them(tmp_path: Path) -> None:
    valid = bytearray(_npy(np.zeros((2, 3), dtype=bool)))
    valid[-1] = 2  # not 0: True, as numpy takes it
    path = _npz(tmp_path / "m.npz", flow=_npy(np.zeros((2, 3, 2), np.float16)), valid=bytes(valid))
    found = flow.from_file(path)
    assert found is not None
    assert found.valid.tolist() == [[False, False, False], [False, False, True]]


def test_the_largest_frame_is_the_largest_size() -> None:
    Params(size=flow.MAX_SIDE)
    with pytest.raises(ValidationError):
        Params(size=flow.MAX_SIDE + 1)


def _pan(folder: Path) -> Path:
    """Two frames of a camera pan, as a sequence at 48 px (48x36), 2 steps."""
    previous, current = frames(64, 48)
    (folder / "frames").mkdir()
    previous.save(folder / "frames" / "f1.png")
    current.save(folder / "frames" / "f2.png")
    manifest = folder / "m.yaml"
    doc = {
        "output": "out",
        "content": [{"path": "frames", "sequence": True}],
        "style": [str(PHOTO.parent.parent / "style" / "starry_night.jpg")],
        "params": {"size": 48, "steps": 2},
        "devices": "cpu",
    }
    manifest.write_text(yaml.safe_dump(doc))
    return manifest


@pytest.mark.slow
def test_a_hostile_flow_cache_is_computed_anew_by_the_command(tmp_path: Path) -> None:
    """Through the command, --force too: the file at the pair's cache name is taken as
    absent, the frame runs, and the file is overwritten with the flow."""
    manifest = _pan(tmp_path)
    digests = [file_sha256(tmp_path / "frames" / name) for name in ("f1.png", "f2.png")]
    path = tmp_path / "out" / ".nst-batch" / "flow" / flow.cache_name(*digests, (48, 36))
    path.parent.mkdir(parents=True)
    hostile = _hostile(tmp_path)
    for name in ("plain_npy", "huge_header"):
        shutil.copyfile(hostile[name], path)
        result = CliRunner().invoke(main, [str(manifest), "--force"])
        assert result.exit_code == 0, (name, result.output)
        assert "internal error" not in result.output and "Traceback" not in result.output
        rows = read_rows(tmp_path / "out" / "results.csv")[-2:]
        assert [(row.status, row.start) for row in rows] == [("done", "content"), ("done", "frame")]
        assert flow.from_file(path, (48, 36)) is not None, name  # overwritten with the flow
