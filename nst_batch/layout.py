"""The output folder's contract: every name nst-batch writes there (outputs, curves,
snapshots, animations, the gallery, results, locks, and its own `.nst-batch/` state), and the
one way it writes: `write_atomically` and `open_in_folder`, folder by folder from the output
folder down, never through a symbolic link, so that a link planted there cannot make a run
write anywhere else. The names are listed in docs/layout.md.

Imports nothing of ours: it takes paths and names.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Literal

PAGE = "index.html"
COMPARE = "compare.html"  # a sweep's variants side by side, beside the page
SHEET = "contact_sheet.jpg"  # the contact sheet of a gallery that fits on one
THUMBS = "thumbs"
PAGES = "pages"  # the gallery's (and comparison's) pages, when one page would be too long
RESULTS = "results.csv"
LOCK = ".nst-batch.lock"
CURVE_SUFFIX = ".json"  # an output's loss curve: `<output name>.json` beside it
STATE = ".nst-batch"  # our own hidden folder: checkpoints, file cache, gallery record
CHECKPOINTS = "checkpoints"  # under STATE
FLOW = "flow"  # under STATE: optical flow between a sequence's frames, reused by reruns
GALLERY_RECORD = "gallery.json"  # under STATE: what each page and sheet was built from
ANIMATION_SUFFIX = ".gif"  # a sequence's animation: `<chain>.gif` beside its frames' folder
AnimationKind = Literal["gif", "webp", "mp4", "webm"]  # ... or `<chain>.webp`, `.mp4`, `.webm`
FRAMES = "frames"  # under STATE: each video clip decoded into frames, a folder per clip
FRAMES_RECORD = "clip.json"  # in a clip's folder: its frame count, size, rate and sound
RESERVED_NAMES = frozenset({PAGE, COMPARE, SHEET, THUMBS, STATE, PAGES})
PageKind = Literal["page", "compare"]  # a page of the grids, or of the comparison

Share = tuple[int, int] | None  # (K, N) of a shard, None for a whole run
HeaderKind = Literal["content", "style"]

_RESULTS_FILE = re.compile(r"^results(-shard-[1-9]\d*-of-[1-9]\d*)?\.csv$")
_SHARD_LOCK = re.compile(r"^\.nst-batch-shard-([1-9]\d*)-of-([1-9]\d*)\.lock$")
_TEMPORARY = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.nst-batch\.tmp$")
# A progress snapshot: `<output stem>.step<4+ digits>.<format>`; no output may be named so.
_SNAPSHOT = re.compile(r"^(.+)\.step(\d{4,})\.(jpg|png|webp)$", re.IGNORECASE)
_CHECKPOINT = re.compile(r"^([0-9a-f]{12})-([0-9a-f]+)\.pt$")
# A gallery too large for one contact sheet has numbered ones: `contact_sheet-001.jpg` ...
_NUMBERED_SHEET = re.compile(r"^contact_sheet-(\d+)\.jpg$", re.IGNORECASE)
_GALLERY_PAGE = re.compile(r"^(page|compare)-(\d+)\.html$")
_FILE_CACHE = re.compile(r"^files(-shard-[1-9]\d*-of-[1-9]\d*)?\.json$")
_NEW_FILE_MODE = 0o666  # open() applies the umask, as it does for any new file


class UnsafeWrite(Exception):
    """A write under the output folder would go through a symbolic link or leave the folder."""


class Locked(Exception):
    """Another run works on the same output (or a conflicting share of it)."""


# -- names -------------------------------------------------------------------------------


def share_suffix(share: Share) -> str:
    """'' for a whole run, '-shard-K-of-N' for a shard: its results and lock file names."""
    return f"-shard-{share[0]}-of-{share[1]}" if share else ""


def results_file(root: Path, share: Share) -> Path:
    """Each shard appends to its own file, so no two processes ever write one file."""
    return root / RESULTS.replace(".csv", f"{share_suffix(share)}.csv")


def results_files(root: Path) -> list[Path]:
    """The results files of every run and shard in `root`, sorted; other CSV files are not ours."""
    try:
        names = [entry.name for entry in os.scandir(root)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(root / name for name in names if _RESULTS_FILE.match(name))


def is_results_file(name: str) -> bool:
    return bool(_RESULTS_FILE.match(name))


def lock_file(root: Path, share: Share) -> Path:
    return root / LOCK.replace(".lock", f"{share_suffix(share)}.lock")


def curve_path(output: Path) -> Path:
    """The loss curve file written beside an output: `<output name>.json`."""
    return output.with_name(output.name + CURVE_SUFFIX)


def snapshot_path(output: Path, step: int) -> Path:
    """A progress snapshot of `output` at `step`, beside it: `chelsea__starry.step0100.jpg`."""
    return output.with_name(f"{output.stem}.step{step:04d}{output.suffix}")


def is_snapshot(name: str) -> bool:
    """Whether a file name has a snapshot's form (`<stem>.step<digits>.<format>`)."""
    return bool(_SNAPSHOT.match(name))


def snapshots(output: Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot of `output` in its folder, by step."""
    return snapshot_index([output]).get(output, [])


def snapshot_index(outputs: Iterable[Path]) -> dict[Path, list[tuple[int, Path]]]:
    """(step, path) of every snapshot of each of `outputs`, by step; each folder is read
    once (a page of 20,000 cells in one folder must not read it 20,000 times)."""
    wanted: dict[Path, set[str]] = {}
    for output in outputs:
        wanted.setdefault(output.parent, set()).add(output.name)
    found: dict[Path, list[tuple[int, Path]]] = {}
    for folder, names in wanted.items():
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = _SNAPSHOT.match(entry.name)
                if match is None or entry.is_symlink():
                    continue
                name = f"{match[1]}.{match[3]}"
                if name in names:
                    found.setdefault(folder / name, []).append((int(match[2]), folder / entry.name))
    return {output: sorted(steps) for output, steps in found.items()}


def _output_id(relative_output: str) -> str:
    return hashlib.sha256(relative_output.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def animation_path(root: Path, chain: str, kind: AnimationKind = "gif") -> Path:
    """A sequence's animation in one style and variant: `<chain>.gif` (or `.webp`, `.mp4`,
    `.webm`) beside the folder of its frames' outputs (`coffee__starry_night.gif` beside
    `coffee__starry_night/`)."""
    return root / f"{chain}.{kind}"


def frames_folder(root: Path, digest: str) -> Path:
    """Where a video clip's frames are decoded: `.nst-batch/frames/<digest>/`, named by the
    video's bytes and the part taken of it (video.py), so that a rerun finds them."""
    return root / STATE / FRAMES / digest


def decoded_frame(folder: Path, number: int) -> Path:
    """A clip's frame `number` (from 1) in its folder: `frame_000001.png`. Its stem names
    the frame's outputs: `walk__starry_night/frame_000001.jpg`."""
    return folder / f"frame_{number:06d}.png"


def is_decoded_frame(relative: str) -> bool:
    """Whether a path relative to the output folder is in the decoded frames' cache: our
    own, yet read by a run as its inputs."""
    parts = PurePosixPath(relative).parts
    return len(parts) == 4 and parts[:2] == (STATE, FRAMES)


def checkpoints_folder(root: Path) -> Path:
    return root / STATE / CHECKPOINTS


def flow_path(root: Path, name: str) -> Path:
    """Where the motion between two frames is cached: `.nst-batch/flow/<name>` (flow.py
    names it by the frames' bytes and size)."""
    return root / STATE / FLOW / name


def checkpoint_path(root: Path, relative_output: str, key: str) -> Path:
    """Where the task writing `relative_output` with `key` keeps its checkpoint:
    `.nst-batch/checkpoints/<output id>-<key>.pt`. Named by output and key, so that a
    task finds its own checkpoints made with older settings (and removes them when done)."""
    return checkpoints_folder(root) / f"{_output_id(relative_output)}-{key}.pt"


def checkpoints(root: Path) -> list[tuple[str, str, Path]]:
    """(output id, key, path) of every checkpoint file in the output folder."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(checkpoints_folder(root)):
            match = _CHECKPOINT.match(entry.name)
            if match and not entry.is_symlink():
                found.append((match[1], match[2], checkpoints_folder(root) / entry.name))
    return sorted(found)


def output_checkpoints(root: Path, relative_output: str) -> list[Path]:
    """Every checkpoint of the task writing `relative_output`, whatever its key."""
    own = _output_id(relative_output)
    return [path for output_id, _, path in checkpoints(root) if output_id == own]


def orphan_checkpoints(root: Path, relative_outputs: Iterable[str]) -> list[Path]:
    """Checkpoints of outputs not among `relative_outputs` (the whole plan's)."""
    known = {_output_id(name) for name in relative_outputs}
    return [path for output_id, _, path in checkpoints(root) if output_id not in known]


def file_cache(root: Path, share: Share) -> Path:
    """Where a run (or shard) keeps what it learned of its files: `.nst-batch/files.json`
    (see filecache.py); each shard has its own, as it has its own results file."""
    return root / STATE / f"files{share_suffix(share)}.json"


def file_caches(root: Path) -> list[Path]:
    """Every run's and shard's file cache in the output folder, sorted."""
    folder = root / STATE
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    return sorted(folder / name for name in names if _FILE_CACHE.match(name))


def output_thumbnail(root: Path, relative_output: str) -> Path:
    return root / THUMBS / "outputs" / f"{relative_output}.jpg"


def header_thumbnail(root: Path, kind: HeaderKind, name: str) -> Path:
    """A content or style image's thumbnail: one file per distinct name ('x/y' is not 'x_y')."""
    escaped = "".join(c if c.isalnum() or c in " -_+=,()" else f"%{ord(c):02X}" for c in name)
    return root / THUMBS / kind / f"{escaped}.jpg"


def sheet_path(root: Path, number: int | None) -> Path:
    """A contact sheet: `contact_sheet.jpg` for a gallery on one sheet (`number` None), else
    the number-th (from 1) of `contact_sheet-001.jpg`, `contact_sheet-002.jpg` ..."""
    return root / (SHEET if number is None else f"contact_sheet-{number:03d}.jpg")


def numbered_sheets(root: Path) -> list[Path]:
    """Every numbered contact sheet in the output folder (links too: they are removed, never
    followed), by number."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            match = _NUMBERED_SHEET.match(entry.name)
            if match:
                found.append((int(match[1]), root / entry.name))
    return [path for _, path in sorted(found)]


def page_path(root: Path, kind: PageKind, number: int) -> Path:
    """The number-th (from 1) page of the grids (`pages/page-001.html`) or of the comparison
    (`pages/compare-001.html`), for a gallery too long for one page."""
    return root / PAGES / f"{kind}-{number:03d}.html"


def gallery_pages(root: Path) -> list[Path]:
    """Every page of the grids and of the comparison in `pages/`, sorted; other files there
    are not ours to list."""
    with contextlib.suppress(OSError):
        names = [entry.name for entry in os.scandir(root / PAGES)]
        return sorted(root / PAGES / name for name in names if _GALLERY_PAGE.match(name))
    return []


def gallery_record(root: Path) -> Path:
    """`.nst-batch/gallery.json`: what each page and contact sheet was last built from."""
    return root / STATE / GALLERY_RECORD


def is_temporary(name: str) -> bool:
    return bool(_TEMPORARY.match(name))


def is_reserved(relative: str) -> bool:
    """Whether a path relative to the output folder is one of nst-batch's own files: the page,
    its pages (`pages/`), the contact sheets, thumbnails, results, locks, checkpoints and the
    gallery's record (`.nst-batch/`), progress snapshots or a temporary (not outputs and
    curves)."""
    if "/" in relative or relative in ("", "."):
        parts = PurePosixPath(relative).parts
    else:
        parts = (relative,)  # a file in the output folder itself: most outputs
    if not parts:
        return False
    first = parts[0].lower()
    if first in RESERVED_NAMES or (first.startswith("results") and first.endswith(".csv")):
        return True
    if _NUMBERED_SHEET.match(first):
        return True
    if first.startswith(".nst-batch") and first.endswith(".lock"):
        return True
    return is_temporary(parts[-1]) or is_snapshot(parts[-1])


def display(name: str | Path) -> str:
    """A file name as one line of text that can be printed and stored: bytes that are not
    UTF-8 (kept by Python as surrogates) and control characters (a line break, an escape
    sequence) are shown as backslash escapes: 'caf\\xe9.png', 'a\\nb.png'."""
    text = os.fspath(name)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name byte stands for
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(
        c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text
    )


def relative_to(root: Path, path: Path) -> str | None:
    """`path` relative to `root` as a POSIX string, or None when it is not inside."""
    if root.is_absolute() and not str(path).startswith(str(root)):
        return None  # the common case, told apart without pathlib's part by part compare
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name over the file system's limit, say
        return False


def is_case_insensitive(folder: Path) -> bool:
    """Whether the file system holding `folder` (or its nearest existing parent) folds case."""
    probe = folder
    while not _exists(probe) and probe != probe.parent:  # a name too long does not exist
        probe = probe.parent
    swapped = probe.with_name(probe.name.swapcase()) if probe.name else probe
    if swapped == probe:
        return False
    try:
        return swapped.exists() and os.path.samefile(swapped, probe)
    except OSError:
        return False


# -- safe writes -------------------------------------------------------------------------


def _unsafe(path: Path, why: str) -> UnsafeWrite:
    return UnsafeWrite(
        f"{path} {why}; nst-batch never writes through links or outside its output folder: "
        "remove it, or choose another 'output'"
    )


def _parts(root: Path, path: Path) -> tuple[str, ...]:
    relative = relative_to(root, path)
    if relative is None or relative == "." or ".." in PurePosixPath(relative).parts:
        raise _unsafe(path, f"is not inside the output folder {root}")
    return PurePosixPath(relative).parts


@contextlib.contextmanager
def _folder(root: Path, parts: Iterable[str], create: bool = True) -> Iterator[int]:
    """A descriptor of root/parts, opened one folder at a time without following a link."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        where = root
        for part in parts:
            where = where / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if os.path.islink(where) else "not a folder"
                    raise _unsafe(where, f"is {kind}") from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _refuse_link(fd: int, name: str, path: Path) -> None:
    try:
        mode = os.lstat(name, dir_fd=fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _unsafe(path, "is a symbolic link")


def run_files(root: Path, share: Share) -> list[Path]:
    """A path (or a stand-in inside each folder) of everything a run of `share` may write in
    `root` besides the outputs and their curves: what `check_writable` checks before work."""
    return [
        results_file(root, share),
        lock_file(root, None),
        lock_file(root, share),
        root / PAGE,
        root / COMPARE,
        root / SHEET,
        root / PAGES / "x.html",
        gallery_record(root),
        root / THUMBS / "outputs",
        checkpoints_folder(root) / "x.pt",
        file_cache(root, share),
    ]


def check_writable(root: Path, paths: Iterable[Path]) -> None:
    """Raise UnsafeWrite if writing any of `paths` would pass a symbolic link (or leave `root`).

    Only what exists is checked: a run creates missing folders itself, through `_folder`.
    """
    checked: set[Path] = set()
    for path in paths:
        where = root
        for part in _parts(root, path):
            where = where / part
            if where in checked:
                continue
            checked.add(where)
            if where.is_symlink():
                raise _unsafe(where, "is a symbolic link")


def write_atomically(path: Path, write: bytes | Callable[[IO[bytes]], object], root: Path) -> None:
    """Write a file under `root` so that it is either untouched or complete, even if killed.

    `write` (the bytes, or a function that writes them into a file object) goes into a hidden
    temporary beside `path`, which is synced and renamed over `path`; then the folder is
    synced, so the rename is durable too. Missing folders are made. Raises UnsafeWrite when
    `path` or a folder on the way is a symbolic link, OSError when the file system refuses.
    """
    *folders, name = _parts(root, path)
    with _folder(root, folders) as fd:
        _refuse_link(fd, name, path)
        temp = f".{name}.{secrets.token_hex(4)}.nst-batch.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        handle = os.open(temp, flags, _NEW_FILE_MODE, dir_fd=fd)
        try:
            with open(handle, "wb") as file:
                if isinstance(write, bytes):
                    file.write(write)
                else:
                    write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=fd)
            raise
        os.fsync(fd)


def open_in_folder(path: Path, root: Path, flags: int) -> int:
    """A descriptor of `path` under `root` opened with `flags` (plus O_NOFOLLOW), never
    through a link: for files written in place (the results file a run appends to, locks)."""
    *folders, name = _parts(root, path)
    with _folder(root, folders) as fd:
        _refuse_link(fd, name, path)
        try:
            return os.open(name, flags | os.O_NOFOLLOW, _NEW_FILE_MODE, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(path, "is a symbolic link") from None
            raise


def remove_file(path: Path, root: Path) -> bool:
    """Remove the file `path` under `root`, never through a link on the way (a link at
    `path` itself is removed, not followed); False when it was not there."""
    *folders, name = _parts(root, path)
    try:
        with _folder(root, folders, create=False) as fd:
            os.unlink(name, dir_fd=fd)
    except (FileNotFoundError, UnsafeWrite):
        return False
    return True


def remove_empty_state(root: Path) -> None:
    """Remove `.nst-batch/checkpoints/` and `.nst-batch/` when they are empty (every task
    done): a finished gallery keeps no trace of its checkpoints. Never through a link."""
    with contextlib.suppress(OSError, UnsafeWrite), _folder(root, [STATE], create=False) as fd:
        os.rmdir(CHECKPOINTS, dir_fd=fd)
    with contextlib.suppress(OSError, UnsafeWrite), _folder(root, [], create=False) as fd:
        os.rmdir(STATE, dir_fd=fd)


def remove_empty_folder(path: Path, root: Path) -> None:
    """Remove the folder `path` under `root` when it is empty (`pages/` of a gallery that
    fits on one page again); never through a link, and quietly when it is not empty."""
    *folders, name = _parts(root, path)
    with contextlib.suppress(OSError, UnsafeWrite), _folder(root, folders, create=False) as fd:
        os.rmdir(name, dir_fd=fd)


def stale_temporaries(
    root: Path, outputs: Iterable[Path], everything: bool, checkpoint_files: Iterable[Path] = ()
) -> list[Path]:
    """The temporaries a killed run left: of `outputs`, their curves and snapshots and of
    `checkpoint_files` only, or with `everything` (for a run that holds the whole folder)
    every one in the output folder, the outputs' folders, the thumbnails, the gallery's pages
    and `.nst-batch/`."""
    outputs = list(outputs)
    wanted = {p.parent / n for p in outputs for n in (p.name, curve_path(p).name)}
    wanted |= set(checkpoint_files)
    found: list[Path] = []
    folders = [root, *(p.parent for p in outputs), *(p.parent for p in checkpoint_files)]
    for folder in dict.fromkeys(folders):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = _TEMPORARY.match(entry.name)
                if match is None:
                    continue
                snapshot = _SNAPSHOT.match(match[1])
                of = folder / f"{snapshot[1]}.{snapshot[3]}" if snapshot else None
                if everything or folder / match[1] in wanted or of in wanted:
                    found.append(folder / entry.name)
    if everything:
        for top in (THUMBS, PAGES, STATE):
            for here, _, names in os.walk(root / top):  # does not follow links
                found += [Path(here) / n for n in names if is_temporary(n)]
    return sorted(set(found))


# -- locks -------------------------------------------------------------------------------


@contextlib.contextmanager
def hold(root: Path, share: Share) -> Iterator[None]:
    """The output folder for one run, report or shard, for the duration; Locked if taken.

    A whole run (and `report`) holds `.nst-batch.lock` exclusively; a shard holds it shared
    plus its own `.nst-batch-shard-K-of-N.lock` exclusively, and refuses to start beside a
    shard of another split (another N) of the same folder. So shards of one N run side by
    side, and a whole run excludes them all. flock locks die with their process, however it
    dies, so a killed run's lock is simply taken over.
    """
    main = open_in_folder(lock_file(root, None), root, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(main, (fcntl.LOCK_SH if share else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(_holders(root, main, lock_file(root, None))) from None
        if share is None:
            _write_pid(main)
            yield
            return
        own = open_in_folder(lock_file(root, share), root, os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Locked(_holders(root, own, lock_file(root, share))) from None
            _write_pid(own)
            others = [s for s in _running_shards(root) if s[1] != share[1]]
            if others:
                names = ", ".join(f"{k}/{n} (PID {pid})" for k, n, pid in others)
                raise Locked(
                    f"shards of another split of this output are running ({names}); shards "
                    f"{share[0]}/{share[1]} and those would overlap; wait for them or stop them"
                )
            yield
        finally:
            os.close(own)
    finally:
        os.close(main)


def running_since(root: Path) -> float | None:
    """When the run (or the earliest shard) now holding `root` started, as a POSIX time:
    the time it wrote its PID into its lock file; None when no lock there is held."""
    held = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if not (entry.name == LOCK or _SHARD_LOCK.match(entry.name)) or entry.is_symlink():
                continue
            fd = os.open(root / entry.name, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                try:  # a shared probe: held exclusively by a whole run or by a shard
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except BlockingIOError:
                    held.append(os.fstat(fd).st_mtime)
            finally:
                os.close(fd)
    return min(held) if held else None


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _pid(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def _running_shards(root: Path) -> list[tuple[int, int, str]]:
    """(K, N, PID) of every shard whose lock is held by a live process."""
    running = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            match = _SHARD_LOCK.match(entry.name)
            if match is None or entry.is_symlink():
                continue
            fd = os.open(root / entry.name, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    running.append((int(match[1]), int(match[2]), _pid(fd)))
            finally:
                os.close(fd)
    return sorted(running, key=lambda s: (s[1], s[0]))


def _holders(root: Path, fd: int, lock: Path) -> str:
    shards = _running_shards(root)
    if shards:
        who = "shards " + ", ".join(f"{k}/{n} (PID {pid})" for k, n, pid in shards)
    else:
        who = f"PID {_pid(fd)}"
    return (
        f"another nst-batch run ({who}) is working on this output: {lock} is locked; "
        "wait for it to finish, or stop it"
    )
