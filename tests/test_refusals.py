"""Refusals and odd-but-valid inputs through the real `nst-batch` command (issue items 5, 8-15, 17).

Each test runs the click command in process (CliRunner on `nst_batch.cli.main`) or the installed
`nst-batch` executable in a subprocess, and checks the exit code, a fragment of the message the
code writes, that no traceback escapes, and that every file outside the output folder (the
manifest, the images, weights and caches, all copied into tmp_path) is byte-identical afterwards.

Covered:
  8   a content file whose name is not UTF-8 or holds a line break: found through a folder, it
      runs under its escaped name ('caf\\xe9'); listed by its path, exit 2 naming the file; listed
      with a 'name:', it runs, and `report` works after it
  9   one image listed as a file (with params) and through its folder, in either order: the
      file's entry wins; two differing single-file entries: exit 2
  10  YAML aliases that expand to ~10^8 values, a recursive alias, a plan over max_tasks
  11  a results.csv that is not ours (semicolons, UTF-16): run and report exit 2, file untouched
  12  exit-2 sentences: --devices cuda without CUDA, NUL in five keys, a text file as the
      torchvision cache, results.csv a folder, a Slurm task ID outside its array; a folder
      named results-old.csv is not ours and `report` ignores it
  13  a content named '=HYPERLINK(1)': its results cell is written "'=..." and read back exact
  14  output: ~/gallery goes to $HOME/gallery, never to a folder named '~'
  15  header thumbnails of contents named 'x/y' and 'x_y' are two files, both on the page
  17  a weights file with NaN in conv1_1: exit 2 before the output folder exists
  5   a torchvision cache file carrying a pickle payload: refused by checksum, payload never runs

Real runs are 48 px (chelsea at 32 px would be 32x21, under the 32 px minimum) and 2 steps
(the fewest Params allows), on copies of the bundled images.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import torch
from conftest import CONTENT, STYLE, invoke

from nst_batch.manifest import load_manifest
from nst_batch.plan import plan
from nst_batch.results import COLUMNS, read_rows
from nst_batch.vgg import CONV_NAMES, CONV_SHAPES, TORCHVISION_INDEX
from nst_batch.weights import TORCHVISION_FILE, TORCHVISION_SHA256_PREFIX

NST_BATCH = Path(sys.executable).parent / "nst-batch"
CHELSEA = CONTENT / "chelsea.png"  # 451x300: 48x32 at size 48
COFFEE = CONTENT / "coffee.png"
SHIPWRECK = STYLE / "shipwreck.jpg"
SCREAM = STYLE / "the_scream.jpg"
SIZE, STEPS = 48, 2
NOT_OURS = "is not a results file of nst-batch"
CHECKSUM = f"does not match the checksum its name promises (SHA-256 {TORCHVISION_SHA256_PREFIX}...)"

Snapshot = dict[str, bytes | None]


# --- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str  # stdout and stderr together
    exception: BaseException | None = None  # CliRunner only: what the command raised


def _invoke(*args: object) -> Outcome:
    """`invoke` as an Outcome, comparable with a subprocess's (`_execute`)."""
    result = invoke(*args)
    return Outcome(result.exit_code, result.output, result.exception)


def _invoke_within(limit_mb: float, *args: object) -> Outcome:
    """`_invoke`, failing if Python's allocations ever held more than `limit_mb` MB at once.

    How much work a refusal did, measured independently of the machine's speed: a refusal
    peaks under 0.1 MB and a 1-task dry run near 1.3 MB, while a 10,000-task dry run peaks
    near 50 MB; building 100,000 tasks or 10^8 alias values would take hundreds of MB.
    """
    tracemalloc.start()
    try:
        outcome = _invoke(*args)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert peak < limit_mb, f"{peak:.1f} MB at the peak: the input was expanded"
    return outcome


def _execute(*args: object, cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    """The installed executable in a subprocess, with `env` added to this environment."""
    proc = subprocess.run(
        [str(NST_BATCH), *(str(a) for a in args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=300,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout + proc.stderr)


def _check(outcome: Outcome, code: int, *fragments: str) -> None:
    """The exit code, no traceback (nor a stray exception CliRunner caught), each fragment."""
    assert outcome.code == code, outcome.output
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), repr(
        outcome.exception
    )
    assert "Traceback" not in outcome.output, outcome.output
    for fragment in fragments:
        assert fragment in outcome.output, (fragment, outcome.output)


def _snapshot(root: Path, output: Path | None = None) -> Snapshot:
    """{path relative to root: bytes} of every file under root, None for a folder (so a new
    folder shows too), the target for a link; the output folder and what is in it left out."""
    found: Snapshot = {}
    for here, folders, files in os.walk(root):
        base = Path(here)
        folders[:] = [name for name in folders if base / name != output]
        for name in folders:
            found[f"{(base / name).relative_to(root)}/"] = None
        for name in files:
            path = base / name
            data = os.fsencode(os.readlink(path)) if path.is_symlink() else path.read_bytes()
            found[str(path.relative_to(root))] = data
    return found


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path with copies of the images: images/chelsea.png, images/coffee.png, style/*."""
    _copy(CHELSEA, tmp_path / "images" / "chelsea.png")
    _copy(COFFEE, tmp_path / "images" / "coffee.png")
    _copy(SHIPWRECK, tmp_path / "style" / "shipwreck.jpg")
    _copy(SCREAM, tmp_path / "style" / "the_scream.jpg")
    return tmp_path


def _yaml(folder: Path, text: str, name: str = "m.yaml") -> Path:
    """A manifest written as this YAML text (dedented), so escapes such as "\\0" stay YAML's."""
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _gallery(folder: Path, *, content: str = "[images/chelsea.png]", extra: str = "") -> Path:
    """A 1x1 manifest (chelsea x shipwreck at 48 px, 2 steps) with `extra` top-level lines."""
    return _yaml(
        folder,
        f"output: out\ncontent: {content}\nstyle: [style/shipwreck.jpg]\n"
        f"params: {{size: {SIZE}, steps: {STEPS}}}\n{extra}",
    )


def _plant(folder: Path, raw_name: bytes, source: Path = CHELSEA) -> Path:
    """A copy of `source` in `folder` under a file name given as raw bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.fsencode(str(folder)) + b"/" + raw_name, "wb") as f:
        f.write(source.read_bytes())
    return folder / os.fsdecode(raw_name)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# --- 8: file names that cannot name an output -------------------------------------------------

ODD_NAMES = [pytest.param(b"caf\xe9.png", id="not-utf8"), pytest.param(b"a\nb.png", id="newline")]


@pytest.mark.parametrize("via", ["runner", "executable"])
@pytest.mark.parametrize("raw_name", ODD_NAMES)
def test_odd_file_name_in_a_content_folder_is_stylized_under_its_escaped_name(
    root: Path, raw_name: bytes, via: str
) -> None:
    """One odd name in a folder (an old archive's Latin-1 name) does not stop the gallery:
    the file goes by its stem as messages show it, backslash escapes and all."""
    odd = _plant(root / "photos", raw_name)
    _copy(COFFEE, root / "photos" / "coffee.png")
    manifest = _gallery(root, content="[photos]")
    before = _snapshot(root, root / "out")
    outcome = _invoke(manifest) if via == "runner" else _execute("m.yaml", cwd=root)
    _check(outcome, 0, "2 tasks: 2 done, 0 skipped, 0 failed")
    escaped = {b"caf\xe9.png": "caf\\xe9", b"a\nb.png": "a\\nb"}[raw_name]
    assert sorted(p.name for p in (root / "out").glob("*__shipwreck.jpg")) == sorted(
        ["coffee__shipwreck.jpg", f"{escaped}__shipwreck.jpg"]
    )
    rows = read_rows(root / "out" / "results.csv")
    assert sorted((r.content, r.status) for r in rows) == sorted(
        [("coffee", "done"), (escaped, "done")]
    )
    _check(_invoke("report", manifest), 0, "2 tasks planned: 2 done")
    assert odd.exists()
    assert _snapshot(root, root / "out") == before


@pytest.mark.parametrize("raw_name", ODD_NAMES)
def test_odd_file_name_listed_by_its_path_is_refused_naming_it(root: Path, raw_name: bytes) -> None:
    """Listed by its path (here through --set, as a shell passes the bytes), the file is
    refused: its entry can give it a 'name:'."""
    odd = _plant(root / "photos", raw_name)
    manifest = _gallery(root, content="[placeholder.png]")
    before = _snapshot(root)
    outcome = _invoke(manifest, "--dry-run", "--set", f"content.0.path={odd}")
    _check(
        outcome,
        2,
        "its name is not valid UTF-8 or holds a control character",
        "rename the file, or list it as an entry with a 'name:'",
    )
    # One sentence on one line, naming the file with its odd bytes or characters escaped.
    shown = {b"caf\xe9.png": "caf\\xe9.png", b"a\nb.png": "a\\nb.png"}[raw_name]
    errors = _error_lines(outcome.output)
    assert len(errors) == 1, outcome.output
    assert f"content file {root / 'photos'}/{shown}" in errors[0], outcome.output
    assert not (root / "out").exists()
    assert _snapshot(root) == before


def test_line_break_file_listed_with_a_name_runs_and_reports(root: Path) -> None:
    _plant(root / "photos", b"a\nb.png")
    manifest = _gallery(root, content='[{path: "photos/a\\nb.png", name: cafe}]')
    before = _snapshot(root, root / "out")
    _check(_invoke(manifest), 0)
    assert (root / "out" / "cafe__shipwreck.jpg").is_file()
    _check(_invoke("report", manifest), 0, "1 tasks planned: 1 done")
    assert [(r.content, r.status) for r in read_rows(root / "out" / "results.csv")] == [
        ("cafe", "done")
    ]
    assert _snapshot(root, root / "out") == before


def test_non_utf8_file_listed_with_a_name_runs_and_reports(root: Path) -> None:
    """A YAML file (UTF-8) cannot spell the path, so the entry's path is given by --set, as
    the shell passes it: the exact bytes of the name."""
    odd = _plant(root / "photos", b"caf\xe9.png")
    manifest = _gallery(root, content="[{path: placeholder.png, name: cafe}]")
    exact = f"content.0.path={odd}"
    before = _snapshot(root, root / "out")
    _check(_invoke(manifest, "--set", exact), 0)
    assert (root / "out" / "cafe__shipwreck.jpg").is_file()
    _check(_invoke("report", manifest, "--set", exact), 0, "1 tasks planned: 1 done")
    assert [(r.content, r.status) for r in read_rows(root / "out" / "results.csv")] == [
        ("cafe", "done")
    ]
    assert _snapshot(root, root / "out") == before


# --- 9: one image listed twice ----------------------------------------------------------------


@pytest.mark.parametrize("file_first", [True, False], ids=["file-then-folder", "folder-then-file"])
def test_single_file_entry_wins_over_its_folder(
    root: Path, write_manifest: Any, file_first: bool
) -> None:
    entry = {"path": "images/chelsea.png", "params": {"size": 40}}
    manifest = write_manifest(
        content=[entry, "images"] if file_first else ["images", entry],
        style=["style/shipwreck.jpg", "style/the_scream.jpg"],
        params={"size": SIZE, "steps": STEPS},
    )
    before = _snapshot(root)
    tasks = plan(load_manifest(manifest))
    chelsea = [t for t in tasks if t.content.path.name == "chelsea.png"]
    assert sorted(t.style.name for t in chelsea) == ["shipwreck", "the_scream"]  # one per style
    assert {t.params.size for t in chelsea} == {40}
    assert {t.params.size for t in tasks if t not in chelsea} == {SIZE}  # coffee, from the folder
    assert len(tasks) == 4
    outcome = _invoke(manifest, "--dry-run")
    _check(outcome, 0, "4 to run, 0 up to date, 4 in all")
    assert len(re.findall(r"^\s*would run  chelsea x ", outcome.output, re.MULTILINE)) == 2
    assert not (root / "out").exists()
    assert _snapshot(root) == before


def test_two_single_file_entries_of_one_image_that_differ_are_refused(
    root: Path, write_manifest: Any
) -> None:
    manifest = write_manifest(
        content=[
            {"path": "images/chelsea.png", "params": {"size": 40}},
            {"path": "images/chelsea.png", "params": {"size": 44}},
        ],
        style=["style/shipwreck.jpg"],
        params={"size": SIZE, "steps": STEPS},
    )
    before = _snapshot(root)
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        f"content image {root / 'images' / 'chelsea.png'} is listed twice",
        "(content[0] and content[1])",
    )
    assert not (root / "out").exists()
    assert _snapshot(root) == before


# --- 10: alias bombs and huge plans -----------------------------------------------------------


def _alias_levels(indent: str, levels: str = "abcdefgh") -> str:
    """Lines `a: &a [1 x10]`, `b: &b [*a x10]`, ...: the last stands for 10^len(levels) values."""
    lines = [f"{indent}{levels[0]}: &{levels[0]} [{', '.join(['1'] * 10)}]"]
    for previous, level in itertools.pairwise(levels):
        lines.append(f"{indent}{level}: &{level} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("place", ["sweep", "content"])
def test_yaml_alias_bomb_is_refused_fast(root: Path, place: str) -> None:
    if place == "sweep":
        text = (
            "output: out\ncontent: [images/chelsea.png]\nstyle: [style/shipwreck.jpg]\n"
            f"sweep:\n{_alias_levels('  ')}"
        )
    else:  # the anchors in a list entry's params, the bomb as a second entry of the list
        text = (
            "output: out\nstyle: [style/shipwreck.jpg]\ncontent:\n"
            "  - path: images/chelsea.png\n    params:\n"
            f"{_alias_levels('      ')}"
            "  - *h\n"
        )
    manifest = _yaml(root, text)
    before = _snapshot(root)
    outcome = _invoke_within(16, manifest, "--dry-run")
    _check(outcome, 2, "the YAML's aliases (*name) expand to", "more than the limit of 100,000")
    assert not (root / "out").exists()
    assert _snapshot(root) == before


def test_recursive_yaml_alias_is_refused(root: Path) -> None:
    manifest = _gallery(root, extra="sweep: {seed: &r [*r]}\n")
    before = _snapshot(root)
    _check(
        _invoke(manifest, "--dry-run"),
        2,
        "aliases (*name) expand to infinitely many (a recursive alias)",
    )
    assert _snapshot(root) == before


def _sweep(keys: dict[str, list[Any]]) -> str:
    return "sweep:\n" + "".join(f"  {k}: [{', '.join(map(str, v))}]\n" for k, v in keys.items())


def test_plan_over_max_tasks_is_refused_naming_its_size_and_the_sweep(root: Path) -> None:
    keys = ["seed", "style_weight", "content_weight", "tv_weight", "style_scale"]
    manifest = _gallery(root, extra=_sweep({k: list(range(1, 11)) for k in keys}))
    before = _snapshot(root)
    outcome = _invoke_within(16, manifest, "--dry-run")
    _check(
        outcome,
        2,
        "the plan has 100,000 tasks (1 content x 1 style x 100,000 variants)",
        "more than max_tasks (20,000)",
        "sweep (5 keys, 100,000 variants: seed 10 x style_weight 10 x content_weight 10 x "
        "tv_weight 10 x style_scale 10) raises it most",
    )
    assert _snapshot(root) == before


@pytest.mark.parametrize(("limit", "code"), [(5, 2), (100, 0)])
def test_max_tasks_in_the_manifest_sets_the_limit(root: Path, limit: int, code: int) -> None:
    sweep = _sweep({"seed": [0, 1, 2], "style_weight": [1, 10, 100], "tv_weight": [0, 0.5, 1]})
    manifest = _gallery(root, extra=f"max_tasks: {limit}\n{sweep}")
    before = _snapshot(root)
    outcome = _invoke(manifest, "--dry-run")
    if code == 2:
        _check(outcome, 2, "the plan has 27 tasks", "more than max_tasks (5)", "sweep (3 keys")
    else:
        _check(outcome, 0, "27 to run, 0 up to date, 27 in all")
    assert not (root / "out").exists()
    assert _snapshot(root) == before


# --- 11: a results.csv that is not ours -------------------------------------------------------

ALIEN_RESULTS = [
    pytest.param(
        b"content;style;variant;output;status\nchelsea;shipwreck;;x.jpg;done\n", id="semicolons"
    ),
    pytest.param(
        (",".join(COLUMNS) + "\nchelsea,shipwreck,,x.jpg,done" + "," * 13 + "\n").encode("utf-16"),
        id="utf16",
    ),
]


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize("data", ALIEN_RESULTS)
def test_results_file_not_ours_is_refused_and_left_as_it_is(
    root: Path, data: bytes, command: str
) -> None:
    manifest = _gallery(root)
    out = root / "out"
    out.mkdir()
    (out / "results.csv").write_bytes(data)
    before = _snapshot(root, out)
    args = [manifest] if command == "run" else ["report", manifest]
    _check(_invoke(*args), 2, f"{out / 'results.csv'} {NOT_OURS}", "it was left as it is")
    assert (out / "results.csv").read_bytes() == data
    assert not [p for p in out.rglob("*") if p.suffix in (".jpg", ".json", ".html")]
    assert _snapshot(root, out) == before


# --- 12: exit-2 sentences instead of tracebacks -----------------------------------------------


def test_devices_cuda_without_cuda_is_a_sentence(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a machine without CUDA, also where this one has a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    manifest = _gallery(root)
    before = _snapshot(root)
    _check(
        _invoke(manifest, "--devices", "cuda"),
        2,
        "device 'cuda': this machine has no CUDA device; use devices: auto or cpu",
    )
    assert not (root / "out").exists()
    assert _snapshot(root) == before


NUL_MANIFESTS = [
    pytest.param("output", 'output: "out\\0x"\n', id="output"),
    pytest.param(
        "content[0].name", 'content: [{path: images/chelsea.png, name: "che\\0lsea"}]\n', id="name"
    ),
    pytest.param("weights", 'weights: "vgg\\0.pth"\n', id="weights"),
    pytest.param(
        "params.init_image",
        f'params: {{size: {SIZE}, steps: {STEPS}, init: image, init_image: "images/c\\0.png"}}\n',
        id="init_image",
    ),
    pytest.param("name", 'name: "{content}\\0{style}"\n', id="template"),
]


@pytest.mark.parametrize(("key", "line"), NUL_MANIFESTS)
def test_nul_character_is_refused_naming_the_key(root: Path, key: str, line: str) -> None:
    lines = {
        "output": "output: out\n",
        "content": "content: [images/chelsea.png]\n",
        "style": "style: [style/shipwreck.jpg]\n",
        "params": f"params: {{size: {SIZE}, steps: {STEPS}}}\n",
    }
    lines[line.partition(":")[0]] = line
    manifest = _yaml(root, "".join(lines.values()))
    assert "\\0" in manifest.read_text() and "\0" not in manifest.read_text()
    before = _snapshot(root)
    _check(
        _invoke(manifest),
        2,
        f"{manifest}: {key}: contains a NUL character (\\0), which no path or name may hold",
    )
    assert not [p for p in root.iterdir() if p.name.startswith("out")]
    assert _snapshot(root) == before


def test_torchvision_cache_that_is_text_is_refused_by_checksum(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    cache = root / "torch" / "hub" / "checkpoints" / TORCHVISION_FILE
    cache.parent.mkdir(parents=True)
    cache.write_text("<html>404 Not Found</html>\n")
    manifest = _gallery(root, extra="weights: torchvision\n")
    before = _snapshot(root)
    _check(_invoke(manifest), 2, f"weights 'torchvision': {cache} {CHECKSUM}")
    assert not (root / "out").exists()
    assert _snapshot(root) == before


def test_folder_named_like_an_old_results_file_is_ignored_by_report(root: Path) -> None:
    manifest = _gallery(root)
    old = root / "out" / "results-old.csv"
    old.mkdir(parents=True)
    (old / "notes.txt").write_text("mine\n")
    before = _snapshot(root, root / "out")
    _check(_invoke("report", manifest), 0, "1 tasks planned", "no results yet in")
    assert old.is_dir()
    assert (old / "notes.txt").read_text() == "mine\n"
    assert _snapshot(root, root / "out") == before


@pytest.mark.parametrize("command", ["run", "report"])
def test_folder_named_results_csv_is_a_sentence(root: Path, command: str) -> None:
    manifest = _gallery(root)
    folder = root / "out" / "results.csv"
    folder.mkdir(parents=True)
    before = _snapshot(root, root / "out")
    args = [manifest] if command == "run" else ["report", manifest]
    _check(
        _invoke(*args),
        2,
        f"{folder} is a folder, where nst-batch keeps its results file; move it away",
    )
    assert folder.is_dir() and not any(folder.iterdir())
    assert not list((root / "out").glob("*.jpg"))
    assert _snapshot(root, root / "out") == before


@pytest.mark.parametrize("via", ["runner", "executable"])
def test_slurm_task_id_outside_its_array_is_a_sentence(
    root: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    env = {
        "SLURM_ARRAY_TASK_ID": "7",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "3",
        "SLURM_ARRAY_TASK_COUNT": "4",
    }
    monkeypatch.delenv("SLURM_ARRAY_TASK_STEP", raising=False)
    manifest = _gallery(root)
    before = _snapshot(root)
    if via == "runner":
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        outcome = _invoke(manifest)
    else:
        outcome = _execute("m.yaml", cwd=root, env=env)
    _check(
        outcome,
        2,
        "SLURM_ARRAY_TASK_ID 7 is outside this array's task IDs (0 to 3)",
        "give --shard K/N",
    )
    assert not (root / "out").exists()
    assert _snapshot(root) == before


# --- 13: CSV formula injection ----------------------------------------------------------------


def test_formula_content_name_is_neutralized_in_results(root: Path) -> None:
    name = "=HYPERLINK(1)"
    _copy(CHELSEA, root / "images" / f"{name}.png")
    manifest = _gallery(root, content=f"['images/{name}.png']")
    out = root / "out"
    before = _snapshot(root, out)

    _check(_invoke(manifest), 0)
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    assert [row["content"] for row in raw] == [f"'{name}"]
    assert raw[0]["output"] == f"'{name}__shipwreck.jpg"
    assert [(r.content, r.status) for r in read_rows(out / "results.csv")] == [(name, "done")]
    assert (out / f"{name}__shipwreck.jpg").is_file()

    _check(_invoke("report", manifest), 0, "1 tasks planned: 1 done")
    rows = read_rows(out / "results.csv")
    assert [(r.content, r.status) for r in rows] == [(name, "done")]
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        assert [row["content"] for row in csv.DictReader(f)] == [f"'{name}"]
    assert _snapshot(root, out) == before


# --- 14: output under ~ -----------------------------------------------------------------------


def test_output_under_home_goes_to_home_not_a_folder_named_tilde(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = root / "home"
    home.mkdir()
    project = root / "project"
    project.mkdir()
    manifest = _yaml(
        project,
        f"""\
        output: ~/gallery
        content: [{root / "images" / "chelsea.png"}]
        style: [{root / "style" / "shipwreck.jpg"}]
        params: {{size: {SIZE}, steps: {STEPS}}}
        """,
    )
    gallery = home / "gallery"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    before = _snapshot(root, gallery)

    assert load_manifest(manifest).output == gallery
    assert [t.output for t in plan(load_manifest(manifest))] == [gallery / "chelsea__shipwreck.jpg"]
    _check(
        _invoke(manifest, "--dry-run"), 0, "would run  chelsea x shipwreck  ->  chelsea__shipwreck"
    )
    assert not gallery.exists()
    assert _snapshot(root, gallery) == before

    outcome = _execute("m.yaml", cwd=project, env={"HOME": str(home)})
    _check(outcome, 0, f"outputs: {gallery}")
    assert (gallery / "chelsea__shipwreck.jpg").is_file()
    assert not (project / "~").exists()
    assert _snapshot(root, gallery) == before  # nothing new beside the manifest or in $HOME


# --- 15: header thumbnails of names that differ only in '/' and '_' ---------------------------


def test_header_thumbnails_of_x_slash_y_and_x_underscore_y_are_two_files(root: Path) -> None:
    manifest = _gallery(
        root,
        content="[{path: images/chelsea.png, name: x/y}, {path: images/coffee.png, name: x_y}]",
    )
    out = root / "out"
    before = _snapshot(root, out)
    _check(_invoke(manifest), 0)
    thumbs = sorted((out / "thumbs" / "content").iterdir())
    assert len(thumbs) == 2, thumbs
    assert thumbs[0].read_bytes() != thumbs[1].read_bytes()
    page = (out / "index.html").read_text(encoding="utf-8")
    for thumb in thumbs:
        assert quote(thumb.relative_to(out).as_posix(), safe="/") in page, thumb
    # Each header shows its own image: the thumbnail beside the name 'x/y' is chelsea's.
    headers = re.findall(
        r'<th class="content"><img src="([^"]+)"[^>]*><div class="name" title="([^"]+)">'
        r"([^<]+)</div>",
        page,
    )
    assert sorted((name, title) for _, title, name in headers) == [
        ("x/y", "chelsea.png"),
        ("x_y", "coffee.png"),
    ]
    assert len({src for src, _, _ in headers}) == 2
    assert _snapshot(root, out) == before


# --- 17 and 5: weights that must not be used --------------------------------------------------


def _features_state_with_nan() -> dict[str, torch.Tensor]:
    """torchvision's vgg19().features keys and shapes, conv1_1's weight all NaN. The other
    tensors are one zero expanded to their shape, so the saved file stays a few kB."""
    state = {}
    for name, (out_ch, in_ch) in zip(CONV_NAMES, CONV_SHAPES, strict=True):
        index = TORCHVISION_INDEX[name]
        state[f"{index}.weight"] = torch.zeros(1).expand(out_ch, in_ch, 3, 3)
        state[f"{index}.bias"] = torch.zeros(1).expand(out_ch)
    state["0.weight"] = torch.full((64, 3, 3, 3), float("nan"))
    return state


def test_weights_file_with_nan_is_refused_before_the_output_folder_exists(root: Path) -> None:
    weights = root / "weights" / "vgg19-features.pth"
    weights.parent.mkdir()
    torch.save(_features_state_with_nan(), weights)
    assert weights.stat().st_size < 100_000
    manifest = _gallery(root, extra="weights: weights/vgg19-features.pth\n")
    before = _snapshot(root)
    _check(
        _invoke(manifest),
        2,
        f"weights {weights}: conv1_1.weight holds NaN or infinite values, so these weights are "
        "corrupt",
    )
    assert not (root / "out").exists()
    assert _snapshot(root) == before


class _Payload:
    """Unpickled, it would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_torchvision_cache_with_a_pickle_payload_is_refused_unrun(root: Path) -> None:
    marker = root / "payload-ran"
    cache = root / "torch" / "hub" / "checkpoints" / TORCHVISION_FILE
    cache.parent.mkdir(parents=True)
    torch.save({"x": _Payload(f"touch {marker}")}, cache)
    assert not hashlib.sha256(cache.read_bytes()).hexdigest().startswith(TORCHVISION_SHA256_PREFIX)
    # The payload is live: a full unpickling of the same kind of file runs it.
    control = root / "control-ran"
    torch.save({"x": _Payload(f"touch {control}")}, root / "control.pth")
    torch.load(root / "control.pth", weights_only=False)
    assert control.exists()
    _gallery(root, extra="weights: torchvision\n")
    before = _snapshot(root)
    outcome = _execute("m.yaml", cwd=root, env={"TORCH_HOME": str(root / "torch")})
    _check(outcome, 2, f"weights 'torchvision': {cache} {CHECKSUM}", "was not loaded")
    assert not marker.exists()
    assert not (root / "out").exists()
    assert _snapshot(root) == before


def test_the_mps_device_without_metal_is_a_sentence(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mps` is accepted as a device name; where Metal is missing a run is refused."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # also on a Mac
    outcome = _invoke(_gallery(root), "--devices", "mps")
    _check(outcome, 2, "device 'mps': Apple's Metal is not available here; use cpu")
    assert not (root / "out").exists()
