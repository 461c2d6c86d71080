"""Tests of nst_batch.filecache: each input hashed once per plan, and not at all while the
output folder's cache knows it; output keys read once; what a dry run and a run write."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from nst_batch import filecache, layout
from nst_batch.cli import main
from nst_batch.filecache import FileCache
from nst_batch.images import save_image
from nst_batch.manifest import load_manifest
from nst_batch.metadata import KEY_METADATA
from nst_batch.plan import Task, plan, recipe_key, up_to_date


def _gallery(folder: Path, contents: int, styles: int) -> Path:
    """A manifest of `contents` x `styles` tiny distinct PNGs in folders, output 'out'."""
    for kind, count in (("content", contents), ("style", styles)):
        (folder / kind).mkdir(parents=True)
        for i in range(count):
            colour = (i * 11 % 256, len(kind) * 20, 7)
            Image.new("RGB", (40, 32), colour).save(folder / kind / f"{kind}{i:02d}.png")
    path = folder / "gallery.yaml"
    doc = {"output": "out", "content": "content/", "style": "style/", "params": {"size": 32}}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """How many times each file's bytes were hashed."""
    calls: Counter[Path] = Counter()
    real = filecache.sha256_of

    def counted(path: Path) -> tuple[str, filecache.Stamp | None]:
        calls[path] += 1
        return real(path)

    monkeypatch.setattr(filecache, "sha256_of", counted)
    return calls


def _made_outputs(tasks: list[Task]) -> None:
    """Write each task's output as a run would record it: an image holding its key."""
    for task in tasks:
        save_image(
            Image.new("RGB", (8, 6)), task.output, {KEY_METADATA: task.key}, root=task.folder
        )


def test_each_input_is_hashed_once_per_plan(tmp_path: Path, hashed: Counter[Path]) -> None:
    manifest = load_manifest(_gallery(tmp_path, contents=20, styles=5))
    tasks = plan(manifest)
    assert len(tasks) == 100
    inputs = {spec.path for spec in (*manifest.contents, *manifest.styles)}
    assert len(inputs) == 25
    assert hashed == Counter(inputs)  # every input, each once
    assert all(task.key == recipe_key(task.recipe) for task in tasks)


def test_a_stored_cache_hashes_only_what_changed(tmp_path: Path, hashed: Counter[Path]) -> None:
    manifest = load_manifest(_gallery(tmp_path, contents=4, styles=2))
    first = FileCache()
    keys = [task.key for task in plan(manifest, first)]
    assert filecache.save(first, manifest.output, None)
    hashed.clear()

    assert [task.key for task in plan(manifest, filecache.load(manifest.output, None))] == keys
    assert hashed == Counter()  # nothing read: every stamp matched

    changed = manifest.contents[1].path
    Image.new("RGB", (40, 32), (1, 2, 3)).save(changed)
    again = filecache.load(manifest.output, None)
    tasks = plan(manifest, again)
    assert hashed == Counter([changed])
    assert [t.key != k for t, k in zip(tasks, keys, strict=True)] == [
        t.content.path == changed for t in tasks
    ]
    assert again.changed()  # the new hash is worth keeping


def test_output_keys_are_read_once_then_kept_by_stamp(tmp_path: Path) -> None:
    manifest = load_manifest(_gallery(tmp_path, contents=3, styles=1))
    tasks = plan(manifest)
    _made_outputs(tasks)
    reads: list[Path] = []

    def read_key(path: Path) -> str | None:
        reads.append(path)
        return filecache._recorded_key(path)

    files = FileCache(read_key=read_key)
    assert all(up_to_date(task, files) for task in tasks)
    assert len(reads) == 3
    filecache.save(files, manifest.output, None)

    stored = filecache.load(manifest.output, None)
    stored._read_key = read_key
    reads.clear()
    assert all(up_to_date(task, stored) for task in tasks)
    assert reads == []  # a rerun opens no output
    assert not stored.changed()

    _made_outputs(tasks[:1])  # rewritten (atomically: another file, another stamp)
    stored = filecache.load(manifest.output, None)
    stored._read_key = read_key
    assert all(up_to_date(task, stored) for task in tasks)
    assert reads == [tasks[0].output]


def test_a_cache_that_is_not_ours_is_ignored(tmp_path: Path) -> None:
    manifest = load_manifest(_gallery(tmp_path, contents=2, styles=1))
    keys = [task.key for task in plan(manifest)]
    store = layout.file_cache(manifest.output, None)
    store.parent.mkdir(parents=True)
    content = str(manifest.contents[0].path)
    lies = [
        b"{torn",
        json.dumps({"version": 99, "inputs": {}}).encode(),
        json.dumps({"version": 1, "inputs": {content: "not an entry"}}).encode(),
        json.dumps({"version": 1, "inputs": {content: [1, 2, 3, 4, 5]}}).encode(),
    ]
    for text in lies:
        store.write_bytes(text)
        assert [task.key for task in plan(manifest, filecache.load(manifest.output, None))] == keys


def test_a_file_that_changes_while_hashed_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    stamps = iter([(3, 1, 1, 1), (3, 2, 2, 1)])  # before and after reading: rewritten
    monkeypatch.setattr(filecache, "stamp", lambda status: next(stamps))
    digest, steady = filecache.sha256_of(path)
    assert steady is None
    assert len(digest) == 64


def _run(manifest: Path, *args: str) -> None:
    result = CliRunner().invoke(main, [str(manifest), *args])
    assert result.exit_code == 0, result.output


def test_a_dry_run_reads_the_cache_and_writes_nothing(tmp_path: Path) -> None:
    path = _gallery(tmp_path, contents=2, styles=1)
    manifest = load_manifest(path)
    _made_outputs(plan(manifest))
    before = {p: p.stat().st_mtime_ns for p in manifest.output.rglob("*")}
    _run(path, "--dry-run")
    _run(path, "--dry-run", "-v", "--shard", "1/2")
    assert {p: p.stat().st_mtime_ns for p in manifest.output.rglob("*")} == before
    assert not layout.file_caches(manifest.output)


def test_an_up_to_date_run_writes_the_cache_once(tmp_path: Path) -> None:
    path = _gallery(tmp_path, contents=2, styles=1)
    manifest = load_manifest(path)
    _made_outputs(plan(manifest))  # made elsewhere: up to date, but never read
    _run(path, "-q")
    store = layout.file_cache(manifest.output, None)
    written = store.stat()
    stored = json.loads(store.read_text())
    assert sorted(stored["outputs"]) == ["content00__style00.jpg", "content01__style00.jpg"]
    assert sorted(stored["inputs"]) == sorted(
        str(spec.path) for spec in (*manifest.contents, *manifest.styles)
    )
    _run(path, "-q")
    _run(path, "-q", "--shard", "2/2")  # a shard writes its own file, if anything
    assert (store.stat().st_mtime_ns, store.stat().st_ino) == (written.st_mtime_ns, written.st_ino)
    assert layout.file_caches(manifest.output) == [store]


def test_a_planted_link_at_the_cache_is_refused(tmp_path: Path) -> None:
    path = _gallery(tmp_path, contents=1, styles=1)
    victim = tmp_path / "victim.json"
    victim.write_text("precious\n")
    (tmp_path / "out" / layout.STATE).mkdir(parents=True)
    os.symlink(victim, layout.file_cache(tmp_path / "out", None))
    result = CliRunner().invoke(main, [str(path)])
    assert result.exit_code == 2, result.output
    assert "files.json is a symbolic link" in result.output
    assert victim.read_text() == "precious\n"


NESTED = "[" * 100_000 + "]" * 100_000  # deeper than json can parse: a RecursionError


def test_a_deeply_nested_cache_is_ignored_then_rewritten(tmp_path: Path) -> None:
    path = _gallery(tmp_path, contents=2, styles=1)
    manifest = load_manifest(path)
    _made_outputs(plan(manifest))  # up to date: no run stylizes
    store = layout.file_cache(manifest.output, None)
    store.parent.mkdir(parents=True)
    store.write_text(NESTED)
    runner = CliRunner()
    for args in ([str(path), "--dry-run"], [str(path), "--dry-run", "-v"], ["report", str(path)]):
        result = runner.invoke(main, args)
        assert "Traceback" not in result.output, args
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert result.exit_code == 0, (args, result.output)
    assert "0 to run, 2 up to date, 2 in all" in runner.invoke(main, [str(path), "-n"]).output
    assert store.read_text() == NESTED  # a dry run and report only read it

    _run(path, "-q")  # not used, so rewritten with what this run learned
    stored = json.loads(store.read_text())
    assert sorted(stored["outputs"]) == ["content00__style00.jpg", "content01__style00.jpg"]
    assert len(stored["inputs"]) == 3
