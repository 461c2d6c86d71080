"""What the plan no longer makes: the files in an output folder that nst-batch wrote for tasks,
sequences or images the manifest no longer has (outputs of a removed content, style or variant,
their loss curves and snapshots, thumbnails, animations, checkpoints, flow cache entries,
video frames decoded for a clip no content entry takes any more).
`nst-batch clean` lists them and removes them only when asked. A file is listed only when it
carries nst-batch's mark (its metadata, a curve's key, our names under `.nst-batch/` and
`thumbs/`), never when it is an input of the manifest. See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nst_batch import layout
from nst_batch.metadata import KEY_METADATA
from nst_batch.plan import Task

Kind = Literal[
    "output", "curve", "snapshot", "animation", "thumbnail", "checkpoint", "flow", "frames"
]
_IMAGES = (".jpg", ".jpeg", ".png", ".webp")
_CURVE_BYTES = 1 << 24  # a curve of a million steps is some 20 MB; larger is not ours
# A clip's folder under `.nst-batch/frames/` (video.digest) and the files decode writes in it.
_CLIP_FOLDER = re.compile(r"^[0-9a-f]{16}$")
_DECODED = re.compile(r"^frame_\d{6}\.png$")


@dataclass(frozen=True)
class Stale:
    path: Path
    kind: Kind


def stale_files(root: Path, tasks: Iterable[Task]) -> list[Stale]:
    """Every file under `root` that nst-batch wrote and no task of the plan `tasks` (the
    whole plan) makes or uses, sorted by path."""
    tasks = list(tasks)
    planned = {task.output for task in tasks}
    chains = {layout.animation_path(root, task.chain) for task in tasks if task.chain}
    chains |= {  # a sequence's other animation: `<chain>.webp` is no stale output
        layout.animation_path(root, task.chain, task.content.sequence.animation)
        for task in tasks
        if task.chain and task.content.sequence and task.content.sequence.animation != "none"
    }
    inputs = {task.content.path for task in tasks}
    inputs |= {path for task in tasks for path, _ in task.style.images}
    found = [*_outputs(root, planned, chains, inputs), *_thumbnails(root, tasks)]
    planned_names = [task.relative_output for task in tasks]
    found += [Stale(path, "checkpoint") for path in layout.orphan_checkpoints(root, planned_names)]
    found += _flow_entries(root, tasks)
    found += _decoded_clips(root, tasks)
    return sorted(found, key=lambda stale: stale.path)


def remove(root: Path, stale: Iterable[Stale]) -> int:
    """Remove the files (never through a link), then the folders they leave empty; how many."""
    removed = 0
    folders = set()
    for item in stale:
        if layout.remove_file(item.path, root):
            removed += 1
            folders.add(item.path.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        while folder != root and root in folder.parents:
            layout.remove_empty_folder(folder, root)
            folder = folder.parent
    return removed


def _walk(root: Path, skip: set[Path]) -> Iterator[Path]:
    """Regular files under `root`, links and the folders in `skip` left out."""
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = [name for name in subfolders if here / name not in skip]
        for name in names:
            path = here / name
            if not path.is_symlink() and path.is_file():
                yield path


def _outputs(
    root: Path, planned: set[Path], chains: set[Path], inputs: set[Path]
) -> Iterator[Stale]:
    from nst_batch.images import read_metadata

    skip = {root / layout.STATE, root / layout.THUMBS, root / layout.PAGES}
    for path in _walk(root, skip):
        if path in planned or path in chains or path in inputs:
            continue
        if path.parent == root and _gallery_file(path.name):
            continue
        name = path.name
        if name.endswith(layout.CURVE_SUFFIX):
            image = path.with_name(name[: -len(layout.CURVE_SUFFIX)])
            if image not in planned and _is_curve(path):
                yield Stale(path, "curve")
            continue
        if not name.lower().endswith((*_IMAGES, layout.ANIMATION_SUFFIX)):
            continue
        if KEY_METADATA not in read_metadata(path):
            continue  # not ours: a user's file, or an image a tool rewrote
        if layout.is_snapshot(name):
            kind: Kind = "snapshot"
        elif name.endswith(layout.ANIMATION_SUFFIX):
            kind = "animation"
        else:
            kind = "output"
        yield Stale(path, kind)


def _gallery_file(name: str) -> bool:
    """The results, the page and the contact sheets at the top: the gallery's, never stale."""
    return (
        layout.is_results_file(name)
        or name in layout.RESERVED_NAMES
        or name.startswith("contact_sheet")
    )


def _is_curve(path: Path) -> bool:
    """Whether `path` holds a loss curve as the worker writes it (a key and a list)."""
    try:
        if path.stat().st_size > _CURVE_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "key" in data and isinstance(data.get("total_loss"), list)


def _thumbnails(root: Path, tasks: list[Task]) -> Iterator[Stale]:
    wanted = {layout.output_thumbnail(root, task.relative_output) for task in tasks}
    for task in tasks:  # a sequence's row shows its first frame, named as the frame
        wanted.add(layout.header_thumbnail(root, "content", task.content.name))
        wanted.add(layout.header_thumbnail(root, "style", task.style.name))
    thumbs = root / layout.THUMBS
    if not thumbs.is_dir() or thumbs.is_symlink():
        return
    for path in _walk(thumbs, set()):
        if path not in wanted and path.suffix == ".jpg":
            yield Stale(path, "thumbnail")


def _flow_entries(root: Path, tasks: list[Task]) -> list[Stale]:
    """Cached motion between frame pairs that no frame of the plan reads."""
    folder = layout.flow_path(root, "")
    if not folder.is_dir() or folder.is_symlink():
        return []
    from nst_batch import flow, images
    from nst_batch.weights import file_sha256

    wanted = set()
    for task in tasks:
        if task.after_content is None:
            continue
        try:
            header = images.oriented_size(task.content.path)
            if header is None:
                continue
            size = images.target_size(*header, task.params.size, task.params.square)
            pair = (file_sha256(task.after_content), file_sha256(task.content.path))
        except OSError:
            continue
        wanted.add(flow.cache_name(*pair, size))
    return [
        Stale(path, "flow")
        for path in _walk(folder, set())
        if path.suffix == ".npz" and path.name not in wanted
    ]


def _decoded_clips(root: Path, tasks: list[Task]) -> list[Stale]:
    """The frames of a video clip decoded earlier that no sequence of the plan takes (the
    video changed, or its entry's start, end, every or limits), and those of a decoding that
    was killed before its folder was renamed into place."""
    folder = root / layout.STATE / layout.FRAMES
    if not folder.is_dir() or folder.is_symlink():
        return []
    wanted = {
        task.content.sequence.video.digest
        for task in tasks
        if task.content.sequence is not None and task.content.sequence.video is not None
    }
    found = []
    for clip in folder.iterdir():
        ours = _CLIP_FOLDER.match(clip.name) or layout.is_temporary(clip.name)
        if not ours or clip.name in wanted or clip.is_symlink() or not clip.is_dir():
            continue
        with os.scandir(clip) as listing:
            found += [
                Stale(Path(entry.path), "frames")
                for entry in listing
                if (entry.name == layout.FRAMES_RECORD or _DECODED.match(entry.name))
                and entry.is_file(follow_symlinks=False)
            ]
    return found
