"""layout.py, the output folder's contract: every name nst-batch writes there, and the one
way it writes (never through a link, never outside the folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nst_batch import layout
from nst_batch.layout import UnsafeWrite


def test_names_of_a_whole_run_and_of_a_shard(tmp_path: Path) -> None:
    assert layout.share_suffix(None) == "" and layout.share_suffix((2, 4)) == "-shard-2-of-4"
    assert layout.results_file(tmp_path, None) == tmp_path / "results.csv"
    assert layout.results_file(tmp_path, (2, 4)) == tmp_path / "results-shard-2-of-4.csv"
    assert layout.lock_file(tmp_path, None) == tmp_path / ".nst-batch.lock"
    assert layout.lock_file(tmp_path, (1, 3)) == tmp_path / ".nst-batch-shard-1-of-3.lock"
    assert layout.file_cache(tmp_path, (1, 3)).name == "files-shard-1-of-3.json"
    files = layout.run_files(tmp_path, (1, 3))
    assert layout.results_file(tmp_path, (1, 3)) in files
    assert layout.lock_file(tmp_path, None) in files and layout.lock_file(tmp_path, (1, 3)) in files
    assert all(tmp_path in path.parents for path in files)


def test_names_beside_an_output(tmp_path: Path) -> None:
    output = tmp_path / "walk__starry" / "f1.jpg"
    assert layout.curve_path(output) == tmp_path / "walk__starry" / "f1.jpg.json"
    assert layout.snapshot_path(output, 7) == tmp_path / "walk__starry" / "f1.step0007.jpg"
    assert layout.snapshot_path(output, 12345).name == "f1.step12345.jpg"
    assert layout.is_snapshot("f1.step0007.jpg") and layout.is_snapshot("x.STEP0100.PNG")
    assert not layout.is_snapshot("f1.step7.jpg") and not layout.is_snapshot("f1.jpg")
    assert layout.animation_path(tmp_path, "walk__starry") == tmp_path / "walk__starry.gif"
    assert layout.output_thumbnail(tmp_path, "a/b.jpg") == tmp_path / "thumbs/outputs/a/b.jpg.jpg"
    assert layout.header_thumbnail(tmp_path, "content", "x/y").name == "x%2Fy.jpg"
    assert layout.header_thumbnail(tmp_path, "style", "x_y").name == "x_y.jpg"  # not x/y
    assert layout.checkpoints_folder(tmp_path) == tmp_path / ".nst-batch" / "checkpoints"
    assert layout.flow_path(tmp_path, "n.npz") == tmp_path / ".nst-batch" / "flow" / "n.npz"


def test_snapshots_are_found_by_output_in_one_pass(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.png"
    for name in ("a.step0010.jpg", "a.step0002.jpg", "b.step0005.png", "a.step0003.png", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a.step0020.jpg").symlink_to(tmp_path / "c.jpg")  # a link is never taken
    index = layout.snapshot_index([a, b])
    assert index[a] == [(2, tmp_path / "a.step0002.jpg"), (10, tmp_path / "a.step0010.jpg")]
    assert index[b] == [(5, tmp_path / "b.step0005.png")]
    assert layout.snapshots(tmp_path / "c.jpg") == []


def test_checkpoints_by_output_and_the_orphans(tmp_path: Path) -> None:
    mine = layout.checkpoint_path(tmp_path, "a.jpg", "ab1")
    older = layout.checkpoint_path(tmp_path, "a.jpg", "ab0")
    gone = layout.checkpoint_path(tmp_path, "gone.jpg", "ab1")
    for path in (mine, older, gone):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (mine.parent / "notes.txt").write_text("not ours")
    assert sorted(layout.output_checkpoints(tmp_path, "a.jpg")) == sorted([mine, older])
    assert layout.orphan_checkpoints(tmp_path, ["a.jpg"]) == [gone]


def test_gallery_pages_lists_only_ours(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("page-002.html", "page-001.html", "compare-001.html", "mine.html"):
        (pages / name).write_text("x")
    assert [p.name for p in layout.gallery_pages(tmp_path)] == [
        "compare-001.html",
        "page-001.html",
        "page-002.html",
    ]
    assert layout.gallery_pages(tmp_path / "nowhere") == []


def test_writes_never_pass_a_link_or_leave_the_folder(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "sub").symlink_to(elsewhere)
    with pytest.raises(UnsafeWrite, match="is a symbolic link"):
        layout.check_writable(root, [root / "sub" / "x.jpg"])
    with pytest.raises(UnsafeWrite, match="is not inside the output folder"):
        layout.check_writable(root, [tmp_path / "x.jpg"])
    with pytest.raises(UnsafeWrite, match="is not inside the output folder"):
        layout.open_in_folder(root / ".." / "x.csv", root, os.O_WRONLY | os.O_CREAT)
    (root / "planted.csv").symlink_to(elsewhere / "target.csv")
    with pytest.raises(UnsafeWrite, match="is a symbolic link"):
        layout.open_in_folder(root / "planted.csv", root, os.O_WRONLY | os.O_CREAT)
    assert not (elsewhere / "target.csv").exists()
    fd = layout.open_in_folder(root / "new" / "r.csv", root, os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert (root / "new" / "r.csv").is_file()  # missing folders are made on the way
    layout.check_writable(root, [root / "new" / "r.csv", root / "missing" / "x.jpg"])


def test_removing_never_follows_a_link(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.jpg").write_text("x")
    (root / "sub").symlink_to(elsewhere)
    assert layout.remove_file(root / "sub" / "keep.jpg", root) is False
    assert (elsewhere / "keep.jpg").exists()
    (root / "link.jpg").symlink_to(elsewhere / "keep.jpg")
    assert layout.remove_file(root / "link.jpg", root) is True  # the link goes, not its target
    assert (elsewhere / "keep.jpg").exists() and not (root / "link.jpg").is_symlink()
    assert layout.remove_file(root / "never.jpg", root) is False


def test_empty_state_and_folders_go_and_full_ones_stay(tmp_path: Path) -> None:
    checkpoints = layout.checkpoints_folder(tmp_path)
    checkpoints.mkdir(parents=True)
    (tmp_path / ".nst-batch" / "files.json").write_text("{}")
    layout.remove_empty_state(tmp_path)
    assert not checkpoints.exists() and (tmp_path / ".nst-batch").is_dir()  # files.json stays
    (tmp_path / ".nst-batch" / "files.json").unlink()
    layout.remove_empty_state(tmp_path)
    assert not (tmp_path / ".nst-batch").exists()
    (tmp_path / "pages").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    layout.remove_empty_folder(tmp_path / "pages", tmp_path)
    layout.remove_empty_folder(tmp_path / "full", tmp_path)
    assert not (tmp_path / "pages").exists() and (tmp_path / "full" / "x").exists()


def test_running_since_is_the_holders_start(tmp_path: Path) -> None:
    assert layout.running_since(tmp_path) is None
    with layout.hold(tmp_path, None):
        since = layout.running_since(tmp_path)
        assert since == (tmp_path / ".nst-batch.lock").stat().st_mtime
    assert layout.running_since(tmp_path) is None  # the lock file stays, not held


def test_a_case_folding_file_system_is_told_apart(tmp_path: Path) -> None:
    folder = tmp_path / "Out"
    folder.mkdir()
    # tmp is on a case-sensitive file system here (Linux); a name not there yet is judged by
    # its nearest existing parent.
    assert layout.is_case_insensitive(folder) is False
    assert layout.is_case_insensitive(folder / "not" / "yet") is False
