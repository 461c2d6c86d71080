"""Shared fixtures and helpers: the bundled real images, a small gallery manifest factory,
the VGG19 of the Gatys layers, the command in process (`invoke`), a pause that holds a real
run at a step (`pause`), file-permission checks that hold as root (`run_unprivileged`), and
the opt-ins that turn a skip into a failure where a run asked for the tests (CUDA, Chromium)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from nst_batch import images
from nst_batch.cli import main
from nst_batch.params import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS
from nst_batch.vgg import VGG19Features, build_vgg19

BROWSER_OPT_IN = "NST_BATCH_TEST_BROWSER"  # 1: the browser tests must run (.ci/run sets it)
CUDA_OPT_IN = "NST_BATCH_TEST_CUDA"  # 1: the cuda-marked tests must run (on a GPU machine)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "examples" / "images"
PAUSE = Path(__file__).resolve().parent / "pause"  # its sitecustomize.py pauses a real run
CONTENT = IMAGES / "content"
STYLE = IMAGES / "style"


def content_at(path: Path, size: int) -> torch.Tensor:
    """A content image at output size `size` (1, 3, H, W), as the worker sizes it."""
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.target_size(*image.size, size)))


def style_at(path: Path, size: int, scale: float = 1.0) -> torch.Tensor:
    """A style image for output size `size` (longest side size x scale), as the worker sizes it."""
    image = images.load_image(path)
    return images.to_tensor(images.resize(image, images.scaled_style_size(image.size, size, scale)))


def style_like(path: Path, content: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A style image for the output size of `content` (its longest side)."""
    return style_at(path, max(content.shape[-2:]), scale)


@pytest.fixture(scope="session")
def net() -> VGG19Features:
    """VGG19 with the original weights and Gatys et al.'s content and style layers, on the CPU.
    Shared by every test that asks: none may change it (move it, cast it, train it)."""
    return build_vgg19("original", (*GATYS_CONTENT_LAYERS, *GATYS_STYLE_LAYERS))


@pytest.fixture(scope="module")
def content() -> torch.Tensor:
    """chelsea.png at 64 px: a (1, 3, 43, 64) content for optimizer and precision tests."""
    tensor = content_at(CONTENT / "chelsea.png", 64)
    assert tensor.shape == (1, 3, 43, 64)
    return tensor


@pytest.fixture(scope="module")
def style(content: torch.Tensor) -> torch.Tensor:
    """starry_night.jpg sized for `content`."""
    return style_like(STYLE / "starry_night.jpg", content)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `cuda`-marked test skips without a CUDA device: CPU-only machines, CI among them,
    cannot run it. Where the run asked for them (NST_BATCH_TEST_CUDA=1) it fails instead."""
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        reason = "needs a CUDA device (this machine has none)"
        if os.environ.get(CUDA_OPT_IN) == "1":
            pytest.fail(f"{reason}; {CUDA_OPT_IN}=1 asks for the CUDA tests")
        pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """Chromium's path. Without it a browser test is skipped, or fails where the run asked
    for the browser tests (NST_BATCH_TEST_BROWSER=1): a CI that cannot install the browser
    must not pass with its tests unrun."""
    if CHROMIUM is None:
        reason = "needs Chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get(BROWSER_OPT_IN) == "1":
            pytest.fail(f"{reason}; {BROWSER_OPT_IN}=1 asks for the browser tests")
        pytest.skip(reason)
    return CHROMIUM


def write_manifest_in(folder: Path, file: str = "gallery.yaml", /, **fields: Any) -> Path:
    """Write a manifest as `folder`/`file`: a 2x2 gallery at 64 px and 8 steps unless overridden.

    Keyword arguments replace top-level keys (`name` too: the file's name is `file`);
    `params` is merged into the small defaults. A key given as None, top-level or in
    `params`, is left out.
    """
    doc: dict[str, Any] = {
        "output": "out",
        "content": [str(CONTENT / "chelsea.png"), str(CONTENT / "coffee.png")],
        "style": [str(STYLE / "starry_night.jpg"), str(STYLE / "the_scream.jpg")],
        "params": {"size": 64, "steps": 8},
    }
    params = {**doc["params"], **fields.pop("params", {})}
    doc.update(fields)
    doc["params"] = {key: value for key, value in params.items() if value is not None}
    doc = {key: value for key, value in doc.items() if value is not None}
    path = folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """`write_manifest_in` tmp_path: write_manifest(file="gallery.yaml", /, **fields)."""
    return functools.partial(write_manifest_in, tmp_path)


class Pause:
    """Pauses a real run at a step, so that a test acts on an event rather than after a time
    (see tests/pause/sitecustomize.py): pass `env(...)` to the process, `wait` for it to
    pause, act (a signal, a second run), then `release` it or let a stop release it."""

    GUARD = 600.0  # seconds: only a failure guard; a run reaches its pause in seconds

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()

    def env(self, step: int, after: str = "evaluation", skip: int = 0) -> dict[str, str]:
        """The environment of a run whose processes each pause once, at `step` (see the hook)."""
        spec = {"folder": str(self.folder), "step": step, "after": after, "skip": skip}
        path = os.pathsep.join(filter(None, [str(PAUSE), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "NST_BATCH_TEST_PAUSE": json.dumps(spec)}

    def wait(self, process: subprocess.Popen[str], count: int = 1) -> dict[int, int]:
        """Wait until `count` processes of the run have paused: {pid: steps done}. Fails if
        the run ends first or the hook could not be installed."""
        deadline = time.monotonic() + self.GUARD
        while len(paused := self.paused()) < count:
            for error in self.folder.glob("error-*"):
                pytest.fail(f"the pause hook failed:\n{error.read_text()}")
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"the run ended (exit {process.returncode}) before it paused:\n{err}")
            assert time.monotonic() < deadline, f"no pause after {self.GUARD:.0f}s"
            time.sleep(0.02)
        return paused

    def paused(self) -> dict[int, int]:
        """{pid: steps done} of the processes paused now."""
        return {int(p.name[7:]): int(p.read_text()) for p in self.folder.glob("paused-*")}

    def wait_resumed(self, pid: int) -> None:
        """Wait until process `pid` has left its pause (its stop flag was set)."""
        deadline = time.monotonic() + self.GUARD
        while not (self.folder / f"resumed-{pid}").exists():
            assert time.monotonic() < deadline, f"process {pid} never left its pause"
            time.sleep(0.02)

    def release(self) -> None:
        """Let every paused process go on, and any later one pass its pause at once."""
        (self.folder / "go").touch()


@pytest.fixture
def pause(tmp_path: Path) -> Pause:
    return Pause(tmp_path / "pause")


NOBODY = 65534  # the uid and gid of `nobody` on Debian and most Linux systems


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder outside tmp_path (pytest's is private to its user) that `nobody` can enter."""
    folder = Path(tempfile.mkdtemp(prefix="nst-batch-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:  # put back what a test took away
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def run_unprivileged(imports: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python `code` in a subprocess whose file accesses are checked as a user's.

    Root reads and writes through any permission bits, so as root the subprocess runs
    `imports` (the interpreter itself may live where nobody cannot read), then becomes
    nobody, real and effective user and groups (os.access asks as the real user), and runs
    `code`: a chmod then refuses for real.
    """
    drop = f"if os.geteuid() == 0:\n    os.setgroups([])\n    os.setgid({NOBODY})\n"
    drop += f"    os.setuid({NOBODY})\n"
    script = f"import os\n{imports}\n{drop}{code}\n"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )


def invoke(*args: object, env: Mapping[str, str | None] | None = None) -> Result:
    """`nst-batch ARGS` in process (click's CliRunner); stderr is part of `output`. `env`
    sets variables for the call (None unsets one)."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def running(pid: int) -> bool:
    """Whether process `pid` exists and is no zombie (PID 1 here may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
