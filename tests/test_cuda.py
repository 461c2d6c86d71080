"""The CUDA paths: a worker named plain "cuda", CUDA-graph replay against eager
evaluation, batches that shrink under graphs, every precision lowering the loss, and
batches sized by the memory a worker measures.

Skipped without a CUDA device (as in CI); `scripts/bench_gpu.sh` runs them on a GPU node.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import CONTENT, STYLE, content_at, style_like

from nst_batch.losses import gram_matrix
from nst_batch.manifest import load_manifest
from nst_batch.memory import SAFETY, DeviceMemory
from nst_batch.params import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, Params
from nst_batch.plan import plan
from nst_batch.stylize import Job, Result, style_targets, stylize_batch
from nst_batch.vgg import VGG19Features, build_vgg19
from nst_batch.worker import Worker

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (see conftest)

CHELSEA = CONTENT / "chelsea.png"
STARRY = STYLE / "starry_night.jpg"


@pytest.fixture(scope="module")
def cuda_net() -> VGG19Features:
    """conftest's `net` on the GPU, channels-last: a model of its own, not the shared one."""
    vgg = build_vgg19("original", (*GATYS_CONTENT_LAYERS, *GATYS_STYLE_LAYERS), device="cuda")
    return vgg.to_channels_last()


def _job(net: VGG19Features, **params: object) -> Job:
    content = content_at(CHELSEA, 128).cuda()
    style = style_like(STARRY, content.cpu()).cuda()
    p = Params(size=128, **params)  # type: ignore[arg-type]
    return Job(content, style_targets(net, style, p), p)


def _done(outcomes: list) -> list[Result]:
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    return outcomes


def test_a_worker_named_cuda_gets_the_current_device_number() -> None:
    assert Worker("cuda", "cuda#0").device == torch.device("cuda", torch.cuda.current_device())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_matches_eager_evaluation(cuda_net: VGG19Features, precision: str) -> None:
    job = _job(cuda_net, steps=30, precision=precision)
    (eager,) = _done(stylize_batch(cuda_net, [job], graphs=False))
    (graphed,) = _done(stylize_batch(cuda_net, [job], graphs=True))
    assert graphed.steps == eager.steps == 30
    # The same kernels on the same data: the first evaluations agree closely, and
    # L-BFGS, which amplifies last bits, ends within a few percent.
    assert graphed.history[:3] == pytest.approx(eager.history[:3], rel=1e-4)
    assert graphed.losses.total == pytest.approx(eager.losses.total, rel=0.05)
    assert graphed.losses.total < 0.5 * graphed.initial_losses.total


def test_a_batch_that_shrinks_is_captured_again(cuda_net: VGG19Features) -> None:
    short, long = _job(cuda_net, steps=8), _job(cuda_net, steps=20)
    batched = _done(stylize_batch(cuda_net, [short, long], graphs=True))
    alone = _done([stylize_batch(cuda_net, [job], graphs=True)[0] for job in (short, long)])
    assert [r.steps for r in batched] == [8, 20]
    for together, single in zip(batched, alone, strict=True):
        assert together.history[:3] == pytest.approx(single.history[:3], rel=1e-4)
        assert together.losses.total == pytest.approx(single.losses.total, rel=0.05)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_every_precision_lowers_the_loss_on_cuda(cuda_net: VGG19Features, precision: str) -> None:
    job = _job(cuda_net, steps=40, precision=precision)
    (result,) = _done(stylize_batch(cuda_net, [job]))
    assert result.image.is_cuda and result.image.shape == job.content.shape
    assert result.losses.total < 0.5 * result.initial_losses.total


@pytest.mark.parametrize("size", [1, 4])
def test_a_round_synchronizes_with_the_device_at_most_twice(
    cuda_net: VGG19Features, size: int
) -> None:
    # Counted by CUDA itself (sync debug mode): one read of the batch's losses and
    # line-search figures, one of the history products; not one per task.
    jobs = [_job(cuda_net, steps=20, precision="bf16") for _ in range(size)]
    stylize_batch(cuda_net, jobs[:size], graphs=True)  # autotuning and capture happen here

    class Rounds:
        def __init__(self) -> None:
            self.counts: list[int] = []
            self.seen = 0

        def evaluated(self, batch: object) -> None:
            self.counts.append(len(caught) - self.seen)
            self.seen = len(caught)

        def stopped(self, batch: object) -> None: ...

    rounds = Rounds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _done(stylize_batch(cuda_net, jobs, graphs=True, watch=rounds))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    later = rounds.counts[3:]  # after the warm-up evaluations and the graph's capture
    assert later and max(later) <= 2, rounds.counts


def test_the_peak_of_a_run_counts_the_memory_it_reserved() -> None:
    memory = DeviceMemory(torch.device("cuda", torch.cuda.current_device()))
    size = 64 * 2**20
    peak = memory.peak(lambda: torch.empty(size, dtype=torch.uint8, device="cuda"))
    assert size <= peak < 2 * size  # freed at once, yet its block was reserved
    _, total = torch.cuda.mem_get_info()
    assert 0 < memory.budget() <= SAFETY * total


def test_a_worker_sizes_a_batch_by_the_memory_it_measures(write_manifest) -> None:
    manifest = write_manifest(
        content=[str(CHELSEA)],
        style=[str(STARRY)],
        params={"size": 128, "steps": 8},
        sweep={"content_weight": [1, 2, 3]},
    )
    tasks = plan(load_manifest(manifest))
    own = Worker("cuda", "cuda#memory")
    outcomes = own.run_batch(tasks)
    assert [o.status for o in outcomes] == ["done"] * 3, [o.error for o in outcomes]
    ((footprint, pixels),) = own.footprints.values()
    assert footprint.per_task > 0 and footprint.fixed >= 0 and pixels == 128 * 85
    assert own.memory is not None
    chosen = min(3, footprint.tasks_within(own.memory.budget()))
    assert [o.batch for o in outcomes] == [chosen] * 3
    assert all(o.peak_memory is not None and o.peak_memory > 0 for o in outcomes)
    assert own.caps == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_gram_on_tensor_cores_is_the_float32_gram_of_its_values(
    dtype: torch.dtype,
) -> None:
    # Half values enter TF32 exactly: the Gram differs from float64's by float32 sums only.
    generator = torch.Generator(device="cuda").manual_seed(0)
    features = torch.rand(2, 64, 96, 96, device="cuda", generator=generator).to(dtype)
    features.requires_grad_(True)
    exact = features.detach().double().requires_grad_(True)
    gram, reference = gram_matrix(features), gram_matrix(exact)
    assert gram.dtype == torch.float32
    assert torch.allclose(gram.double(), reference, rtol=1e-5, atol=0)
    target = reference.detach() * 0.9
    ((gram - target.float()) ** 2).sum().backward()
    ((reference - target) ** 2).sum().backward()
    assert features.grad is not None and exact.grad is not None
    error = (features.grad.double() - exact.grad).norm() / exact.grad.norm()
    assert error < 2**-7  # the gradient's own half-precision rounding, no worse
