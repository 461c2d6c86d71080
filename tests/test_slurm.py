"""jobs/gallery.sbatch on a real single-node Slurm, started by scripts/slurm_up.sh for this module.

The cluster (munged, slurmctld, slurmd, all files under one tmp folder) comes up once per module
and scripts/slurm_down.sh stops exactly the daemons it started at the end. Where Slurm cannot be
installed or started (not root, no apt-get: slurm_up.sh exits 3) the tests fail: they were
asked for, and a CI must not pass with them unrun.

Installing and starting daemons is not something a test run should do unasked on someone's own
machine, so the module runs only with NST_BATCH_TEST_SLURM=1 in the environment (.ci/run sets
it); otherwise every test here is skipped before anything is installed or started.

The sbatch script asks for a GPU and 4 CPUs; this node has neither, so every submission
overrides them on the command line (`--gres=none --cpus-per-task=1`), which is how the
script's header tells CPU-only users to run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from nst_batch.results import ResultRow, read_rows

REPO = Path(__file__).resolve().parent.parent
UP = REPO / "scripts" / "slurm_up.sh"
DOWN = REPO / "scripts" / "slurm_down.sh"
SBATCH = REPO / "jobs" / "gallery.sbatch"
NST_BATCH = Path(sys.executable).parent / "nst-batch"
CPU_ONLY = ("--gres=none", "--cpus-per-task=1")  # override the script's GPU and CPU request
POLL_S = 0.5
JOB_TIMEOUT_S = 900  # a failure guard only: a loaded 2-core machine runs these jobs slowly
UNAVAILABLE = 3  # slurm_up.sh: prerequisites missing and not installable

OPT_IN = "NST_BATCH_TEST_SLURM"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"set {OPT_IN}=1 to install and start a local Slurm for these tests",
    ),
]


@dataclass
class Slurm:
    dir: Path
    env: dict[str, str]  # os.environ plus SLURM_CONF

    def cmd(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env=self.env, cwd=cwd, capture_output=True, text=True, timeout=60
        )

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "jobcomp.txt"):
            path = self.dir / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {path} (last 40 lines)\n" + "\n".join(tail))
        return "\n".join(parts)


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (stopped daemons can stay zombies here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    base = tmp_path_factory.mktemp("slurm")
    try:
        up = subprocess.run([str(UP), str(base)], capture_output=True, text=True, timeout=600)
        if up.returncode == UNAVAILABLE:  # asked for with NST_BATCH_TEST_SLURM=1: a failure
            pytest.fail(f"no Slurm here: {up.stderr.strip().splitlines()[-1]}")
        assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stderr}"
        exports = re.findall(r"^export SLURM_CONF=(\S+)$", up.stdout, re.MULTILINE)
        assert exports == [str(base / "etc" / "slurm.conf")], up.stdout
        pids = {p.stem: int(p.read_text()) for p in (base / "run").glob("*.pid")}
        assert {"slurmctld", "slurmd"} <= set(pids), pids
        yield Slurm(base, {**os.environ, "SLURM_CONF": exports[0]})
    finally:
        pids = {p.stem: int(p.read_text()) for p in (base / "run").glob("*.pid")}
        down = subprocess.run([str(DOWN), str(base)], capture_output=True, text=True, timeout=120)
        print(down.stderr, file=sys.stderr)
    assert down.returncode == 0, down.stderr
    survivors = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert not survivors, f"slurm_down.sh left these running: {survivors}"


def _submit(slurm: Slurm, workdir: Path, manifest: Path, array: str, *args: str) -> str:
    """sbatch the gallery script from workdir (its SLURM_SUBMIT_DIR), `args` going on to
    nst-batch; return the job ID."""
    (workdir / "logs").mkdir(exist_ok=True)
    export = f"--export=ALL,MANIFEST={manifest},NST_BATCH={NST_BATCH}"
    result = slurm.cmd(
        "sbatch",
        "--parsable",
        f"--array={array}",
        *CPU_ONLY,
        export,
        str(SBATCH),
        *args,
        cwd=workdir,
    )
    assert result.returncode == 0, f"sbatch failed: {result.stderr}\n{slurm.logs()}"
    return result.stdout.strip().split(";")[0]


def _job_logs(workdir: Path, job: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((workdir / "logs").glob(f"*-{job}_*.out"))}


def _wait(slurm: Slurm, workdir: Path, job: str) -> None:
    """Poll squeue until the job is gone; then every array task must have completed with 0."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        queue = slurm.cmd("squeue", "-h", "-j", job)
        if queue.returncode == 0 and not queue.stdout.strip():
            break
        if queue.returncode != 0 and "Invalid job id" in queue.stderr:
            break  # already purged
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {k}\n{v}" for k, v in _job_logs(workdir, job).items())
            pytest.fail(
                f"job {job} still queued after {JOB_TIMEOUT_S}s:\n{queue.stdout}{queue.stderr}\n"
                f"{slurm.logs()}\n{logs}"
            )
        time.sleep(POLL_S)
    shown = slurm.cmd("scontrol", "-o", "show", "job", job)
    states = re.findall(r"JobState=(\S+) .*?ExitCode=(\S+)", shown.stdout)
    logs = "\n".join(f"--- {k}\n{v}" for k, v in _job_logs(workdir, job).items())
    assert states, f"scontrol knows no job {job}: {shown.stderr}\n{slurm.logs()}"
    assert all(s == ("COMPLETED", "0:0") for s in states), f"{states}\n{logs}"


def _shards(output: Path) -> dict[str, list[ResultRow]]:
    return {p.name: read_rows(p) for p in sorted(output.glob("results-shard-*.csv"))}


def _check_shards(output: Path) -> None:
    """Two shard files of done rows whose tasks are disjoint and cover the whole 2x2 gallery."""
    shards = _shards(output)
    assert sorted(shards) == ["results-shard-1-of-2.csv", "results-shard-2-of-2.csv"]
    tasks = []
    for name, rows in shards.items():
        assert rows and all(r.status == "done" for r in rows), (name, rows)
        k = name.removeprefix("results-shard-").removesuffix(".csv").replace("-of-", "/")
        assert {r.shard for r in rows} == {k}
        tasks.append({(r.content, r.style) for r in rows})
    first, second = tasks
    assert not first & second
    styles = ("starry_night", "the_scream")
    assert first | second == {(c, s) for c in ("chelsea", "coffee") for s in styles}
    outputs = {r.output for rows in shards.values() for r in rows}
    assert len(outputs) == 4
    for name in outputs:
        with Image.open(output / name) as image:
            image.verify()
        with Image.open(output / name) as image:
            assert max(image.size) == 64


def test_job_array_renders_the_gallery_in_shards(
    slurm: Slurm, tmp_path: Path, write_manifest: Callable[..., Path]
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 6})
    output = tmp_path / "out"

    job = _submit(slurm, tmp_path, manifest, "0-1")
    _wait(slurm, tmp_path, job)
    logs = _job_logs(tmp_path, job)
    assert sorted(logs) == [f"nst-gallery-{job}_0.out", f"nst-gallery-{job}_1.out"]
    for text in logs.values():
        assert f"{NST_BATCH} {manifest}" in text  # the script's header line
    _check_shards(output)

    report = subprocess.run(
        [str(NST_BATCH), "report", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    summary = report.stdout.splitlines()[0]
    assert summary.startswith("4 tasks planned: 4 done,"), report.stdout
    assert "0 failed" in summary and "0 not yet run" in summary, summary
    merged = read_rows(output / "results.csv")
    assert len(merged) == 4 and all(r.status == "done" for r in merged)

    # The same array again: every task up to date, nothing redone, and since the results
    # record every task done, no row appended.
    before = {name: rows for name, rows in _shards(output).items()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in output.glob("*__*.jpg")}
    assert len(mtimes) == 4
    again = _submit(slurm, tmp_path, manifest, "0-1")
    _wait(slurm, tmp_path, again)
    assert _shards(output) == before
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("*__*.jpg")} == mtimes


@pytest.mark.parametrize(
    "array",
    [
        "3-7:4",  # a stride: SLURM_ARRAY_TASK_STEP=4
        "3,7",  # a list: Slurm 22.05 sets STEP=1 (MIN=3, MAX=7, COUNT=2)
    ],
)
def test_non_contiguous_array_shares_by_position(
    slurm: Slurm, tmp_path: Path, write_manifest: Callable[..., Path], array: str
) -> None:
    manifest = write_manifest(params={"size": 64, "steps": 6})
    job = _submit(slurm, tmp_path, manifest, array)
    _wait(slurm, tmp_path, job)
    logs = _job_logs(tmp_path, job)
    assert sorted(logs) == [f"nst-gallery-{job}_3.out", f"nst-gallery-{job}_7.out"]
    _check_shards(tmp_path / "out")


def test_a_requeued_array_task_resumes_its_tasks(
    slurm: Slurm, tmp_path: Path, write_manifest: Callable[..., Path]
) -> None:
    # Long enough that a requeue falls in the middle of shard 1's first task.
    manifest = write_manifest(params={"size": 64, "steps": 120}, batch_size=1)
    output = tmp_path / "out"
    job = _submit(slurm, tmp_path, manifest, "0-1", "-v", "--print-every", "10")
    log = tmp_path / "logs" / f"nst-gallery-{job}_0.out"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (log.exists() and re.search(r" step ([3-9]0|1[0-9]0)/", log.read_text())):
        assert time.monotonic() < deadline, f"no progress in {log}\n{slurm.logs()}"
        time.sleep(POLL_S)
    requeue = slurm.cmd("scontrol", "requeue", f"{job}_0")
    assert requeue.returncode == 0, requeue.stderr
    _wait(slurm, tmp_path, job)
    text = log.read_text()
    assert "interrupted by SIGTERM" in text and "restart 1" in text, text
    rows = _shards(output)["results-shard-1-of-2.csv"]
    assert [r.status for r in rows].count("interrupted") >= 1, rows
    done = [r for r in rows if r.status == "done"]
    assert len(done) == 2, rows
    assert any(r.resumed_from is not None and r.resumed_from >= 30 for r in done), rows
    assert not list((output / ".nst-batch" / "checkpoints").glob("*.pt"))
    _check_shards_done(output)


def _check_shards_done(output: Path) -> None:
    """Every task of the 2x2 gallery has a done row in some shard, and a valid output."""
    latest = {}
    for rows in _shards(output).values():
        for row in rows:
            latest[(row.content, row.style)] = row
    assert len(latest) == 4 and all(r.status == "done" for r in latest.values()), latest
    for row in latest.values():
        with Image.open(output / row.output) as image:
            image.verify()
