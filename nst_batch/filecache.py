"""What reading files taught a run, kept so that the next one need not read them again: the
SHA-256 of each input file (content and style images, init images, a weights file) and the
task key each output records in its metadata.

Every file is read at most once per process. Between runs an entry holds while the file's
stat is the one it was recorded with (size, modification and change times, inode number):
a write, a rename over it or a copy changes at least one of them, and then the file is read
again. The entries live under the output folder in `.nst-batch/files.json` (a shard's in
`files-shard-K-of-N.json`, so that shards never write one file); every run reads them all,
and a run writes its own file (atomically) only when what it learned differs from it. A dry
run and `report` read them and never write. A store that is missing, torn or not ours is
simply not used; the entry of a file no longer planned stays until that path is seen again
(deleting a store costs one reading of every file, nothing else).

Torch-free, and Pillow only on reading an output's metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeGuard

from nst_batch import layout
from nst_batch.layout import Share
from nst_batch.metadata import KEY_METADATA

VERSION = 1
Stamp = tuple[int, int, int, int]  # (size, mtime_ns, ctime_ns, inode) of a regular file
Entry = tuple[Stamp, str]  # a stamp and what the file held then: a SHA-256 or a task key
Kind = Literal["inputs", "outputs"]  # inputs by absolute path, outputs by relative path
# A store file as read: kind -> name -> [size, mtime_ns, ctime_ns, inode, SHA-256 or key]
Store = dict[Kind, dict[str, Any]]
KINDS: tuple[Kind, ...] = ("inputs", "outputs")


def stamp(status: os.stat_result) -> Stamp:
    """What changes when a file's bytes may have: size, times and inode number."""
    return (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)


def sha256_of(path: Path) -> tuple[str, Stamp | None]:
    """The SHA-256 of a file's bytes, and its stamp if the file did not change while being
    read (None otherwise: the hash holds for this run only). OSError if it cannot be read."""
    with path.open("rb") as file:
        before = stamp(os.fstat(file.fileno()))
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        after = stamp(os.fstat(file.fileno()))
    return digest, before if before == after else None


class FileCache:
    """Input hashes and output keys for one run: each file read at most once, and not at
    all while a stored entry's stamp matches the file's.

    `stores` are the store files of the output folder as read (`load`), `own` the one this
    run may write; entries are checked when looked up, so that loading is one JSON parse.
    What this run reads from files goes into `learned`, which `document` merges into `own`.
    """

    def __init__(
        self,
        stores: Iterable[Store] = (),
        own: Store | None = None,
        read_key: Callable[[Path], str | None] | None = None,
    ) -> None:
        self._stores = list(stores)
        self._own: Store = own or {kind: {} for kind in KINDS}
        self._learned: dict[Kind, dict[str, Entry | None]] = {kind: {} for kind in KINDS}
        self._hashes: dict[Path, str] = {}  # this run's answers, by path
        self._read_key = read_key or _recorded_key

    def sha256(self, path: Path) -> str:
        """The SHA-256 of an input file's bytes; OSError if it cannot be read."""
        known = self._hashes.get(path)
        if known is not None:
            return known
        name = str(path)
        digest = self._known("inputs", name, stamp(os.stat(name)))
        if digest is None:
            digest, steady = sha256_of(path)
            self._learned["inputs"][name] = None if steady is None else (steady, digest)
        self._hashes[path] = digest
        return digest

    def output_key(self, output: Path, relative: str) -> str | None:
        """The task key an output file records; None without a file or a key (a file that
        is not an image, or not made by nst-batch). Links are followed, as a read does."""
        learned = self._learned["outputs"]
        try:
            status = os.stat(output)
        except OSError:
            learned[relative] = None
            return None
        if not stat.S_ISREG(status.st_mode):
            learned[relative] = None
            return None
        now = stamp(status)
        key = self._known("outputs", relative, now)
        if key is not None:
            return key
        key = self._read_key(output)
        try:
            steady = stamp(os.stat(output)) == now  # not rewritten while it was read
        except OSError:
            steady = False
        learned[relative] = (now, key) if key is not None and steady else None
        return key

    def _known(self, kind: Kind, name: str, now: Stamp) -> str | None:
        """What a file held when it had the stamp `now`, if this run or a store knows."""
        learned = self._learned[kind]
        if name in learned:
            entry = learned[name]
            return entry[1] if entry is not None and entry[0] == now else None
        for store in self._stores:
            kept = store[kind].get(name)
            # Equal to the stamp's four integers: no further check of the entry's form.
            if type(kept) is list and len(kept) == 5 and tuple(kept[:4]) == now:
                value = kept[4]
                return value if type(value) is str else None
        return None

    def document(self) -> Store:
        """This run's store: its own file's entries, updated with what this run read."""
        merged: Store = {}
        for kind in KINDS:
            entries = {name: kept for name, kept in self._own[kind].items() if _is_entry(kept)}
            for name, entry in self._learned[kind].items():
                if entry is None:
                    entries.pop(name, None)
                else:
                    entries[name] = [*entry[0], entry[1]]
            merged[kind] = entries
        return merged

    def changed(self) -> bool:
        """Whether this run learned what its own store file does not hold."""
        for kind in KINDS:
            own = self._own[kind]
            for name, entry in self._learned[kind].items():
                kept = own.get(name)
                if (kept is not None) if entry is None else kept != [*entry[0], entry[1]]:
                    return True
        return False


def _recorded_key(output: Path) -> str | None:
    from nst_batch.images import read_metadata  # Pillow only: reads the header

    return read_metadata(output).get(KEY_METADATA)


def load(root: Path, share: Share) -> FileCache:
    """The store files under `root`, `share`'s own among them. Reads only."""
    mine = layout.file_cache(root, share)
    stores, own = [], None
    for path in layout.file_caches(root):
        store = _read(path)
        stores.append(store)
        if path == mine:
            own = store
    return FileCache(stores, own)


def save(cache: FileCache, root: Path, share: Share) -> bool:
    """Write `share`'s store file if this run learned something new; whether it did."""
    if not cache.changed():
        return False
    data: dict[str, object] = {"version": VERSION}
    for kind, entries in cache.document().items():
        data[kind] = entries
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    layout.write_atomically(layout.file_cache(root, share), text.encode(), root)
    return True


def _read(path: Path) -> Store:
    """A store file's entries, unchecked; none for a file that is missing, a link, torn or
    not ours."""
    store: Store = {kind: {} for kind in KINDS}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb") as file:
            data = json.loads(file.read())
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested deep
        return store
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return store
    for kind in KINDS:
        entries = data.get(kind)
        if isinstance(entries, dict):
            store[kind] = entries
    return store


def _is_entry(value: object) -> TypeGuard[list[Any]]:
    """[size, mtime_ns, ctime_ns, inode, text]: four integers and a string."""
    return (
        type(value) is list
        and len(value) == 5
        and all(type(number) is int for number in value[:4])
        and type(value[4]) is str
    )
