"""The GPU benchmark scripts, run for real on the CPU at tiny sizes: each must work unattended
when scripts/bench_gpu.sh runs it on a GPU node, and print tables a reader can use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
NUMBER = r"(-?[\d.]+(?:e[+-]?\d+)?)"


def run_script(name: str, *args: str) -> str:
    """A script's stdout; it must exit 0."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # One thread: on a shared 2-core machine a second one waits more than it works.
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rows(pattern: str, output: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in re.finditer(pattern, output, re.MULTILINE)]


@pytest.fixture(scope="module")
def batches_and_largest() -> str:
    return run_script(
        "bench_step.py",
        *("--sizes", "32", "--precisions", "fp32", "--steps", "3", "--repeats", "1"),
        *("--batches", "1", "2", "--largest", "--largest-sizes", "32", "48"),
        *("--largest-steps", "2"),
    )


@pytest.mark.slow
def test_batches_prints_a_row_of_numbers_per_batch_size(batches_and_largest: str) -> None:
    found = rows(r"^\s+32\s+fp32\s+(\d+)" + rf"\s+{NUMBER}" * 5 + r"\s+-$", batches_and_largest)
    assert [row[0] for row in found] == ["1", "2"]
    for batch, per_batch, per_image, with_setup, per_second, pairs in found:
        assert float(per_image) > 0 and float(with_setup) > 0
        assert float(per_batch) == pytest.approx(int(batch) * float(per_image), rel=1e-3, abs=0.01)
        assert float(per_second) == pytest.approx(1000 / float(per_image), rel=0.01, abs=0.1)
        assert float(pairs) > 0
    assert "ms/img-step" in batches_and_largest
    # --batches replaces the step table.
    assert "TFLOP/s" not in batches_and_largest


@pytest.mark.slow
def test_largest_names_the_largest_size_that_ran(batches_and_largest: str) -> None:
    assert rows(r"^\s+(\d+)\s+fp32\s+-\s+ran$", batches_and_largest) == [("32",), ("48",)]
    assert "largest fp32: 48 px (every size tried ran)" in batches_and_largest


@pytest.mark.slow
def test_the_step_table_and_a_gallery_compared_with_fp32() -> None:
    output = run_script(
        "bench_step.py",
        *("--sizes", "32", "--precisions", "fp32", "--steps", "3", "--repeats", "1"),
        *("--gallery", "2", "--gallery-size", "48", "--gallery-steps", "3"),
        *("--gallery-precision", "bf16", "--gallery-compare-fp32"),
    )
    (row,) = rows(r"^\s+32x32\s+fp32" + rf"\s+{NUMBER}" * 4, output)
    assert all(float(value) > 0 for value in row)
    assert re.search(
        r"^gallery 2x2 at 48 px, 3 steps, bf16, png: 4 of 4 pairs done, \d+ pairs per hour$",
        output,
        re.MULTILINE,
    )
    assert re.search(r"^gallery 2x2 at 48 px, 3 steps, fp32, png: 4 of 4 pairs done", output, re.M)
    ratios = rows(rf"^  (\S+ x \S+)\s+{NUMBER}\s+{NUMBER}\s+(\d\.\d{{4}})$", output)
    assert sorted(pair for pair, *_ in ratios) == [
        "astronaut x shipwreck",
        "astronaut x starry_night",
        "chelsea x shipwreck",
        "chelsea x starry_night",
    ]
    for _, bf16, fp32, ratio in ratios:
        assert float(ratio) == pytest.approx(float(bf16) / float(fp32), abs=2e-4)
        assert 0.5 < float(ratio) < 2  # bf16 after 3 steps: near the fp32 run, not equal
    worst = max((float(r) for *_, r in ratios), key=lambda r: abs(r - 1))
    (printed,) = rows(r"^worst ratio: (\d\.\d{4}) ", output)
    assert float(printed[0]) == pytest.approx(worst)


@pytest.mark.slow
def test_a_gallery_prints_each_failed_tasks_reason() -> None:
    # At 32 px chelsea.png becomes 32x21, under the minimum side: its two tasks fail.
    output = run_script(
        "bench_step.py",
        *("--largest", "--largest-sizes", "32", "--largest-steps", "2", "--precisions", "fp32"),
        *("--gallery", "2", "--gallery-size", "32", "--gallery-steps", "2"),
        *("--gallery-precision", "bf16", "--gallery-compare-fp32"),
    )
    assert "gallery 2x2 at 32 px, 2 steps, bf16, png: 2 of 4 pairs done" in output
    assert "gallery 2x2 at 32 px, 2 steps, fp32, png: 2 of 4 pairs done" in output
    failed = rows(r"^  failed (\S+ x \S+): (.*)$", output)  # in the bf16 run and in fp32
    chelsea = ["chelsea x shipwreck", "chelsea x starry_night"]
    assert sorted(pair for pair, _ in failed) == sorted(chelsea * 2)
    assert all("under the minimum of 32 pixels" in why for _, why in failed)
    no_ratio = rows(
        r"^  (chelsea x \S+) .* no output in the bf16 run and the fp32 reference$", output
    )
    assert len(no_ratio) == 2
    assert "; 2 of 4 pairs have no ratio (failed or not run)" in output


@pytest.mark.slow
def test_profile_prints_operators_and_writes_a_trace(tmp_path: Path) -> None:
    output = run_script(
        "profile_step.py",
        *("--size", "32", "--precision", "fp32", "--steps", "2", "--batch", "1", "2"),
        *("--rows", "8", "--out", str(tmp_path)),
    )
    assert "== 32 px, fp32, batch 1: 2 evaluations profiled" in output
    assert "== 32 px, fp32, batch 2: 2 evaluations profiled" in output
    assert "Self CPU" in output
    # 8 rows a table, some of them autograd's or the profiler's own: at least 4 operators
    assert len(rows(r"^\s+(aten::\S+)\s", output)) >= 2 * 4
    assert output.count("aten::mkldnn_convolution") == 2  # the convolutions, in each table
    assert "host-device synchronizations: none on a CPU" in output
    for batch in (1, 2):
        trace = tmp_path / f"profile-32px-fp32-batch{batch}.json"
        assert f"trace: {trace}" in output
        events = json.loads(trace.read_text())["traceEvents"]
        assert any(event.get("name", "").startswith("aten::") for event in events)


def test_host_work_per_evaluation() -> None:
    out = run_script("bench_host.py", "--history", "10", "--steps", "40", "--batch", "4")
    found = re.search(
        rf"cpu, history 10: {NUMBER} us of host work per task and evaluation "
        rf"\({NUMBER} transfers each when alone\); a batch of 4: {NUMBER} ms per round",
        out,
    )
    assert found, out
    micro, transfers, per_round = (float(v) for v in found.groups())
    assert micro > 0 and 1 <= transfers <= 2
    assert per_round == pytest.approx(4 * micro / 1000, rel=0.01, abs=0.01)


def test_bench_gpu_sh_parses() -> None:
    proc = subprocess.run(
        ["bash", "-n", str(SCRIPTS / "bench_gpu.sh")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
