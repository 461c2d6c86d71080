"""The images of a manifest: what each `content`, `style` or pair entry (a file, a folder,
a glob, a blend, a sequence of frames) becomes as `ImageSpec`s, with the names their
outputs and results rows go by. See docs/manifest.md (content and style, pairs, sequences).

A folder or pattern never yields what nst-batch wrote in the output folder, and two
images that would take one name are refused here, before any task is made. Also here:
every file a run reads (`input_files`), for the plan to keep its outputs off them.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nst_batch import layout, video
from nst_batch.manifest.clips import clip_frames, is_clip_entry, refuse_clip_keys, refuse_video
from nst_batch.manifest.errors import ManifestError
from nst_batch.manifest.schema import (
    DEFAULT_MAX_PIXELS,
    FrameSequence,
    ImageSpec,
    Manifest,
    _Entry,
    _Pair,
)
from nst_batch.metadata import KEY_METADATA
from nst_batch.weights import NAMED_SOURCES

# Formats Pillow opens that are not pictures to stylize: documents that need Ghostscript
# (EPS), video it only identifies (MPEG), vector metafiles (WMF, EMF), and scientific
# data it has no reader for (BUFR, GRIB, HDF5) or no picture's range (FITS).
NOT_PICTURES = frozenset({"EPS", "PDF", "MPEG", "WMF", "BUFR", "GRIB", "HDF5", "FITS"})
# Formats whose reader is a library Pillow may be built without.
_CODECS = {"AVIF": "avif", "JPEG2000": "jpg_2000", "WEBP": "webp"}
COMMON_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".avif", ".tif", ".tiff", ".bmp", ".gif")
_DIGITS = re.compile(r"(\d+)")


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The extensions (lower case, with the dot) a folder or pattern takes: every format
    this Pillow can read, less NOT_PICTURES. MPO (a camera's JPEG of several pictures) is
    opened by Pillow's JPEG reader."""
    from PIL import Image, features

    Image.init()
    readable = {*Image.OPEN, "MPO"} - NOT_PICTURES
    readable -= {name for name, codec in _CODECS.items() if not features.check(codec)}
    return frozenset(
        suffix.lower() for suffix, name in Image.registered_extensions().items() if name in readable
    )


# -- pairs: one image each ----------------------------------------------------------


def listed_pairs(
    path: Path, root: Path, entries: Sequence[_Pair], output: Path
) -> tuple[tuple[ImageSpec, ...], tuple[ImageSpec, ...], list[tuple[str, str, dict[str, Any]]]]:
    """The distinct contents and styles of `pairs:` (in order of appearance), and each pair
    as (content name, style name, params). Within pairs a name stands for one image with one
    set of params, and a pair is listed once."""
    specs: dict[tuple[str, str], tuple[ImageSpec, str]] = {}  # (kind, name): (spec, where)
    seen: dict[tuple[str, str], int] = {}
    listed = []
    for i, entry in enumerate(entries):
        names = []
        for kind, given in (("content", entry.content), ("style", entry.style)):
            where = f"pairs[{i}].{kind}"
            spec = _pair_image(path, root, kind, where, given, output)
            other = specs.setdefault((kind, spec.name), (spec, where))
            if other[0] != spec:
                raise ManifestError(
                    f"{path}: {other[1]} and {where} are both the {kind} '{spec.name}' but "
                    "differ in image or params; give one a 'name:', or put settings for one "
                    "pair in that pair's params"
                )
            names.append(spec.name)
        content, style = names
        if (content, style) in seen:
            raise ManifestError(
                f"{path}: pairs[{i}] repeats pairs[{seen[content, style]}] (content "
                f"'{content}' in style '{style}'); list each pair once, and use a sweep to try "
                "several settings on one pair"
            )
        seen[content, style] = i
        listed.append((content, style, dict(entry.params)))

    def distinct(kind: str) -> tuple[ImageSpec, ...]:
        return tuple(spec for (k, _), (spec, _) in specs.items() if k == kind)

    return distinct("content"), distinct("style"), listed


def _pair_image(
    path: Path, root: Path, kind: str, where: str, given: str | _Entry, output: Path
) -> ImageSpec:
    """A pair's content or style: one image file (or, for a style, a blend)."""
    item = given if isinstance(given, _Entry) else _Entry(path=given)
    use = "a style: a style is one picture; save a frame of it as an image and give that"
    if kind == "content":
        use = "a pair's content: list videos under content: (with style:)"
    refuse_video(f"{path}: {where}", item, use)
    refuse_clip_keys(f"{path}: {where}", item)
    if item.sequence:
        raise ManifestError(
            f"{path}: {where}: a pair takes one image, not a sequence; list sequences under "
            "content: (with style:), where every frame gets every style"
        )
    if item.name is not None:
        _check_image_name(f"{path}: {where}.name", item.name)
    if isinstance(item.path, list) or item.weights is not None:
        return _blend(path, root, kind, where, item)
    files, single = _match(root, item.path, f"{path}: {where} '{item.path}'", output)
    if not single:
        raise ManifestError(
            f"{path}: {where} '{item.path}': a pair takes one image file, not a folder or "
            "pattern; list a pair per image, or use content and style for every combination"
        )
    check_readable(files[0], f"{path}: {where}")
    name = _entry_name(path, kind, files[0], item.name)
    return ImageSpec(path=files[0], name=name, overrides=dict(item.params))


# -- content and style lists: files, folders, globs, blends, sequences --------------


def expand(
    path: Path,
    root: Path,
    kind: str,
    entries: Iterable[str | _Entry],
    output: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[ImageSpec, ...]:
    """The images of `entries`. One image listed twice (a file and its folder, say) is one
    spec: a single-file entry wins over a folder or pattern, whatever the order; two that
    disagree and are both single files (or both not) are refused, naming both. A video's
    frames are decoded into the output folder's cache (clips.py), each frame over
    `max_pixels` refused; a video an entry names is left out of the patterns that match it,
    before any is decoded."""
    specs: list[tuple[ImageSpec, bool, str, int]] = []  # (spec, single file, where, entry)
    frames: list[tuple[int, ImageSpec]] = []  # (entry, frame): each a task, never merged
    items = [entry if isinstance(entry, _Entry) else _Entry(path=entry) for entry in entries]
    listed = _listed_videos(root, items)
    for i, item in enumerate(items):
        if item.name is not None:
            _check_image_name(f"{path}: {kind}[{i}].name", item.name)
        if kind == "style":
            use = "a style: a style is one picture; save a frame of it as an image and give that"
            refuse_video(f"{path}: {kind}[{i}]", item, use)
        if not is_clip_entry(item):
            refuse_clip_keys(f"{path}: {kind}[{i}] '{item.path}'", item)
        sequence_keys = {"animation", "fps"} & item.model_fields_set
        if item.sequence or sequence_keys or is_clip_entry(item):
            sequence = _sequence(path, root, kind, i, item, output, max_pixels, listed)
            frames += [(i, frame) for frame in sequence]
            continue
        if isinstance(item.path, list) or item.weights is not None:
            blend = _blend(path, root, kind, f"{kind}[{i}]", item)
            specs.append((blend, True, f"{kind}[{i}]", i))
            continue
        where = f"{path}: {kind}[{i}] '{item.path}'"
        files, single = _match(root, item.path, where, output)
        if item.name is not None and len(files) > 1:
            raise ManifestError(f"{where}: 'name' needs a single file, but it matches {len(files)}")
        for file in files:
            check_readable(file, where)
            name = _entry_name(path, kind, file, item.name, found=not single)
            spec = ImageSpec(path=file, name=name, overrides=dict(item.params))
            specs.append((spec, single, f"{kind}[{i}]", i))
    chosen: dict[tuple[tuple[Path, float], ...], tuple[ImageSpec, bool, str]] = {}
    place: dict[tuple[tuple[Path, float], ...], int] = {}  # the entry that first listed it
    for spec, single, where, i in specs:
        other = chosen.get(spec.images)
        place.setdefault(spec.images, i)
        if other is None or (single and not other[1]):
            chosen[spec.images] = (spec, single, where)
        elif other[0] != spec and single == other[1]:
            raise ManifestError(
                f"{path}: {kind} image {layout.display(spec.path)} is listed twice with different "
                f"names or params ({other[2]} and {where}); list it once, or give both entries "
                "the same name and params"
            )
    seen: dict[str, tuple[int, ImageSpec]] = {}  # name: (entry, spec)
    stills = [(place[images], spec) for images, (spec, _, _) in chosen.items()]
    for i, spec in sorted([*stills, *frames], key=lambda pair: pair[0]):  # manifest order
        same = seen.get(spec.name)
        if same is not None:
            raise ManifestError(
                f"{path}: {kind} images {layout.display(same[1].path)} and "
                f"{layout.display(spec.path)} share the name '{spec.name}', so their outputs "
                f"would collide; {_rename_advice(kind, same, (i, spec))}"
            )
        seen[spec.name] = (i, spec)
    return tuple(spec for _, spec in seen.values())


def _rename_advice(kind: str, first: tuple[int, ImageSpec], second: tuple[int, ImageSpec]) -> str:
    """What to do about two images of one name. A frame has no 'name:' of its own: it is
    named by its sequence's name and its file's stem."""
    (i, one), (j, other) = first, second
    if one.sequence is None and other.sequence is None:
        return "give one a 'name:'"
    if one.sequence is not None and other.sequence is not None and i == j:
        return (
            f"the frames of {kind}[{i}] are named by their files' stems, so rename or move one "
            "of the two files, or narrow the entry to one kind with a pattern such as 'clip/*.png'"
        )
    if one.sequence is not None and other.sequence is not None:
        return f"give the sequence {kind}[{j}] (or {kind}[{i}]) another 'name:'"
    still = i if one.sequence is None else j
    return f"give the image of {kind}[{still}] another 'name:', or the sequence another 'name:'"


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting 'f2' before 'f10': digit runs compare as numbers, the rest folded."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in _DIGITS.split(name)
        if part
    )


def _sequence(
    path: Path,
    root: Path,
    kind: str,
    i: int,
    item: _Entry,
    output: Path,
    max_pixels: int,
    listed: frozenset[Path] = frozenset(),
) -> list[ImageSpec]:
    """The frames of a `sequence: true` entry, in natural order of their file names, or of
    a video file (or each a pattern matches but for those `listed` by entries of their own),
    in decoding order."""
    where = f"{path}: {kind}[{i}]"
    if kind != "content":
        raise ManifestError(f"{where}: only content entries can be sequences (sequence: true)")
    if not item.sequence and not is_clip_entry(item):
        raise ManifestError(f"{where}: 'animation' and 'fps' need 'sequence: true'")
    if isinstance(item.path, list) or item.weights is not None:
        raise ManifestError(f"{where}: a sequence is one folder or pattern of frames, not a blend")
    files, single = _match(root, item.path, f"{where} '{item.path}'", output)
    if is_clip_entry(item):
        if not single:
            files = [file for file in files if file not in listed]
        return _videos(path, where, item, files, single, output, max_pixels)
    if single:
        raise ManifestError(
            f"{where} '{item.path}': a sequence is a folder (or pattern) of frames, not one file"
        )
    files.sort(key=lambda f: natural_key(f.name))
    folder = Path(item.path.rstrip("/")).parent if glob.has_magic(item.path) else None
    name = item.name or _clean_name((folder or Path(item.path)).name or files[0].parent.name)
    _check_image_name(f"{where}.name", name)
    sequence = FrameSequence(name, len(files), item.animation, item.fps)
    specs = []
    for number, file in enumerate(files):
        check_readable(file, where)
        stem = _entry_name(path, kind, file, None, found=True)
        spec = ImageSpec(file, f"{name}/{stem}", dict(item.params), (), sequence, number)
        specs.append(spec)
    return specs


def _listed_videos(root: Path, items: Iterable[_Entry]) -> frozenset[Path]:
    """The video files that entries name one by one (resolved), which patterns leave to
    them: `clips/*.mp4` beside `{path: clips/walk.mp4, start: 2}` takes walk.mp4 once."""
    listed = set()
    for item in items:
        if is_clip_entry(item) and isinstance(item.path, str) and not glob.has_magic(item.path):
            target = Path(os.path.expanduser(item.path))
            full = target if target.is_absolute() else root / target
            if full.is_file():
                listed.add(full.resolve())
    return frozenset(listed)


def _videos(
    path: Path,
    where: str,
    item: _Entry,
    files: list[Path],
    single: bool,
    output: Path,
    max_pixels: int,
) -> list[ImageSpec]:
    """The frames of the video file of an entry, or of each video its pattern matches, each
    video a sequence named by its file (clips.py decodes them). Names are checked before
    any video is decoded."""
    given = f"{where} '{item.path}'"
    if item.name is not None and len(files) > 1:
        raise ManifestError(f"{given}: 'name' needs a single video, but it matches {len(files)}")
    named: dict[str, Path] = {}
    for file in files:
        check_readable(file, where)
        name = item.name or _entry_name(path, "content", file, None, found=not single)
        _check_image_name(f"{where}.name", name)
        if name in named:
            raise ManifestError(
                f"{given}: the videos {layout.display(named[name])} and {layout.display(file)} "
                f"would both be the sequence '{name}'; rename one, or list each as an entry of "
                "its own with a 'name:'"
            )
        named[name] = file
    specs = []
    for name, file in named.items():
        at = given if single else f"{given} ({layout.display(file)})"
        specs += clip_frames(at, file, name, item, output, max_pixels)
    return specs


# -- one image: readable, named -----------------------------------------------------


def check_readable(file: Path, where: str) -> None:
    """ManifestError naming `where` and the file when this process cannot read it."""
    if not os.access(file, os.R_OK):
        raise ManifestError(f"{where}: {file} is not readable; check its permissions")


def _entry_name(path: Path, kind: str, file: Path, given: str | None, found: bool = False) -> str:
    """An image's name in outputs and results: its `name:`, else its file name's stem.

    A stem that is not valid UTF-8 or holds a control character cannot be a name: a file
    `found` in a folder or by a pattern goes by its escaped stem ('caf\\xe9', as messages
    show it), so that one odd name in an old archive does not stop the gallery; a file
    listed by its path is refused, for the entry to give it a 'name:'."""
    if given is not None:
        return _clean_name(given)
    stem = file.stem
    if _unprintable(stem) and found:
        return layout.display(stem)
    if _unprintable(stem):
        raise ManifestError(
            f"{path}: {kind} file {layout.display(file)}: its name is not valid UTF-8 or holds a "
            "control character (a line break, say), so it cannot name an output or a results "
            "row; rename the file, or list it as an entry with a 'name:'"
        )
    return stem


def _unprintable(text: str) -> bool:
    # Cc: control characters (line breaks, tabs); Cs: the surrogates Python keeps non-UTF-8
    # bytes of a file name in. Neither is printable, so most names are told by isprintable.
    if text.isprintable():
        return False
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def _clean_name(name: str) -> str:
    """'./x' -> 'x', 'x/' -> 'x': one image, one name, one output."""
    return posixpath.normpath(name.strip()) if name.strip() else name


def _check_image_name(where: str, name: str) -> None:
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ManifestError(
            f"{where}: {name!r} would write outside the output folder; "
            "give a relative name without '..', such as 'portrait'"
        )
    if _unprintable(name) or _clean_name(name) in ("", "."):
        raise ManifestError(
            f"{where}: {name!r} is empty or holds a control character (a line break, say); "
            "give a plain name, such as 'portrait'"
        )


# -- blends -------------------------------------------------------------------------


def _blend(path: Path, root: Path, kind: str, key: str, item: _Entry) -> ImageSpec:
    """A style entry whose `path` lists several files, mixed by `weights` (default equal);
    `key` is where it is in the manifest: 'style[2]', 'pairs[0].style'."""
    where = f"{path}: {key}"
    if kind != "style" and isinstance(item.path, list):
        raise ManifestError(
            f"{where}.path: a list of images blends styles; a content entry takes one "
            "image, file, folder or pattern"
        )
    if kind != "style":
        raise ManifestError(
            f"{where}.weights: weights mix the images of a style blend; a content entry "
            "has none, remove them"
        )
    paths = item.path if isinstance(item.path, list) else [item.path]
    if not paths:
        raise ManifestError(f"{where}.path: the blend lists no image; give one or more files")
    weights = item.weights if item.weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ManifestError(
            f"{where}.weights: {len(weights)} weights for {len(paths)} images; give one "
            "weight per image in 'path'"
        )
    files = []
    for j, pattern in enumerate(paths):
        matched, single = _match(root, pattern, f"{where}.path[{j}] '{pattern}'", None)
        if not single:
            raise ManifestError(
                f"{where}.path[{j}] '{pattern}': a blend takes single files, not folders or "
                "patterns; list each image"
            )
        check_readable(matched[0], f"{where}.path[{j}]")
        files.append(matched[0])
    total = sum(weights)
    names = [_entry_name(path, kind, f, None) for f in files] if item.name is None else []
    name = _clean_name(item.name) if item.name is not None else "+".join(names)
    blend = tuple((f, w / total) for f, w in zip(files, weights, strict=True))
    return ImageSpec(path=files[0], name=name, overrides=dict(item.params), blend=blend)


# -- paths to files -----------------------------------------------------------------


def _match(root: Path, pattern: str, where: str, output: Path | None) -> tuple[list[Path], bool]:
    """The image files `pattern` stands for, and whether it names one file (not a folder or
    a pattern). A folder or pattern never yields what nst-batch wrote under `output`."""
    target = Path(os.path.expanduser(pattern))
    full = target if target.is_absolute() else root / target
    resolve = _resolver()
    if glob.has_magic(pattern):
        # A pattern ending in a video's extension ('clips/*.mp4') takes videos, any other
        # images only: a stray clip among photos is never decoded unasked.
        videos = video.is_video(pattern)
        suffixes = video.VIDEO_SUFFIXES if videos else image_suffixes()
        hidden_too = Path(pattern).name.startswith(".")  # a pattern that asks for them
        found = sorted((Path(p) for p in glob.glob(str(full), recursive=True)), key=_path_order)
        files = [
            resolve(f)
            for f in found
            if f.suffix.lower() in suffixes
            and (hidden_too or not f.name.startswith("."))
            and f.is_file()
        ]
        files = [f for f in files if not _made_by_us(output, f)]
        if not files and videos:
            raise ManifestError(
                f"{where}: the pattern matches no video; patterns are relative to {root}"
            )
        if not files:
            raise ManifestError(
                f"{where}: the pattern matches no image{_videos_hint(pattern, found)}; "
                f"patterns are relative to {root}"
            )
        return files, False
    if full.is_dir():
        try:
            with os.scandir(full) as listing:  # the folder's entries know their own type
                # Hidden files are not pictures: macOS's `._photo.jpg` (AppleDouble) holds
                # another file's attributes.
                suffixes = image_suffixes()
                entries = [
                    e for e in listing if _suffix(e.name) in suffixes and not e.name.startswith(".")
                ]
                folder = full.resolve()
                files = sorted(
                    (
                        Path(e.path).resolve() if e.is_symlink() else folder / e.name
                        for e in entries
                        if e.is_file()
                    ),
                    key=_path_order,
                )
        except OSError as exc:
            raise ManifestError(
                f"{where}: cannot list the folder {full} ({exc.strerror})"
            ) from None
        files = [f for f in files if not _made_by_us(output, f)]
        if not files:
            held: list[Path] = []
            with contextlib.suppress(OSError):
                held = list(full.iterdir())
            raise ManifestError(
                f"{where}: the folder {full} holds no image ({', '.join(COMMON_SUFFIXES)} or "
                "another format Pillow reads; hidden files are skipped)"
                f"{_videos_hint(posixpath.join(pattern, '*'), held)}"
            )
        return files, False
    if not full.is_file():
        raise ManifestError(f"{where}: no such file {full}; paths are relative to {root}")
    return [full.resolve()], True


def _videos_hint(pattern: str, found: list[Path]) -> str:
    """What to write when a folder or pattern that takes images holds videos only."""
    videos = [f for f in found if video.is_video(f) and not f.name.startswith(".")]
    if not videos:
        return ""
    suffixes = sorted({_suffix(f.name) for f in videos})
    taking = posixpath.join(posixpath.dirname(pattern), f"*{suffixes[0]}")
    return (
        f", but {len(videos)} video{'s' * (len(videos) != 1)} ({', '.join(suffixes)}): a "
        f"pattern ending in a video's extension, such as '{taking}', takes each video as a "
        "sequence of its frames"
    )


def _path_order(path: Path) -> tuple[str, ...]:
    """The order of sorted(paths), compared as tuples rather than by Path.__lt__."""
    return path.parts


def _suffix(name: str) -> str:
    """A file name's suffix in lower case, as `Path(name).suffix.lower()` gives it."""
    return os.path.splitext(name)[1].lower()


def _resolver() -> Callable[[Path], Path]:
    """`Path.resolve` for many paths at a time: each folder is resolved once, and only a
    path that is itself a link is resolved whole (a folder of 10,000 images is 10,000
    lookups, not one per component of each)."""
    folders: dict[Path, Path] = {}

    def resolve(path: Path) -> Path:
        if path.name in ("", ".", "..") or path.is_symlink():
            return path.resolve()
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        return folder / path.name

    return resolve


def _made_by_us(output: Path | None, file: Path) -> bool:
    """Whether `file` is one of nst-batch's own files in the output folder: the gallery, a
    temporary, or an output (which records its task key in its metadata)."""
    relative = None if output is None else layout.relative_to(output, file)
    if relative is None:
        return False
    if layout.is_reserved(relative):
        return True
    if video.is_video(file):  # an animation of ours: an MP4 or WebM
        return KEY_METADATA in video.read_metadata(file)
    from nst_batch.images import read_metadata  # Pillow only: reads the header

    return KEY_METADATA in read_metadata(file)


# -- what a run reads ---------------------------------------------------------------


def input_files(manifest: Manifest) -> Iterable[tuple[Path, str]]:
    """Every file a run reads: content and style images, init images, a weights file."""
    for kind, specs in (("content image", manifest.contents), ("style image", manifest.styles)):
        for spec in specs:
            for file, _ in spec.images:
                yield file, kind
            if isinstance(spec.overrides.get("init_image"), str):
                yield Path(spec.overrides["init_image"]), "init_image"
    for overrides in [v.overrides for v in manifest.variants] + [
        p.overrides for p in manifest.pairs
    ]:
        if isinstance(overrides.get("init_image"), str):
            yield Path(overrides["init_image"]), "init_image"
    if isinstance(manifest.base.get("init_image"), str):
        yield Path(manifest.base["init_image"]), "init_image"  # (a template: checked per task)
    if manifest.weights not in NAMED_SOURCES:
        yield Path(manifest.weights), "weights file"
