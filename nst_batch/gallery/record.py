"""What each page and contact sheet of the gallery was built from: `.nst-batch/gallery.json`.

For each file, a fingerprint of its inputs (its cells' states, rows, and the stamps of the
thumbnails, animations and curve files it shows, a sequence's cell with each frame's state,
key and row; its place among the pages; the gallery's own code and templates) and the stamp
of the file as written. A file whose fingerprint and stamp are both unchanged is up to date
and is not written again, so an up-to-date rerun only reads, and a changed task rebuilds
only the page and sheet that show it. Fingerprints come from stat calls and the results
alone: making them decodes no image and reads no curve.

A record that is missing, unreadable, torn, not ours or of another version is empty:
everything is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from nst_batch.gallery.grid import Cell, Header, Stamp, stamp
from nst_batch.layout import gallery_record, relative_to, write_atomically

VERSION = 1

Print = tuple[object, ...]  # what a cell or header shows, as plain values


@dataclass
class Record:
    """The fingerprint and stamp of every file of the gallery, by name in the output folder."""

    root: Path
    files: dict[str, tuple[str, Stamp]] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def load(cls, root: Path) -> Record:
        """The record in `root`; empty when there is none or it cannot be used."""
        try:
            data = json.loads(gallery_record(root).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError("another version")
            files = {
                name: (_fingerprint(entry["fingerprint"]), _stamp(entry["stamp"]))
                for name, entry in data["files"].items()
            }
        # RecursionError: arrays nested thousands deep, which json cannot parse
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return cls(root)
        return cls(root, files)

    def fresh(self, path: Path, fingerprint: str) -> bool:
        """Whether `path` was built from `fingerprint` and is still the file then written."""
        entry = self.files.get(self._name(path))
        return entry is not None and entry[0] == fingerprint and entry[1] == stamp(path)

    def wrote(self, path: Path, fingerprint: str) -> None:
        """Note that `path` was just written from `fingerprint`."""
        written = stamp(path)
        if written is None:
            self.forget(path)
        else:
            self.files[self._name(path)] = (fingerprint, written)
            self.changed = True

    def forget(self, path: Path) -> None:
        """`path` is not up to date (its write failed) or no longer part of the gallery."""
        if self.files.pop(self._name(path), None) is not None:
            self.changed = True

    def keep(self, paths: Iterable[Path]) -> None:
        """Forget every file but `paths`: those of a larger earlier gallery."""
        kept = {self._name(path) for path in paths}
        for name in [name for name in self.files if name not in kept]:
            del self.files[name]
            self.changed = True

    def save(self) -> None:
        """Write the record atomically if anything changed; OSError or UnsafeWrite if refused."""
        if not self.changed:
            return
        files = {
            name: {"fingerprint": fingerprint, "stamp": list(written)}
            for name, (fingerprint, written) in sorted(self.files.items())
        }
        text = json.dumps({"version": VERSION, "files": files}, indent=1) + "\n"
        write_atomically(gallery_record(self.root), text.encode("utf-8"), self.root)
        self.changed = False

    def _name(self, path: Path) -> str:
        name = relative_to(self.root, path)
        assert name is not None, f"{path} is not in {self.root}"
        return name


def _fingerprint(value: object) -> str:
    # Taken as it is, never through str(): a nested list's str() recurses as deep as it goes.
    if type(value) is not str:
        raise ValueError(f"not a fingerprint: a {type(value).__name__}")
    return value


def _stamp(value: object) -> Stamp:
    if not (isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value)):
        raise ValueError(f"not a stamp: a {type(value).__name__}")
    return value[0], value[1], value[2], value[3]


def fingerprint(*parts: object) -> str:
    """A digest of plain values (strings, numbers, None, tuples and lists of them), with the
    gallery's code version: a change to the code or templates rebuilds every file."""
    text = repr((code_version(), parts))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@cache
def code_version() -> str:
    """A digest of the gallery package's modules and templates, as installed."""
    digest = hashlib.sha256()
    package = resources.files("nst_batch.gallery")
    for folder in (package, package.joinpath("templates")):
        for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
            if item.is_file() and item.name.endswith((".py", ".html")):
                digest.update(item.name.encode() + b"\0" + item.read_bytes() + b"\0")
    return digest.hexdigest()


def cell_print(cell: Cell, snapshots: Mapping[Path, list[tuple[int, Path]]]) -> Print:
    """Everything a cell shows on a page or a sheet, as plain values: its state and reason,
    its task's names and key, its row's numbers, the stamps of its thumbnail and curve file,
    and the steps of its snapshots; for a sequence, also each frame's and its animation's."""
    shown = _own_print(cell, snapshots)
    if not cell.frames:
        return shown
    frames = tuple(_own_print(frame, snapshots) for frame in cell.frames)
    return (*shown, frames, None if cell.animation is None else cell.animation.stamp)


def _own_print(cell: Cell, snapshots: Mapping[Path, list[tuple[int, Path]]]) -> Print:
    task, row = cell.task, cell.row
    if task is None:
        return (cell.state,)
    shown = None
    if row is not None:
        shown = (
            row.status,
            row.content_loss,
            row.style_loss,
            row.tv_loss,
            row.temporal_loss,
            row.total_loss,
            row.steps,
            row.seconds,
            row.error,
        )
    return (
        cell.state,
        cell.note,
        task.label,
        task.relative_output,
        task.key,
        shown,
        None if cell.thumb is None else cell.thumb.stamp,
        cell.curve,
        tuple(step for step, _ in snapshots.get(task.output, ())),
    )


def header_print(header: Header) -> Print:
    """Everything a content or style header shows: its name, file name, frame count (of a
    sequence) and thumbnail."""
    thumb = None if header.thumb is None else header.thumb.stamp
    return header.name, header.spec.path.name, header.frames, thumb
