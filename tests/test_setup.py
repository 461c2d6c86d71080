"""scripts/setup.sh's decisions, with a stand-in environment that records what pip is asked:
a torch that imports is kept (a cluster's own CUDA build, with or without torchvision), a
missing one is installed from the index the user names."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _fake_venv(root: Path, has_torch: bool) -> Path:
    """A venv whose python imports torch or not, and whose pip logs its arguments."""
    bin_ = root / "venv" / "bin"
    bin_.mkdir(parents=True)
    verdict = "exit 0" if has_torch else "exit 1"
    (bin_ / "python").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *"import torch; print"*) echo 2.9.0+cu126 ;;\n'
        f'  *"import torch"*) {verdict} ;;\n'
        "esac\n"
    )
    (bin_ / "pip").write_text(f'#!/bin/sh\necho "$@" >> {root / "pip.log"}\n')
    for tool in ("python", "pip"):
        (bin_ / tool).chmod(0o755)
    return root / "venv"


def _setup(tmp_path: Path, has_torch: bool, **env: str) -> tuple[str, list[str]]:
    venv = _fake_venv(tmp_path, has_torch)
    scripts = tmp_path / "repo" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", scripts / "setup.sh")
    run = subprocess.run(
        ["bash", str(scripts / "setup.sh")],
        env={**os.environ, "VENV": str(venv), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    log = tmp_path / "pip.log"
    return run.stdout, log.read_text().splitlines() if log.exists() else []


def test_a_clusters_torch_without_torchvision_is_kept(tmp_path: Path) -> None:
    out, pip = _setup(tmp_path, has_torch=True)
    assert "keeping the installed torch 2.9.0+cu126" in out
    assert pip == ["install --quiet -e .[dev]"]  # torch is never reinstalled over it


def test_a_missing_torch_is_installed_at_the_pinned_version(tmp_path: Path) -> None:
    _, pip = _setup(tmp_path, has_torch=False)
    assert pip == ["install --quiet torch==2.14.1", "install --quiet -e .[dev]"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"NST_BATCH_TORCH_INDEX": "https://download.pytorch.org/whl/cpu"},
            "install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.14.1",
        ),
        ({"NST_BATCH_TORCH": "torch==2.13.0"}, "install --quiet torch==2.13.0"),
    ],
)
def test_torch_comes_from_the_index_or_version_the_user_names(tmp_path, env, expected) -> None:
    _, pip = _setup(tmp_path, has_torch=False, **env)
    assert pip[0] == expected


def test_the_package_does_not_require_torchvision() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert "torchvision" not in text.split("[project.optional-dependencies]")[0]
