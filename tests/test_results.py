import csv
import os
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from nst_batch.results import (
    COLUMNS,
    ResultRow,
    ResultsError,
    ResultsWriter,
    merge,
    new_run_id,
    read_rows,
    task_row,
    unrecorded,
    write_table,
)
from nst_batch.task import TaskId

T1 = "2024-05-01T10:00:00.000000Z"
T2 = "2024-05-01T11:00:00.000000Z"
T3 = "2024-05-01T12:00:00.000000Z"


def row(content: str = "cat", style: str = "wave", **kw: object) -> ResultRow:
    base: dict[str, object] = {
        "variant": "",
        "output": f"{style}/{content}.png",
        "status": "done",
        "finished_at": T1,
    }
    return ResultRow(content, style, **(base | kw))  # type: ignore[arg-type]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def test_columns_follow_the_dataclass() -> None:
    assert COLUMNS == (
        "content", "style", "variant", "output", "status", "content_loss", "style_loss",
        "tv_loss", "temporal_loss", "total_loss", "steps", "stopped", "start", "resumed_from",
        "seconds",
        "device", "precision", "worker", "key", "error", "finished_at", "run", "shard",
    )  # fmt: skip


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    full = row(
        variant="sw=1e5",
        content_loss=0.1 + 0.2,
        style_loss=1e-300,
        tv_loss=123456.78901234567,
        total_loss=-0.0,
        steps=300,
        seconds=12.000000000000002,
        device="cuda:1",
        worker="cuda:1#0",
        key="ab12" * 8,
        shard="2/4",
    )
    bare = row(
        "dog", status="failed", error='CUDA "out of memory",\ntried 2.5 GiB\r\nbye', shard=""
    )
    with ResultsWriter(path) as w:
        w.write(full)
        w.write(bare)
    got = read_rows(path)
    assert got == [
        full,
        row("dog", status="failed", error='CUDA "out of memory", tried 2.5 GiB bye'),
    ]
    assert got[0].content_loss == 0.30000000000000004
    assert str(got[0].total_loss) == "-0.0"
    assert got[1].content_loss is None and got[1].steps is None and got[1].seconds is None
    assert len(lines(path)) == 4  # header, two rows, '' after the final newline


def test_writer_fills_finished_at_only_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    before = datetime.now().astimezone()
    with ResultsWriter(path) as w:
        w.write(row(finished_at=""))
        w.write(row("dog"))
    stamped, kept = read_rows(path)
    assert stamped.finished_at.endswith("Z") and len(stamped.finished_at) == len(T1)
    assert before <= datetime.fromisoformat(stamped.finished_at) <= datetime.now().astimezone()
    assert kept.finished_at == T1


def test_header_written_once_across_writers(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.touch()  # an existing empty file also gets the header
    with ResultsWriter(path) as w:
        w.write(row("a"))
    with ResultsWriter(path) as w:
        w.write(row("b"))
    w.close()  # idempotent
    text = lines(path)
    assert text[0] == ",".join(COLUMNS)
    assert text.count(text[0]) == 1
    assert [r.content for r in read_rows(path)] == ["a", "b"]
    with pytest.raises(ValueError, match="closed"):
        w.write(row("c"))


@pytest.mark.parametrize(
    "torn",
    [
        "dog,wave,,wave/dog.png,do",  # cut mid-row
        "dog,wave,,wave/dog.png,done,1.5e",  # cut inside a number
        'dog,wave,,wave/dog.png,failed,,,,,,,cpu,cpu#0,k,"oom, retry',  # inside a quoted field
        f"dog,wave,,wave/dog.png,done,,,,,,,cpu,cpu#0,k,,{T1},1/",  # inside the last cell
        "\x00\x00\x00\x00",  # a crash that left zeros
    ],
)
def test_torn_last_line_is_skipped_and_next_row_lands_on_its_own_line(
    tmp_path: Path, torn: str
) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.write(row("cat"))
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(torn)
    assert read_rows(path) == [row("cat")]
    with ResultsWriter(path) as w:
        w.write(row("eel"))
    assert lines(path)[2] == torn
    assert read_rows(path) == [row("cat"), row("eel")]


def test_complete_row_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.write(row("cat"))
    path.write_bytes(path.read_bytes().removesuffix(b"\n"))
    assert read_rows(path) == [row("cat")]
    with ResultsWriter(path) as w:
        w.write(row("eel"))
    assert read_rows(path) == [row("cat"), row("eel")]


def test_torn_header_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("content,sty")
    assert read_rows(path) == []
    with ResultsWriter(path) as w:
        w.write(row())
    assert lines(path)[0] == ",".join(COLUMNS)
    assert read_rows(path) == [row()]


def test_blank_lines_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    assert read_rows(path) == []
    write_table([row("a"), row("b")], path)
    text = lines(path)
    path.write_text("\n".join([text[0], "", text[1], "   ", text[2], "", ""]))
    assert read_rows(path) == [row("a"), row("b")]


def test_other_versions_header(tmp_path: Path) -> None:
    # A newer file with an extra column in the middle; an older one without key and shard.
    newer = tmp_path / "newer.csv"
    older = tmp_path / "older.csv"
    newer_cols = [*COLUMNS[:5], "gpu_mem", *COLUMNS[5:]]
    older_cols = [c for c in COLUMNS if c not in ("key", "run", "shard")]
    with newer.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [newer_cols, ["cat", "wave", "", "wave/cat.png", "done", "3.2 GiB", "0.5"]
             + [""] * 14 + [T1, "", "1/2"]]
        )  # fmt: skip
    with older.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [older_cols, ["dog", "wave", "", "wave/dog.png", "failed"] + [""] * 13 + ["boom", T2]]
        )
    assert read_rows(newer) == [row(content_loss=0.5, shard="1/2")]
    assert read_rows(older) == [row("dog", status="failed", error="boom", finished_at=T2)]

    # Appending to a newer file keeps its header, so the file stays readable; an older file
    # is first rewritten in today's columns, its rows kept, so new rows lose no column.
    with ResultsWriter(newer) as w:
        w.write(row("eel", key="k", shard="1/2"))
    assert lines(newer)[0] == ",".join(newer_cols)
    assert read_rows(newer)[1] == row("eel", key="k", shard="1/2", finished_at=T1)
    with ResultsWriter(older, run="r1") as w:
        w.write(row("eel", key="k", shard="1/2"))
    assert lines(older)[0] == ",".join(COLUMNS)
    assert read_rows(older) == [
        row("dog", status="failed", error="boom", finished_at=T2),
        row("eel", key="k", shard="1/2", run="r1"),
    ]


def test_the_writer_stamps_its_run_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    run = new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run) and run != new_run_id()
    with ResultsWriter(path, run=run) as w:
        w.write_all([row("a"), row("b", run="earlier")])
    assert [r.run for r in read_rows(path)] == [run, "earlier"]


def test_writer_refuses_a_file_that_is_not_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="not a results file"):
        ResultsWriter(path)
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_rows_must_be_one_line_and_valid() -> None:
    with pytest.raises(ValueError, match="status"):
        row(status="ok")
    with pytest.raises(ValueError, match="shard"):
        row(shard="1of4")


def test_line_break_outside_error_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w, pytest.raises(ValueError, match="line break"):
        w.write(row("bad\nname"))
    assert read_rows(path) == []


def test_merge_shards(tmp_path: Path) -> None:
    a, b = tmp_path / "results.1.csv", tmp_path / "results.2.csv"
    done_cat = row("cat", key="k1", content_loss=1.5, style_loss=2.5, total_loss=4.0, shard="1/2")
    with ResultsWriter(a) as w:
        w.write(done_cat)
        w.write(row("dog", key="k2", content_loss=9.0))
        w.write(row("eel", status="failed", error="oom"))
        w.write(row("fox", "ink", content_loss=1.0, finished_at=T3))
        w.write(row("gnu", key="k5", content_loss=5.0))
        w.write(row("hen", content_loss=1.0, finished_at=T2))
        w.write(row("hen", content_loss=2.0, finished_at=T2))
        w.write(row("ibis", content_loss=1.0, finished_at=T2))
    with ResultsWriter(b) as w:
        w.write(row("cat", status="skipped", key="k1", finished_at=T3, shard="2/2"))
        w.write(row("dog", status="failed", key="k2", error="nan loss", finished_at=T3))
        w.write(row("eel", content_loss=7.0, finished_at=T2))
        w.write(row("fox", "ink", content_loss=2.0, finished_at=T2))
        w.write(row("gnu", status="skipped", key="k6", finished_at=T2))
        w.write(row("hen", content_loss=3.0, finished_at="2024-05-01T12:30:00+02:00"))
        w.write(row("ibis", content_loss=2.0, finished_at=T2))
        w.write(row("jay", variant="b", status="interrupted"))
        w.write(row("jay", variant="a"))
    assert merge([a, b]) == [
        row("fox", "ink", content_loss=1.0, finished_at=T3),  # later timestamp, earlier file
        done_cat,  # skipped after done with the same key keeps done's losses
        row("dog", status="failed", key="k2", error="nan loss", finished_at=T3),
        row("eel", content_loss=7.0, finished_at=T2),
        row("gnu", status="skipped", key="k6", finished_at=T2),  # another key: done is stale
        row("hen", content_loss=2.0, finished_at=T2),  # 10:30Z < 11:00Z; then the later line
        row("ibis", content_loss=2.0, finished_at=T2),  # same time: the later file
        row("jay", variant="a"),
        row("jay", variant="b", status="interrupted"),
    ]
    assert {r.content: r for r in merge([b, a])}["ibis"].content_loss == 1.0


def test_skipped_keeps_done_only_for_same_output(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    skipped = row(status="skipped", key="k", output="elsewhere.png", finished_at=T2)
    with ResultsWriter(path) as w:
        w.write(row(key="k", content_loss=1.0))
        w.write(skipped)
    assert merge([path]) == [skipped]


def _task(content: str, key: str) -> SimpleNamespace:
    """What `task_row` and `unrecorded` read of a plan.Task."""
    name = SimpleNamespace
    return name(
        content=name(name=content),
        style=name(name="wave"),
        variant=name(name=""),
        id=TaskId(content, "wave", ""),
        relative_output=f"wave/{content}.png",
        key=key,
        params=name(precision="bf16"),
    )


def test_task_row_names_the_task() -> None:
    made = task_row(_task("cat", "k1"), "skipped", "1/2")  # type: ignore[arg-type]
    assert made == ResultRow(
        "cat", "wave", "", "wave/cat.png", "skipped", precision="bf16", key="k1", shard="1/2"
    )


def test_only_unrecorded_up_to_date_tasks_get_a_skipped_row(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.write(row("done", key="k"))  # its done row holds: nothing to add
        w.write(row("skip", status="skipped", key="k"))  # a skip already says it
        w.write(row("old", key="old-key"))  # made with other settings, then made elsewhere
        w.write(row("fail", key="k", finished_at=T1))
        w.write(row("fail", status="failed", key="k", finished_at=T2))  # the latest: failed
        w.write(row("moved", key="k", output="elsewhere.png"))  # another output file
    tasks = [_task(name, "k") for name in ("done", "skip", "old", "fail", "moved", "new")]
    missing = unrecorded(tasks, merge([path]))  # type: ignore[arg-type]
    assert [t.content.name for t in missing] == ["old", "fail", "moved", "new"]


def test_write_all_appends_rows_with_one_stamp(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.write_all([])  # nothing: not even a sync
        w.write_all([row("a", finished_at=""), row("b", finished_at="")])
    a, b = read_rows(path)
    assert (a.content, b.content) == ("a", "b")
    assert a.finished_at == b.finished_at != ""
    assert lines(path)[-1] == ""  # each row a whole line


def test_write_table_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    rows = [row("a", content_loss=0.1), row("b", status="failed", error="x\ny")]
    write_table(rows, path)
    assert os.listdir(tmp_path) == ["table.csv"]
    assert lines(path)[0] == ",".join(COLUMNS)
    assert read_rows(path) == [rows[0], row("b", status="failed", error="x y")]

    def broken():
        yield row("c")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_table(broken(), path)
    assert os.listdir(tmp_path) == ["table.csv"]
    assert read_rows(path) == [rows[0], row("b", status="failed", error="x y")]


@pytest.mark.parametrize(
    "corrupt",
    [
        "dog,wave,,wave/dog.png,donee",  # a status that is none of ours, cells missing
        ",".join(["dog", "wave", "", "wave/dog.png", "done", "x"] + [""] * (len(COLUMNS) - 6)),
        ",".join(["dog", "wave", "", "wave/dog.png", "done"] + [""] * len(COLUMNS)),  # too many
        "dog,wave,\xff\xfe",  # not UTF-8 once encoded below
    ],
    ids=["status", "a-letter-for-a-loss", "too-many-cells", "not-utf8"],
)
def test_a_corrupt_row_in_the_middle_is_skipped_and_the_rows_after_it_kept(
    tmp_path: Path, corrupt: str
) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.write(row("cat"))
    with path.open("ab") as f:
        f.write(corrupt.encode("latin-1") + b"\n")
    with ResultsWriter(path) as w:
        w.write(row("eel"))
    assert read_rows(path) == [row("cat"), row("eel")]
    assert path.read_bytes().split(b"\n")[2] == corrupt.encode("latin-1")  # left as it was
