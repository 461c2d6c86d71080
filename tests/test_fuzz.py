"""Property-based fuzzing of the real `nst-batch` command (hypothesis).

Generated manifests, written as YAML text so that anchors, aliases and odd strings are
possible, and `--set` overrides go through the command. The inputs include unknown keys and
typos, values of wrong types, paths with `..`, `~` and NUL characters, a file whose name is
not UTF-8, YAML anchors, merge keys and a small "billion laughs" nest, big sweeps, names that
collide (`./chelsea` beside chelsea.png; styles `x` and `x/` under "{style}/{content}"), the
output folder on the content folder and name templates aimed at an input image.

Every example runs in a fresh temporary folder (HOME and the working folder inside it too),
on copies of the bundled images, and must satisfy:

1. the exit code is 0, 1 or 2;
2. no Python traceback: no uncaught exception, no "Traceback" in stdout or stderr;
3. no file outside the output folder is created, changed or removed (a --dry-run changes
   nothing at all), and every input image stays byte-identical.

A dry run that succeeds must also plan distinct output files, none of them an input image.

The state files a run leaves under out/.nst-batch/ (the file cache, the gallery record,
checkpoints, flow caches) are planted torn, foreign, deeply nested and with headers that
claim huge arrays, before a dry run, `report` and a real run of a two-frame sequence: the
same properties hold, and the command succeeds (exit 0), each file ignored or rebuilt.

Most examples are dry runs through click's CliRunner; a few go through the installed
`nst-batch` entry point in a subprocess; the `slow` test stylizes for real, at 32 to 48 px
and 2 steps on small copies of the images. Generation is derandomized (same examples on
every run) and the number of examples each test ran is printed at its end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import CONTENT, STYLE, invoke
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from nst_batch.manifest import ManifestError, load_manifest
from nst_batch.params import Params
from nst_batch.plan import Task, plan

DRY_EXAMPLES = 500
SUBPROCESS_EXAMPLES = 10
REAL_EXAMPLES = 10
SMALL_SIDE = 72  # longest side of the image copies: real runs read them quickly
RAN: Counter[str] = Counter()  # examples run per test, printed at each test's end

NON_UTF8 = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a name that is not valid UTF-8 on disk
PARAM_KEYS = tuple(Params.model_fields)
TOP_KEYS = (
    "output",
    "content",
    "style",
    "weights",
    "devices",
    "workers_per_device",
    "batch_size",
    "compile",
    "preset",
    "params",
    "sweep",
    "name",
    "format",
    "max_pixels",
)
TYPOS = ("ouput", "contents", "styles", "param", "sweeps", "Name", "formats", "style ", "x-y")
ENTRY_TYPOS = ("pth", "nme", "param", "weight", "Path")
ALLOWED_CODES = {0, 1, 2}

# Paths, relative to the manifest's folder (work/proj): at most two '..', so every one of
# them stays inside the example's temporary folder.
IMAGE_PATHS = (
    "images/content/chelsea.png",
    "images/content/coffee.png",
    f"images/content/{NON_UTF8}.png",
    "images/style/starry_night.jpg",
    "images/style/the_scream.jpg",
)
ODD_PATHS = (
    "images/content",
    "images/content/",
    "images/content/*.png",
    "images/**/*.jpg",
    "images/content/{chelsea,coffee}.png",
    "images/[",
    "./images/../images/content/chelsea.png",
    "../proj/images/content/coffee.png",
    "~/pic.png",
    "~",
    "~nosuchuser/x.png",
    "images/content/chelsea.png\x00.jpg",
    "\x00",
    "",
    " ",
    ".",
    "..",
    "../..",
    "images/content/missing.png",
    "images/content/readme.txt",
    "images/content/chelsea.PNG",
    "images/style/starry_night.jpg/..",
    "job.yaml",
)
OUTPUTS = (
    "out",
    "out/",
    "./out",
    "out/../out2",
    "images/content",
    "images/content/chelsea.png",
    "~/out",
    "~",
    "../other",
    "../../up",
    ".",
    "",
    "out\x00x",
    f"{NON_UTF8}-out",
    "out/ deep /x",
    "a" * 300,
)
TEMPLATES = (
    "{content}__{style}",
    "{style}/{content}",
    "{content}",
    "{content}/{style}",
    "{variant}",
    "{content}/../{style}",
    "../{content}",
    "/abs/{content}",
    "~{content}",
    "{content}{style}{variant}",
    "{}",
    "{0}",
    "{content!r}",
    "{content!s}",
    "{content:>300}",
    "{content:%}",
    "{content:{style}}",
    "{content.__class__}",
    "{style[0]}",
    "{{content}}",
    "{content",
    "content}",
    "results",
    "results-{content}.csv",
    "index",
    "thumbs/{content}",
    "{content}\x00{style}",
    "{content}/",
    ".{style}",
    "{style}/.",
    "{content}\n{style}",
)
IMAGE_NAMES = (
    "chelsea",
    "./chelsea",
    "chelsea/",
    "x",
    "x/",
    "x//",
    "a/b",
    "../x",
    "/abs",
    "~",
    "",
    ".",
    "..",
    "index",
    "thumbs",
    "results.csv",
    NON_UTF8,
    "\x00",
    "a" * 300,
    "x\ny",
    ".hidden",
)
JUNK = (
    "true",
    "false",
    "null",
    "~",
    '"300"',
    "512.0",
    "-1",
    "0",
    "100000000000000000000",
    ".inf",
    "-.inf",
    ".nan",
    "1e6",
    "1.0e+6",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: 1}",
    "!!binary aGk=",
    "2001-12-14",
    "!!set {a, b}",
    "'x'",
    '"\\x00"',
    '"\\udce9"',
)
GOOD_PARAMS: dict[str, tuple[str, ...]] = {
    "size": ("32", "40", "48", "64", "31", "8193", "48.0"),
    "square": ("true", "false", "yes"),
    "style_scale": ("1.0", "0.5", "2", "0", "1e6"),
    "steps": ("2", "3", "1", "0", "100001", '"2"'),
    "optimizer": ("lbfgs", "adam", "sgd"),
    "learning_rate": ("0.5", "1", "null", "0", "-1"),
    "line_search": ("strong_wolfe", "none", "null"),
    "content_weight": ("1", "0", "1000", "-1", "1e6"),
    "style_weight": ("10", "0", "1e3", "-2", ".nan"),
    "tv_weight": ("0", "0.001", "-0.0"),
    "content_layers": ("[relu4_2]", "[conv_4]", "relu4_2", "[relu9_9]", "[]", "[pool5]"),
    "style_layers": ("[relu1_1, relu2_1]", "[conv_1]", "[nope]", "[]", "relu1_1"),
    "style_layer_weights": ("[1, 1]", "[1]", "null", "[-1, 1]"),
    "init": ("content", "noise", "style", "image", "pic"),
    "init_image": tuple(json.dumps(p) for p in (*IMAGE_PATHS[:3], "~/pic.png", "\x00", "..")),
    "seed": ("0", "7", "-1"),
    "pooling": ("max", "avg", "min"),
    "preserve_color": ("none", "luminance", "histogram", "yes"),
    "scales": ("1", "2", "0", "7"),
    "scale_steps": ("2", "1", "0", "null"),
    "adam_average": ("0.9", "0", "1", "1.5"),
    "precision": ("fp32", "bf16", "fp16", "tf32", "fp64"),
}
SWEEP_VALUES: dict[str, tuple[str, ...]] = {
    "style_weight": ("1", "5", "10", "20", "50", "100", "200", "500", "1000", "2000"),
    "content_weight": ("0.1", "0.2", "0.5", "1", "2", "3", "4", "5", "6", "7"),
    "tv_weight": ("0", "0.001", "0.002", "0.003", "0.004", "0.005", "0.006", "0.007", "1", "2"),
    "seed": tuple(str(i) for i in range(10)),
    "steps": tuple(str(i) for i in range(2, 12)),
}
SET_KEYS = (
    "params.size",
    "params.steps",
    "params.style_weight",
    "params.init_image",
    "params.content_layers",
    "sweep.style_weight",
    "sweep.size",
    "output",
    "name",
    "format",
    "weights",
    "devices",
    "preset",
    "content",
    "content.0",
    "content.0.name",
    "content.0.path",
    "content.1.params.steps",
    "content.0.params.size",
    "style.0.weights",
    "style.0.path",
    "style.0.params",
    "style.5",
    "params",
    "sweep",
    "max_pixels",
    "batch_size",
    "workers_per_device",
    "nosuch",
    "params.nosuch",
    "param.size",
    "output.x",
    "name.0",
    "params.size.x",
    "content.-1",
    "a..b",
    " ",
    "",
)
SET_VALUES = (
    "40",
    "32",
    "2",
    "[5, 20]",
    "[5, 5]",
    "[10, 10.0]",
    "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
    "out",
    "../other",
    "~",
    "~/out",
    "images/content",
    "{style}/{content}",
    "{content}",
    "{content:%}",
    "images/content/chelsea.png",
    "[images/content/chelsea.png, images/style/the_scream.jpg]",
    NON_UTF8,
    "\x00",
    "a\x00b",
    "true",
    "null",
    "",
    "[",
    "{",
    "*a",
    "&a 1",
    "!!binary aGk=",
    "!!python/object:os.system",
    "1e6",
    ".inf",
    "{a: 1}",
)


# -- the example's folder ---------------------------------------------------------------


@cache
def _small_images() -> dict[str, bytes]:
    """The bundled images, shrunk to SMALL_SIDE px (PNG stays PNG, JPEG stays JPEG)."""
    out = {}
    for source in (
        CONTENT / "chelsea.png",
        CONTENT / "coffee.png",
        STYLE / "starry_night.jpg",
        STYLE / "the_scream.jpg",
    ):
        with Image.open(source) as image:
            small = image.convert("RGB")
            small.thumbnail((SMALL_SIDE, SMALL_SIDE))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG" if source.suffix == ".png" else "JPEG")
        out[source.name] = buffer.getvalue()
    return out


@dataclass
class Layout:
    root: Path  # the example's temporary folder: nothing outside it is ever touched
    home: Path  # $HOME, so '~' stays inside root
    work: Path  # the working folder of the command
    proj: Path  # the manifest's folder
    inputs: list[Path] = field(default_factory=list)  # every image copy


def _layout(root: Path) -> Layout:
    work = root / "work"
    proj = work / "proj"
    layout = Layout(root=root, home=root / "home", work=work, proj=proj)
    content, style = proj / "images" / "content", proj / "images" / "style"
    for folder in (layout.home, work / "other", content, style):
        folder.mkdir(parents=True)
    small = _small_images()
    files = {
        content / "chelsea.png": small["chelsea.png"],
        content / "coffee.png": small["coffee.png"],
        content / f"{NON_UTF8}.png": small["coffee.png"],
        style / "starry_night.jpg": small["starry_night.jpg"],
        style / "the_scream.jpg": small["the_scream.jpg"],
        layout.home / "pic.png": small["chelsea.png"],
    }
    for path, data in files.items():
        path.write_bytes(data)
        layout.inputs.append(path)
    (content / "readme.txt").write_text("not an image\n")
    (work / "notes.txt").write_text("keep me\n")
    return layout


def _snapshot(root: Path) -> dict[bytes, str]:
    """Every file and folder under root: path (bytes) -> sha256 of the file, or 'dir'."""
    state: dict[bytes, str] = {}
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs:
            state[os.path.join(folder, name)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                state[path] = hashlib.sha256(handle.read()).hexdigest()
    return state


def _hashes(paths: list[Path]) -> dict[Path, str | None]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in paths}


def _changed(before: dict[bytes, str], after: dict[bytes, str]) -> list[bytes]:
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k))


def _outside(changed: list[bytes], after: dict[bytes, str], outputs: list[Path]) -> list[str]:
    """The changed paths that are neither in an allowed output folder nor one of its parents."""
    bad = []
    for path in changed:
        inside = False
        for output in outputs:
            out = os.fsencode(output)
            if path == out or path.startswith(out + b"/"):
                inside = True
            elif after.get(path) == "dir" and out.startswith(path + b"/"):
                inside = True  # a parent folder made for the output folder
        if not inside:
            bad.append(os.fsdecode(path))
    return bad


# -- running the command ----------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None
    text: str  # stdout and stderr
    error: BaseException | None = None  # an uncaught exception (CliRunner only)
    error_text: str = ""


def _env(layout: Layout) -> dict[str, str | None]:
    unset = [k for k in os.environ if k.startswith("SLURM_")]
    return {"HOME": str(layout.home), **dict.fromkeys(unset)}


def _invoke(layout: Layout, args: list[str]) -> Outcome:
    with contextlib.chdir(layout.work):
        result = invoke(*args, env=_env(layout))
    text = result.output
    with contextlib.suppress(ValueError):
        text += result.stderr  # result.output already holds it on click >= 8.2
    error = result.exception
    if error is None or isinstance(error, SystemExit):
        return Outcome(result.exit_code, text)
    assert result.exc_info is not None
    return Outcome(
        result.exit_code, text, error, "".join(traceback.format_exception(*result.exc_info))
    )


def _spawn(layout: Layout, args: list[str]) -> Outcome:
    exe = Path(sys.executable).parent / "nst-batch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["HOME"] = str(layout.home)
    # stdout as on a desktop's UTF-8 locale (this C.UTF-8 box would use surrogateescape)
    env["PYTHONIOENCODING"] = "utf-8:strict"
    done = subprocess.run(
        [str(exe), *args], cwd=layout.work, env=env, capture_output=True, timeout=300
    )
    text = done.stdout.decode(errors="backslashreplace") + done.stderr.decode(
        errors="backslashreplace"
    )
    return Outcome(done.returncode, text)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Case:
    """One generated command line: the manifest's bytes, its --set items and other flags."""

    text: bytes
    overrides: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    manifest: str = "proj/job.yaml"  # as given on the command line, relative to work/
    verb: str = ""  # a command other than the run: "report"
    # Files an earlier run would have left, planted in the folder before the command runs.
    state: Callable[[Layout], None] | None = None

    def manifest_arg(self, layout: Layout) -> str:
        if self.manifest == "ABS":
            return str(layout.work / "proj" / "job.yaml")
        return self.manifest

    def args(self, layout: Layout, dry_run: bool) -> list[str]:
        sets = [a for item in self.overrides for a in ("--set", item)]
        verb = [self.verb] if self.verb else []
        dry = ["--dry-run"] if dry_run else []
        return [*verb, self.manifest_arg(layout), *dry, *self.flags, *sets]

    def command(self, dry_run: bool) -> str:
        args = self.args(Layout(Path("/tmp/T"), Path(), Path("/tmp/T/work"), Path()), dry_run)
        return "nst-batch " + " ".join(
            repr(a) if not a.isprintable() or " " in a else a for a in args
        )

    @property
    def size(self) -> int:
        return len(self.text) + sum(len(o) + 8 for o in self.overrides) + 4 * len(self.flags)


TRACEBACK = "Traceback (most recent call last)"
FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


class PropertyFailure(AssertionError):
    """A broken property; `signature` (what and where) tells one bug from another."""

    def __init__(self, kind: str, where: str, code: int | None, detail: str) -> None:
        self.signature = f"{kind} [{where}]" if where else kind
        self.code = code
        self.detail = detail
        super().__init__(f"{self.signature} (exit {code})\n{detail}")


def _where_exception(error: BaseException) -> str:
    """The exception's type and the deepest frame in nst_batch (else the deepest one)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f"{os.sep}nst_batch{os.sep}" in f.filename] or frames
    place = (
        f" at {Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name}" if ours else ""
    )
    return type(error).__name__ + place


def _where_text(text: str) -> str:
    """As _where_exception, for a traceback printed in the output of a subprocess."""
    block = text[text.index(TRACEBACK) :].splitlines()
    frames = [(i, m) for i, line in enumerate(block) if (m := FRAME.search(line))]
    if not frames:
        return "?"
    ours = [(i, m) for i, m in frames if "/nst_batch/" in m.group(1)] or frames
    last = frames[-1][0]
    error = next((line for line in block[last + 1 :] if line and not line[0].isspace()), "?").split(
        ":"
    )[0]
    m = ours[-1][1]
    return f"{error} at {Path(m.group(1)).name}:{m.group(2)} in {m.group(3)}"


def _check(outcome: Outcome) -> None:
    """Properties 1 and 2: no uncaught exception or printed traceback; exit 0, 1 or 2."""
    if outcome.error is not None:
        raise PropertyFailure(
            "uncaught exception",
            _where_exception(outcome.error),
            outcome.code,
            _tail(outcome.error_text),
        ) from outcome.error
    if TRACEBACK in outcome.text:
        raise PropertyFailure(
            "traceback in the output", _where_text(outcome.text), outcome.code, _tail(outcome.text)
        )
    if outcome.code not in ALLOWED_CODES:
        raise PropertyFailure("exit code", str(outcome.code), outcome.code, _tail(outcome.text))


def _run_case(
    case: Case,
    dry_run: bool,
    run: Callable[[Layout, list[str]], Outcome],
    check_plan: bool = False,
) -> Outcome:
    """Run one case in a fresh folder; raise PropertyFailure if a property breaks."""
    with tempfile.TemporaryDirectory(prefix="nst-fuzz-") as tmp:
        layout = _layout(Path(tmp))
        manifest = layout.work / "proj" / "job.yaml"
        manifest.write_bytes(case.text)
        (layout.work / "proj" / f"job{NON_UTF8}.yaml").write_bytes(case.text)
        if case.state is not None:
            case.state(layout)
        before, inputs = _snapshot(layout.root), _hashes(layout.inputs)
        outcome = run(layout, case.args(layout, dry_run))
        after = _snapshot(layout.root)
        _check(outcome)
        allowed = [] if dry_run else _allowed_outputs(case, layout)
        outside = _outside(_changed(before, after), after, allowed)
        if outside:
            raise PropertyFailure(
                f"{'--dry-run ' if dry_run else ''}changed files outside the output folder",
                "",
                outcome.code,
                f"output folder: {[str(p) for p in allowed]}\nchanged: {outside[:8]}\n"
                f"{_tail(outcome.text, 6)}",
            )
        changed = [str(p) for p, h in _hashes(layout.inputs).items() if inputs[p] != h]
        if changed:
            raise PropertyFailure(
                "input images changed", "", outcome.code, f"{changed}\n{_tail(outcome.text, 6)}"
            )
        if check_plan and outcome.code == 0:
            _check_plan(case, layout)
        return outcome


def _allowed_outputs(case: Case, layout: Layout) -> list[Path]:
    """Where a real run may write: its `output` (the last --set output=... wins), relative
    to the manifest's folder, taken as it is or with '~' expanded. [] if there is none."""
    value: object = None
    # Text that does not parse (bad UTF-8 or YAML, an impossible date, nesting past the
    # stack) names no output folder; any other exception is this test's bug and surfaces.
    with contextlib.suppress(UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        data = yaml.safe_load(case.text.decode("utf-8"))
        value = data.get("output") if isinstance(data, dict) else None
    for item in case.overrides:
        key, _, raw = item.partition("=")
        if key.strip() == "output":
            value = raw
    if not isinstance(value, str) or "\x00" in value:
        return []
    proj = layout.work / "proj"
    expanded = value.replace("~", str(layout.home), 1) if value.startswith("~") else value
    return [(proj / value).resolve(), (proj / expanded).resolve()]


def _planned(case: Case, layout: Layout) -> list[Task]:
    """The case's plan, as the command makes it (HOME and the working folder the example's);
    ManifestError if the manifest is refused."""
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(layout.home)
    try:
        with contextlib.chdir(layout.work):
            return plan(load_manifest(case.manifest_arg(layout), case.overrides))
    finally:
        if old_home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old_home


def _check_plan(case: Case, layout: Layout) -> None:
    """A dry run that succeeded: distinct output files, none of them an input image."""
    try:
        tasks = _planned(case, layout)
    except ManifestError as exc:  # the command and its library must agree on a manifest
        kind = "dry run exits 0 on a manifest load_manifest refuses"
        raise PropertyFailure(kind, "", 0, str(exc)) from None
    seen: dict[str, str] = {}
    inputs = {os.path.normpath(p) for p in layout.inputs}
    for task in tasks:
        out = os.path.normpath(task.output)
        if out in seen:
            raise PropertyFailure(
                "dry run plans two tasks onto one file",
                "",
                0,
                f"{out}: {seen[out]!r} and {task.label!r} (as {task.relative_output!r})",
            )
        seen[out] = task.label
        if out in inputs:
            raise PropertyFailure(
                "dry run plans an output onto an input image", "", 0, f"{task.label!r}: {out}"
            )


# -- generating manifests ---------------------------------------------------------------


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON escapes: NUL, lone surrogates and all)."""
    return json.dumps(value)


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _mapping(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{_q(k)}: {v}" for k, v in pairs) + "}"


def _laughs(depth: int, width: int, leaf: str, tag: str = "l") -> str:
    """A "billion laughs" nest as one flow node: width**depth leaves through aliases."""
    node = f"&{tag}0 " + _flow([leaf] * width)
    for level in range(1, depth):
        node = f"&{tag}{level} " + _flow([node, *[f"*{tag}{level - 1}"] * (width - 1)])
    return node


def _rarely(draw: st.DrawFn, n: int) -> bool:
    """True about once in n draws; shrinks to False (hypothesis shrinks integers to 0)."""
    return draw(st.integers(0, n - 1)) == n // 2


def _junk() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(JUNK),
        st.text(max_size=8).map(_q),
        st.integers(-(2**70), 2**70).map(str),
    )


@st.composite
def _bomb(draw: st.DrawFn, leaf: str | None = None) -> str:
    depth = draw(st.integers(2, 5))
    width = draw(st.integers(2, 6))
    leaf = leaf or draw(st.sampled_from(["x", "1", _q(IMAGE_PATHS[0])]))
    return _laughs(depth, width, leaf, tag=f"b{draw(st.integers(0, 99))}_")


@st.composite
def _path(draw: st.DrawFn, real: bool) -> str:
    if not real and _rarely(draw, 8):
        return draw(st.sampled_from(ODD_PATHS) if draw(st.integers(0, 3)) else st.text(max_size=6))
    return draw(st.sampled_from(IMAGE_PATHS))


@st.composite
def _param_value(draw: st.DrawFn, key: str) -> str:
    if _rarely(draw, 25):
        return draw(_junk())
    values = GOOD_PARAMS.get(key, ("1",))
    if _rarely(draw, 10):
        return draw(st.sampled_from(values))  # the odd wrong one among them
    return draw(st.sampled_from(values[:2]))  # the first two of each are valid


REAL_PARAMS: dict[str, tuple[str, ...]] = {  # cheap, valid settings for real runs
    "optimizer": ("lbfgs", "adam"),
    "content_weight": ("1", "2"),
    "style_weight": ("10", "100"),
    "tv_weight": ("0", "0.001"),
    "init": ("content", "noise", "style"),
    "seed": ("0", "3"),
    "pooling": ("max", "avg"),
    "preserve_color": ("none", "luminance", "histogram"),
    "square": ("false", "true"),
    "precision": ("fp32", "bf16"),
}


@st.composite
def _params(draw: st.DrawFn, real: bool) -> str:
    if real:
        keys = draw(st.lists(st.sampled_from(sorted(REAL_PARAMS)), max_size=2, unique=True))
        # The images are 3:2, so under 48 px only a square output keeps 32 px a side.
        size = draw(st.sampled_from(["48", "40", "32"]))
        pairs = [("size", size), ("steps", "2")]
        pairs += [(k, draw(st.sampled_from(REAL_PARAMS[k]))) for k in keys if k != "square"]
        if size != "48" or "square" in keys:
            pairs.append(("square", "true"))
        return _mapping(pairs)
    keys = draw(st.lists(st.sampled_from(PARAM_KEYS), max_size=3, unique=True))
    if _rarely(draw, 10):
        keys.append(draw(st.sampled_from(("sizes", "step", "styleweight", "Size"))))
    return _mapping([(k, draw(_param_value(k))) for k in keys])


@st.composite
def _entry(draw: st.DrawFn, kind: str, real: bool) -> str:
    """A content or style entry: a bare path, or a mapping with name, params, weights."""
    path = draw(_path(real))
    if draw(st.booleans()):
        return _q(path)
    pairs: list[tuple[str, str]] = []
    if kind == "style" and _rarely(draw, 4):
        blend = draw(st.lists(_path(real), min_size=1, max_size=3, unique=True))
        pairs.append(("path", _flow([_q(p) for p in blend])))
        if draw(st.booleans()):
            n = len(blend) if real or not _rarely(draw, 4) else draw(st.integers(0, 3))
            good = ["1", "3", "0.5"] if real or not _rarely(draw, 4) else ["0", "-1", "true"]
            pairs.append(("weights", _flow([draw(st.sampled_from(good)) for _ in range(n)])))
    else:
        pairs.append(("path", _q(path)))
    if draw(st.booleans()):
        names = IMAGE_NAMES if not real and _rarely(draw, 3) else IMAGE_NAMES[:5]
        pairs.append(("name", _q(draw(st.sampled_from(names)))))
    if not real and _rarely(draw, 4):
        pairs.append(("params", draw(_params(real=False))))
    if not real and _rarely(draw, 20):
        pairs.append((draw(st.sampled_from(ENTRY_TYPOS)), draw(_junk())))
    if not real and kind == "content" and _rarely(draw, 20):
        pairs.append(("weights", "[1]"))
    return _mapping(pairs)


@st.composite
def _entries(draw: st.DrawFn, kind: str, real: bool) -> str:
    if not real and _rarely(draw, 6):
        shape = draw(st.integers(0, 2))
        if shape == 0:
            return _q(draw(_path(real)))  # a single path, not a list
        if shape == 1:
            return draw(_bomb())
        return draw(_junk())
    items = draw(st.lists(_entry(kind, real), min_size=1, max_size=2 if real else 3))
    return _flow(items)


@st.composite
def _sweep(draw: st.DrawFn, real: bool) -> str:
    if real:
        key = draw(st.sampled_from(["style_weight", "seed", "tv_weight"]))
        values = draw(st.lists(st.sampled_from(SWEEP_VALUES[key][:4]), max_size=2, unique=True))
        return _mapping([(key, _flow(values))]) if values else "{}"
    if _rarely(draw, 8):
        return _mapping([("style_weight", draw(_bomb(leaf=draw(st.sampled_from(["1", "x"])))))])
    keys = draw(st.lists(st.sampled_from(sorted(SWEEP_VALUES)), max_size=3, unique=True))
    if _rarely(draw, 6):
        keys.append(draw(st.sampled_from(PARAM_KEYS)))
    pairs = []
    for key in keys:
        pool = SWEEP_VALUES.get(key) or GOOD_PARAMS.get(key, ("1",))
        values = draw(st.lists(st.sampled_from(pool), max_size=5, unique=not _rarely(draw, 6)))
        if _rarely(draw, 8):
            values.append(draw(_junk()))
        pairs.append((key, draw(_junk()) if _rarely(draw, 12) else _flow(values)))
    return _mapping(pairs)


@st.composite
def _value(draw: st.DrawFn, key: str, real: bool) -> str:
    """A top-level value for `key`: usually of the right kind, sometimes junk."""
    if not real and _rarely(draw, 20):
        return draw(_junk())
    if key in ("content", "style"):
        return draw(_entries(key, real))
    if key == "output":
        pool = OUTPUTS[:3] + OUTPUTS[4:5] + OUTPUTS[8:9] if real else OUTPUTS[:10]
        if not real and _rarely(draw, 5):
            pool = OUTPUTS  # the odd ones too
        return _q(draw(st.sampled_from(pool)))
    if key == "params":
        return draw(_params(real))
    if key == "sweep":
        return draw(_sweep(real))
    if key == "name":
        odd = not real and _rarely(draw, 3)
        return _q(draw(st.sampled_from(TEMPLATES if odd else TEMPLATES[:3])))
    choices = {
        "weights": ("original", "torchvision", "missing.pth", _q(IMAGE_PATHS[0])),
        "devices": ("cpu", "auto", '"cpu,cpu"', "[cuda:0]", "gpu", '""'),
        "workers_per_device": ("1", "2", "0", "65", "true"),
        "batch_size": ("auto", "1", "2", "0", "257", "2.5", "many"),
        "compile": ("false", "true", "yes", "0"),
        "preset": ("pytorch-tutorial", "gatys", "null"),
        "format": ("jpg", "png", "webp", "gif", "JPG"),
        "max_pixels": ("64000000", "100", "1", "0", "-5", "1.5"),
    }
    pool = choices.get(key, ("1",))
    if not real and not _rarely(draw, 3):
        pool = pool[:1]
    if real:
        pool = {"weights": 1, "devices": 1, "workers_per_device": 1, "batch_size": 3}.get(
            key, 2
        ) * pool[:1] + pool[1 : {"format": 3, "max_pixels": 2}.get(key, 1)]
    return draw(st.sampled_from(pool))


GOOD_SETS = (
    "params.size=40",
    "params.steps=2",
    "params.style_weight=20",
    "sweep.style_weight=[5, 20]",
    "sweep.seed=[1, 2]",
    "output=out2",
    "output=images/content",
    "output=~/out",
    "output=../other",
    "name={style}/{content}",
    "name={content}",
    "format=png",
    "content.0.name=./chelsea",
    "style.0.name=x/",
    "params.init=image",
    "params.init_image=../proj/images/content/chelsea.png",
)


@st.composite
def _set_item(draw: st.DrawFn) -> str:
    if not _rarely(draw, 5):
        return draw(st.sampled_from(GOOD_SETS))
    if _rarely(draw, 8):
        return draw(st.sampled_from(["params.size", "=1", "params.size==3", "=", "x"]))
    key = draw(st.sampled_from(SET_KEYS))
    value = draw(st.one_of(st.sampled_from(SET_VALUES), st.text(max_size=8)))
    return f"{key}={value}"


REAL_SETS = (
    "params.size=48",
    "params.square=true",
    "params.steps=2",
    "sweep.style_weight=[5, 20]",
    "output=images/content",
    "output=../other",
    "name={style}/{content}",
    "name={content}",
    "format=png",
    "content.0.name=./chelsea",
)


STARRY = "[images/style/starry_night.jpg]"
CHELSEA = "[images/content/chelsea.png]"
ONTO_INPUT_SCENARIOS = (
    {"output": "images/content", "name": "{content}", "format": "png", "style": STARRY},
    {"output": ".", "name": "images/content/{content}", "format": "png", "style": STARRY},
    {"output": "images", "name": "content/{content}", "format": "png", "style": STARRY},
    {"output": "images/style", "name": "{style}", "format": "jpg", "content": CHELSEA},
    {"output": "images/content/", "name": "{content}", "format": "png", "style": STARRY},
    {
        "output": ".",
        "name": "{content}",
        "format": "png",
        "content": '[{path: images/content/chelsea.png, name: "images/content/chelsea"}]',
        "style": STARRY,
    },
)


@st.composite
def _scenario(draw: st.DrawFn) -> dict[str, str]:
    """Top-level values (YAML text) that set up one hazard; the rest is generated."""
    kind = draw(st.integers(0, 5))
    if kind == 0:  # a content name that differs from 'chelsea' only in spelling
        alias = draw(st.sampled_from(["./chelsea", "chelsea/", "chelsea/.", ".//chelsea"]))
        return {
            "content": "[images/content/chelsea.png, "
            f"{{path: images/content/coffee.png, name: {_q(alias)}}}]"
        }
    if kind == 1:  # style names 'x' and 'x/' under a folder per style
        alias = draw(st.sampled_from(["x/", "x//", "./x", "x/."]))
        template = draw(st.sampled_from(["{style}/{content}", "{style}{content}", "{style}"]))
        return {
            "style": "[{path: images/style/starry_night.jpg, name: x}, "
            f"{{path: images/style/the_scream.jpg, name: {_q(alias)}}}]",
            "name": _q(template),
        }
    if kind == 2:  # an output that lands on an input image
        return {
            k: _q(v) if k in ("output", "name") else v
            for k, v in draw(st.sampled_from(ONTO_INPUT_SCENARIOS)).items()
        }
    if kind == 3:  # a format spec or conversion in the name template
        specs = [
            "{content:%}",
            "{content:>300}",
            "{content!a}",
            "{style:{content}}",
            "{content:d}",
            "{content:.0}",
            "{variant:x}__{content}__{style}",
            "{content!r}/{style}",
        ]
        return {"name": _q(draw(st.sampled_from(specs)))}
    if kind == 4:  # the image whose file name is not UTF-8
        content = draw(st.sampled_from(["images/content", _flow([_q(IMAGE_PATHS[2])])]))
        return {"content": content, "name": _q(draw(st.sampled_from(TEMPLATES[:3])))}
    return {  # '~' in every path
        "output": _q(draw(st.sampled_from(["~/out", "~", "~/"]))),
        "content": draw(st.sampled_from(['["~/pic.png"]', '"~"', "[~/pic.png, images/content]"])),
    }


@st.composite
def cases(draw: st.DrawFn, real: bool = False) -> Case:
    """A manifest as YAML text (with the odd anchor, bomb or bad byte), --set items, flags."""
    lines: list[str] = []
    required = ("output", "content", "style")
    if real:
        keys = [*required, "params", "devices"]
        optional = ["sweep", "name", "format", "batch_size", "max_pixels"]
        keys += draw(st.lists(st.sampled_from(optional), max_size=3, unique=True))
    else:
        keys = [k for k in required if not _rarely(draw, 40)]
        keys += draw(st.lists(st.sampled_from(TOP_KEYS[3:]), max_size=4, unique=True))
        if _rarely(draw, 10):
            keys.append(draw(st.sampled_from(TYPOS)))
        if _rarely(draw, 20):
            keys.append(draw(st.sampled_from(TOP_KEYS)))  # a key given twice
    scenario = draw(_scenario()) if draw(st.integers(0, 2)) == 1 else {}
    if real:
        scenario.pop("output", None) if scenario.get("output", "").startswith('"~') else None
    keys += [k for k in scenario if k not in keys]
    anchored = False
    for key in keys:
        value = scenario[key] if key in scenario else draw(_value(key, real))
        if key == "params" and not real and "content" not in keys and _rarely(draw, 2):
            value, anchored = f"&p {value}", True
        lines.append(f"{_q(key) if not real and _rarely(draw, 8) else key}: {value}")
    if anchored:  # an alias and a merge key on the anchored params
        lines.append(
            "content: [{path: images/content/chelsea.png, params: {<<: *p, seed: 1}}, "
            "{path: images/content/coffee.png, params: *p}]"
        )
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    if real:
        overrides = draw(st.lists(st.sampled_from(REAL_SETS), max_size=2, unique=True))
        flags: list[str] = draw(st.sampled_from([[], ["-q"], ["-v"], ["--force"]]))
        return Case(data, tuple(overrides), tuple(flags))
    if _rarely(draw, 10):
        damage = draw(st.integers(0, 3))
        if damage == 0:
            data += b"# caf\xe9\n"  # not UTF-8
        elif damage == 1:
            data = b"\xef\xbb\xbf" + data  # a BOM
        elif damage == 2:
            data = data.replace(b": ", b":\t", 1)
        else:
            data = data[: draw(st.integers(0, len(data)))]  # cut short
    overrides = draw(st.lists(_set_item(), max_size=2))
    flags = []
    if _rarely(draw, 4):
        more = ["-q", "-v", "--force", "--devices=cpu", "--devices=gpu", "--shard=1/2"]
        flags = draw(st.lists(st.sampled_from([*more, "--shard=3/2"]), max_size=2, unique=True))
    manifest = "proj/job.yaml"
    if _rarely(draw, 12):
        others = ["ABS", f"proj/job{NON_UTF8}.yaml", "proj", "proj/missing.yaml", "-"]
        manifest = draw(st.sampled_from(others))
    return Case(data, tuple(overrides), tuple(flags), manifest)


def _case(lines: list[str], *overrides: str) -> Case:
    text = "\n".join(lines) + "\n"
    return Case(text.encode("utf-8", "surrogateescape"), overrides)


GALLERY = [
    "output: out",
    "content: [images/content/chelsea.png, images/content/coffee.png]",
    "style: [images/style/starry_night.jpg, images/style/the_scream.jpg]",
    "params: {size: 48, steps: 2}",
    "devices: cpu",
]
# Hand-written examples of each hazard, run before the generated ones.
NON_UTF8_FOLDER = _case(["output: out", "content: images/content", *GALLERY[2:]])
NON_UTF8_ONE_STYLE = _case(
    ["output: out", "content: images/content", "style: images/style/the_scream.jpg", *GALLERY[3:]]
)
NON_UTF8_DIRECT = _case(["output: out", f"content: [{_q(IMAGE_PATHS[2])}]", *GALLERY[2:]])
DOT_NAME = _case(
    [
        "output: out",
        "content: [images/content/chelsea.png, {path: images/content/coffee.png, name: ./chelsea}]",
        *GALLERY[2:],
    ]
)
SLASH_STYLE = _case(
    [
        "output: out",
        "content: [images/content/chelsea.png]",
        "style: [{path: images/style/starry_night.jpg, name: x},"
        " {path: images/style/the_scream.jpg, name: x/}]",
        'name: "{style}/{content}"',
        *GALLERY[3:],
    ]
)
ONTO_INPUT = _case(
    [
        "output: images/content",
        'name: "{content}"',
        "format: png",
        *GALLERY[1:2],
        "style: [images/style/starry_night.jpg]",
        *GALLERY[3:],
    ]
)
BIG_SWEEP = _case(
    [
        *GALLERY[:1],
        "content: [images/content/chelsea.png]",
        "style: [images/style/starry_night.jpg]",
        *GALLERY[3:],
        "sweep: {" + ", ".join(f"{k}: {_flow(list(v))}" for k, v in SWEEP_VALUES.items()) + "}",
    ]
)
LAUGHS = _case([*GALLERY[:2], *GALLERY[3:], f"style: {_laughs(6, 6, _q(IMAGE_PATHS[3]))}"])
LAUGHS_SWEEP = _case([*GALLERY, f"sweep: {{style_weight: {_laughs(6, 6, '1')}}}"])
NUL_PATH = _case(
    ["output: out", f"content: [{_q(IMAGE_PATHS[0] + chr(0))}]", *GALLERY[2:]],
    "output=out\x00",
)
FORMAT_SPEC = _case([*GALLERY, 'name: "{content:%}"'])


COMMON = {
    "deadline": None,
    "derandomize": True,  # the same examples on every run (CI)
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: the test collects every distinct failure and shrinks each itself.
    "phases": [Phase.explicit, Phase.generate],
}


def _smaller(case: Case) -> Iterator[Case]:
    """Candidates one step smaller: no flags, a plain manifest path, one override or one
    manifest line less, one item less in a flow list."""
    if case.flags:
        yield replace(case, flags=())
    if case.manifest != "proj/job.yaml":
        yield replace(case, manifest="proj/job.yaml")
    for i in range(len(case.overrides)):
        yield replace(case, overrides=case.overrides[:i] + case.overrides[i + 1 :])
    lines = case.text.split(b"\n")
    for i in range(len(lines)):
        if lines[i]:
            yield replace(case, text=b"\n".join(lines[:i] + lines[i + 1 :]))
    for i, line in enumerate(lines):
        for item in re.finditer(rb"(?<=[\[,]) ?[^\[\]{},&*]+(?:, |(?=\]))", line):
            shorter = line[: item.start()] + line[item.end() :]
            yield replace(case, text=b"\n".join([*lines[:i], shorter, *lines[i + 1 :]]))


def _shrink(case: Case, failure: PropertyFailure, attempt: Callable[[Case], object], budget: int):
    """Greedy: take the first smaller candidate that fails the same way, until none does."""
    tried = 0
    progress = True
    while progress and tried < budget:
        progress = False
        for candidate in _smaller(case):
            if tried >= budget:
                break
            tried += 1
            try:
                attempt(candidate)
            except PropertyFailure as again:
                if again.signature == failure.signature:
                    case, failure, progress = candidate, again, True
                    break
    return case, failure


def _fuzz(
    test: str,
    strategy: st.SearchStrategy[Case],
    examples: int,
    dry_run: bool,
    run: Callable[[Layout, list[str]], Outcome],
    check_plan: bool = False,
    shrink_budget: int = 120,
) -> None:
    """Run `examples` generated cases; fail once at the end, listing every distinct failure
    (by kind and place) with its smallest example, shrunk further line by line."""
    found: dict[str, tuple[Case, PropertyFailure]] = {}
    seen: Counter[str] = Counter()

    def attempt(case: Case) -> object:
        return _run_case(case, dry_run=dry_run, run=run, check_plan=check_plan)

    @settings(max_examples=examples, **COMMON)
    @given(case=strategy)
    def check(case: Case) -> None:
        RAN[test] += 1
        try:
            attempt(case)
        except PropertyFailure as failure:
            seen[failure.signature] += 1
            known = found.get(failure.signature)
            if known is None or case.size < known[0].size:
                found[failure.signature] = (case, failure)

    check()
    print(f"\n{test}: {RAN[test]} examples, {len(found)} distinct failures", file=sys.__stderr__)
    assert RAN[test] >= examples, f"{test} ran only {RAN[test]} examples"
    reports = []
    for n, (signature, (case, failure)) in enumerate(sorted(found.items()), start=1):
        case, failure = _shrink(case, failure, attempt, shrink_budget)
        manifest = case.text.decode(errors="backslashreplace").rstrip()
        reports.append(
            f"[{n}] {signature}: exit {failure.code}, in {seen[signature]} of {RAN[test]} "
            f"examples; smallest:\n  $ {case.command(dry_run)}\n  manifest proj/job.yaml:\n"
            + "\n".join(f"    {line}" for line in manifest.splitlines())
            + "\n  last lines:\n"
            + "\n".join(f"    {line}" for line in failure.detail.splitlines()[-8:])
        )
    assert not reports, f"{len(reports)} distinct failures:\n\n" + "\n\n".join(reports)


def test_dry_run_fuzz() -> None:
    """--dry-run through CliRunner: exit 0/1/2, no traceback, nothing written, sane plan."""
    _fuzz("test_dry_run_fuzz", cases(), DRY_EXAMPLES, True, _invoke, check_plan=True)


def _argv_safe(case: Case) -> bool:
    return not any("\x00" in item for item in case.overrides)  # argv cannot hold a NUL


def test_entry_point_fuzz() -> None:
    """Dry runs through the installed `nst-batch` script: real streams, real argv."""
    strategy = cases().filter(_argv_safe)
    _fuzz("test_entry_point_fuzz", strategy, SUBPROCESS_EXAMPLES, True, _spawn, shrink_budget=40)


HAZARDS = {
    "non_utf8_folder": NON_UTF8_FOLDER,
    "non_utf8_direct": NON_UTF8_DIRECT,
    "dot_name": DOT_NAME,
    "slash_style": SLASH_STYLE,
    "onto_input": ONTO_INPUT,
    "big_sweep": BIG_SWEEP,
    "laughs": LAUGHS,
    "laughs_sweep": LAUGHS_SWEEP,
    "nul_path": NUL_PATH,
    "format_spec": FORMAT_SPEC,
}


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_dry_run_hazard(name: str) -> None:
    """Each hand-written hazard as a --dry-run, under the same properties as the fuzzing."""
    # the plan check would load and plan big_sweep's 100 000 tasks a second time
    _run_case(HAZARDS[name], dry_run=True, run=_invoke, check_plan=name != "big_sweep")


@pytest.mark.parametrize("name", sorted(set(HAZARDS) - {"big_sweep"}))
def test_entry_point_hazard(name: str) -> None:
    """The hazards through the installed `nst-batch` script: real streams, real argv."""
    case = HAZARDS[name]
    if not _argv_safe(case):
        case = replace(case, overrides=())
    _run_case(case, dry_run=True, run=_spawn)


REAL_HAZARDS = {
    "non_utf8_one_style": (NON_UTF8_ONE_STYLE, _spawn),  # the real entry point and streams
    "onto_input": (ONTO_INPUT, _invoke),
    "dot_name": (DOT_NAME, _invoke),
    "slash_style": (SLASH_STYLE, _invoke),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_HAZARDS))
def test_real_run_hazard(name: str) -> None:
    """Hazards stylized for real (48 px, 2 steps): exit 0/1/2, no traceback, inputs intact."""
    case, run = REAL_HAZARDS[name]
    _run_case(case, dry_run=False, run=run)


@pytest.mark.slow
def test_real_run_fuzz() -> None:
    """Real stylization at 32-48 px, 2 steps: exit 0/1/2, no traceback, writes only output."""
    _fuzz("test_real_run_fuzz", cases(real=True), REAL_EXAMPLES, False, _invoke, shrink_budget=15)


# -- state files: what earlier runs left in the output folder ---------------------------
#
# Each of nst-batch's own files under out/.nst-batch/ (the file cache, the gallery record,
# checkpoints, flow caches) planted torn, foreign, nested past what a parser recurses, or
# with a header claiming a huge array, before the command runs. The same properties hold,
# and more: each is ignored (or rebuilt), so the command succeeds.

NESTED = "[" * 100_000 + "]" * 100_000
STATE_FILES = ("files.json", "gallery.json", "checkpoint", "flow")
DAMAGES = ("torn", "foreign", "nested", "huge")
FRAMES = ("f1.png", "f2.png")  # a two-frame pan, 64x48: 48x36 at size 48
SEQUENCE = [
    "output: out",
    "content: [{path: frames, sequence: true}]",
    "style: [images/style/starry_night.jpg]",
    "params: {size: 48, steps: 2}",
    "devices: cpu",
]
JSON_DAMAGE = {
    "torn": b'{"version": 1, "inputs": {"/a.png": [1, 2, 3, 4, "ab',
    "foreign": b"\x89PNG\r\n\x1a\n" + bytes(64),  # not even UTF-8
    "nested": NESTED.encode(),
    "huge": b'{"version": ' + b"9" * 100_000 + b"}",  # more digits than int() takes
}


def _state(layout: Layout) -> Path:
    return layout.proj / "out" / ".nst-batch"


def _pan(layout: Layout) -> None:
    """Two frames of a pan across the small chelsea, made before the snapshot: inputs."""
    frames = layout.proj / "frames"
    frames.mkdir()
    with Image.open(layout.proj / "images" / "content" / "chelsea.png") as image:  # 72x48
        for i, name in enumerate(FRAMES):
            image.crop((4 * i, 0, 4 * i + 64, 48)).save(frames / name)
            layout.inputs.append(frames / name)


def _json_state(name: str, damage: str) -> Callable[[Layout], None]:
    def plant(layout: Layout) -> None:
        _state(layout).mkdir(parents=True, exist_ok=True)
        (_state(layout) / name).write_bytes(JSON_DAMAGE[damage])

    return plant


def _torch_file(payload: dict[str, object], nested: str | None = None) -> bytes:
    """torch.save's bytes of `payload`, its value `nested` (if any) made a list nested
    100,000 deep: deeper than torch.save's pickler can recurse, so the pickle is edited
    (a pickle builds it in a loop: EMPTY_LIST opcodes, then APPENDs)."""
    import zipfile

    import torch

    placeholder = "nested-list-goes-here"
    buffer = io.BytesIO()
    torch.save(payload | ({nested: placeholder} if nested else {}), buffer)
    if nested is None:
        return buffer.getvalue()
    opcode = b"X" + len(placeholder).to_bytes(4, "little") + placeholder.encode()  # BINUNICODE
    edited = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(edited, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(opcode, b"]" * 100_000 + b"a" * 99_999)
            target.writestr(info.filename, data)
    return edited.getvalue()


def _checkpoints(damage: str) -> Callable[[Layout], None]:
    """A damaged checkpoint for each frame's task, each damaged its own way."""

    def plant(layout: Layout) -> None:
        import torch

        from nst_batch import checkpoint
        from nst_batch.layout import checkpoint_path
        from nst_batch.stylize import Losses

        first, second = _planned(_case(SEQUENCE), layout)
        paths = [checkpoint_path(t.folder, t.relative_output, t.key) for t in (first, second)]
        paths[0].parent.mkdir(parents=True)
        genuine = checkpoint.Checkpoint(
            first.key,
            torch.rand(1, 3, 36, 48),
            0,
            1,
            1,
            [5.0],
            Losses(2, 3, 0, 5),
            Losses(1, 2, 0, 3),
            1.0,
        )
        checkpoint.save(genuine, paths[0], first.folder)
        whole = paths[0].read_bytes()
        payload = torch.load(paths[0], weights_only=True)
        one_each: tuple[bytes, bytes]
        if damage == "torn":
            one_each = whole[: len(whole) // 2], whole[:100]
        elif damage == "foreign":  # tensors no run saves: sparse, and on `meta` (no data)
            one_each = (
                _torch_file(payload | {"image": payload["image"].to_sparse()}),
                _torch_file(
                    payload | {"key": second.key, "history": torch.empty(1, device="meta").double()}
                ),
            )
        elif damage == "nested":
            one_each = _torch_file(payload, "format"), _torch_file(payload, "key")
        else:  # strides of 0: 30 billion pixels, a billion steps, claimed by a few bytes
            one_each = (
                _torch_file(
                    payload | {"image": torch.zeros(1, 1, 1, 1).expand(1, 3, 10**5, 10**5)}
                ),
                _torch_file(
                    payload
                    | {"key": second.key, "done": 10**9, "stage_steps": 10**9}
                    | {"history": torch.zeros(1, dtype=torch.float64).expand(10**9)}
                ),
            )
        for path, data in zip(paths, one_each, strict=True):
            path.write_bytes(data)

    return plant


def _flow_caches(damage: str) -> Callable[[Layout], None]:
    """A damaged flow cache for the pan's one pair of frames, at the name the run reads."""

    def plant(layout: Layout) -> None:
        import zipfile

        import numpy as np

        from nst_batch import flow
        from nst_batch.weights import file_sha256

        digests = [file_sha256(layout.proj / "frames" / name) for name in FRAMES]
        path = _state(layout) / "flow" / flow.cache_name(*digests, (48, 36))
        path.parent.mkdir(parents=True)
        valid = io.BytesIO()
        np.save(valid, np.ones((36, 48), dtype=bool))
        if damage == "torn":
            motion = flow.Motion(np.zeros((36, 48, 2), np.float32), np.ones((36, 48), bool))
            whole = flow.to_bytes(motion)
            path.write_bytes(whole[: len(whole) // 2])
            return
        if damage == "foreign":  # a plain .npy under the cache's name
            np.save(path.open("wb"), np.zeros((36, 48, 2), dtype=np.float16))
            return
        if damage == "nested":  # a header nested deeper than Python's parser goes
            header = "{'descr': " + "[" * 3000 + "]" * 3000 + ", 'fortran_order': False}"
        else:  # 149 GiB claimed by a few bytes
            header = "{'descr': '<f2', 'fortran_order': False, 'shape': (200000, 200000, 2)}"
        head = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("flow.npy", head + bytes(64))
            archive.writestr("valid.npy", valid.getvalue())

    return plant


def _state_case(states: tuple[str, ...], damage: str, verb: str = "") -> Case:
    """The two-frame pan with each of `states` damaged by `damage`, run by `verb`."""
    planters = {
        "files.json": lambda: _json_state("files.json", damage),
        "gallery.json": lambda: _json_state("gallery.json", damage),
        "checkpoint": lambda: _checkpoints(damage),
        "flow": lambda: _flow_caches(damage),
    }
    planted = [planters[state]() for state in states]

    def plant(layout: Layout) -> None:
        _pan(layout)
        for each in planted:
            each(layout)

    return replace(_case(SEQUENCE), verb=verb, state=plant)


@pytest.mark.parametrize("state", ["files.json", "gallery.json"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_dry_run_and_report_state_hazard(state: str, damage: str) -> None:
    """A damaged file cache or gallery record: --dry-run reads it and changes nothing,
    report rebuilds the gallery; both succeed."""
    outcome = _run_case(_state_case((state,), damage), dry_run=True, run=_invoke)
    assert outcome.code == 0, outcome.text
    assert "2 to run, 0 up to date, 2 in all" in outcome.text
    outcome = _run_case(_state_case((state,), damage, "report"), dry_run=False, run=_invoke)
    assert outcome.code == 0, outcome.text


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_real_run_state_hazard(damage: str) -> None:
    """Every state file damaged the same way (the two frames' checkpoints each their own
    way) under a real run of a two-frame sequence, 48 px and 2 steps: each is ignored,
    rebuilt or computed anew, so the run succeeds, writing only its output folder."""
    outcome = _run_case(_state_case(STATE_FILES, damage), dry_run=False, run=_invoke)
    assert outcome.code == 0, outcome.text
    assert "internal error" not in outcome.text
    for frame in ("f1", "f2"):  # each checkpoint was read, and refused
        assert f"frames/{frame} x starry_night: ignoring its checkpoint" in outcome.text
