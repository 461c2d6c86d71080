"""Precision modes (fp32, tf32, bf16, fp16) and channels_last on the CPU; what
`precision: auto` becomes, with the machine's capabilities faked.

The real 'original' VGG19 on the sample images: 64 px for fp32 runs, 48 px for bf16 ones
and 32 px for fp16 (bfloat16 and float16 convolutions are slow on a CPU without their units).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
from conftest import CONTENT, STYLE, content_at, invoke, style_like

from nst_batch import precision, session
from nst_batch.images import read_metadata
from nst_batch.losses import gram_matrix
from nst_batch.manifest import load_manifest
from nst_batch.metadata import PARAMS_METADATA
from nst_batch.params import GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, Params
from nst_batch.plan import Task, plan
from nst_batch.results import read_rows
from nst_batch.stylize import (
    Job,
    StylizeError,
    _LossScale,
    _Objective,
    style_targets,
    stylize,
    stylize_batch,
)
from nst_batch.vgg import VGG19Features, build_vgg19, precision_scope

CHELSEA = CONTENT / "chelsea.png"  # 451x300: 64x43 at 64 px, 32x21 at 32 px
STARRY = STYLE / "starry_night.jpg"
LAYERS = sorted({*GATYS_CONTENT_LAYERS, *GATYS_STYLE_LAYERS})
CPU = torch.device("cpu")
WEIGHTS = {"content_weight": 1.0, "style_weight": 10.0}


def _params(**overrides: object) -> Params:
    return Params(**{"size": 64, **WEIGHTS, **overrides})


def _relative(actual: torch.Tensor, desired: torch.Tensor) -> float:
    actual, desired = actual.detach().double(), desired.detach().double()
    return float((actual - desired).norm() / desired.norm())


def _fp32_loss(
    net: VGG19Features, content: torch.Tensor, style: torch.Tensor, image: torch.Tensor
) -> float:
    """The total loss of `image` under the fp32 objective (fp32 targets, fp32 features)."""
    params = _params(precision="fp32")
    objective = _Objective(net, content, style_targets(net, style, params), params)
    with torch.no_grad():
        features = net(image, sorted(objective.layers))
        return float(objective.terms(features, image).sum())


@pytest.fixture
def tf32_flags() -> Iterator[None]:
    """Put the global TF32 switches back as they were, whatever a test sets."""
    backends = torch.backends
    saved = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
    yield
    backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


# --- precision_scope ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "dtype"),
    [
        ("fp32", torch.float32),
        ("tf32", torch.float32),
        ("bf16", torch.bfloat16),
        ("fp16", torch.float16),
    ],
)
def test_precision_scope_sets_the_activation_dtype(net, mode, dtype) -> None:
    image = content_at(CHELSEA, 32)
    with torch.no_grad():
        reference = net(image, LAYERS)
        with precision_scope(CPU, mode):
            features = net(image, LAYERS)
    assert not torch.is_autocast_enabled("cpu")  # the scope ends with its block
    assert {k: v.dtype for k, v in features.items()} == dict.fromkeys(LAYERS, dtype)
    tolerance = 0.0 if dtype == torch.float32 else 2e-2
    for layer in LAYERS:
        assert _relative(features[layer], reference[layer]) <= tolerance, layer


@pytest.mark.parametrize("mode", ["fp32", "tf32"])
@pytest.mark.parametrize("before", [(False, True), (True, False), (True, True), (False, False)])
def test_precision_scope_leaves_tf32_flags_alone_on_a_cpu(tf32_flags, mode, before) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    with precision_scope(CPU, mode):
        assert _flags() == before
    assert _flags() == before


def test_precision_scope_switches_tf32_for_cuda_and_restores_it(tf32_flags) -> None:
    """Only Python flags are touched, so this runs without a GPU."""
    cuda = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    with precision_scope(cuda, "fp32"):
        assert _flags() == (False, False)
    assert _flags() == (False, True)
    with precision_scope(cuda, "tf32"):
        assert _flags() == (True, True)
    assert _flags() == (False, True)
    with pytest.raises(RuntimeError, match="inside"), precision_scope(cuda, "tf32"):
        raise RuntimeError("inside")
    assert _flags() == (False, True)


# --- channels_last and the Gram matrix under autocast ---------------------------------------


def test_channels_last_gives_the_same_features_and_gradient(net, content) -> None:
    nhwc = build_vgg19("original", LAYERS).to_channels_last()
    assert nhwc.channels_last and not net.channels_last
    conv = nhwc.layers["conv2_1"].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nhwc.normalize(content).is_contiguous(memory_format=torch.channels_last)

    grads = []
    for model in (net, nhwc):
        x = content.clone().requires_grad_(True)
        features = model(x, LAYERS)
        sum(f.square().mean() for f in features.values()).backward()
        grads.append((features, x.grad))
    (nchw_features, nchw_grad), (nhwc_features, nhwc_grad) = grads
    for layer in LAYERS:
        assert _relative(nhwc_features[layer], nchw_features[layer]) < 1e-4, layer
    assert nchw_grad is not None and nhwc_grad is not None
    assert _relative(nhwc_grad, nchw_grad) < 1e-4


def test_gram_matrix_is_float32_under_bf16_autocast(net, content) -> None:
    with torch.no_grad():
        fp32 = net(content, LAYERS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net(content, LAYERS)
            grams = {layer: gram_matrix(bf16[layer]) for layer in LAYERS}
            exact = gram_matrix(fp32["relu3_1"])  # float32 features in, under autocast
    for layer in LAYERS:
        assert bf16[layer].dtype == torch.bfloat16
        assert grams[layer].dtype == torch.float32
        # the float32 Gram of the bf16 features, not a bf16 product
        assert torch.equal(grams[layer], gram_matrix(bf16[layer].float())), layer
        assert _relative(grams[layer], gram_matrix(fp32[layer])) < 2e-2, layer
    flat = fp32["relu3_1"].double().flatten(2)
    reference = flat @ flat.transpose(1, 2) / flat[0].numel()
    assert exact.dtype == torch.float32
    assert _relative(exact, reference) < 1e-6  # a bf16 matmul would be off by ~1e-3


def test_gram_matrix_gradient_is_float32_under_bf16_autocast() -> None:
    features = torch.rand(1, 8, 6, 5, generator=torch.Generator().manual_seed(0))
    grads = []
    for enabled in (False, True):
        x = features.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = gram_matrix(x).square().sum()
        loss.backward()  # outside autocast, as stylize_batch does
        assert x.grad is not None and x.grad.dtype == torch.float32
        grads.append(x.grad)
    assert _relative(grads[1], grads[0]) < 1e-6


# --- stylize in bf16 and fp16 ---------------------------------------------------------------


@pytest.mark.slow
def test_bf16_run_lowers_the_loss_and_matches_fp32(net) -> None:
    """48 px and 40 steps (bf16 is emulated, 0.8 s a step, on a CPU without bf16 units):
    L-BFGS from the content lowers the loss fast for the first 30 steps, where bf16's
    rounding moves its line searches and its loss runs up to 6% either side of fp32's; by 40
    steps both level off together, bf16 within 1% of fp32 here (at 64 px and 60 steps, 2%
    below it on another CPU)."""
    content = content_at(CHELSEA, 48)
    style = style_like(STARRY, content)
    losses = {}
    for mode in ("fp32", "bf16"):
        params = _params(size=48, steps=40, precision=mode)
        result = stylize(net, content, style_targets(net, style, params), params)
        assert result.image.dtype == torch.float32 and result.steps == 40
        assert result.losses.total < 0.1 * result.initial_losses.total
        evaluated = _fp32_loss(net, content, style, result.image)
        # its own (bf16) objective agrees with the fp32 one on its image
        assert evaluated == pytest.approx(result.losses.total, rel=2e-2)
        losses[mode] = evaluated
    assert losses["bf16"] <= 1.02 * losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=5e-2)


def _watch_loss_scale(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, bool]]:
    """(factor after the call, overflowed) of every _LossScale.overflowed call."""
    calls: list[tuple[float, bool]] = []
    original = _LossScale.overflowed

    def overflowed(self: _LossScale, total: torch.Tensor, grad: torch.Tensor) -> bool:
        result = original(self, total, grad)
        calls.append((self.factor, result))
        return result

    monkeypatch.setattr(_LossScale, "overflowed", overflowed)
    return calls


@pytest.mark.slow
def test_fp16_run_lowers_the_loss_with_dynamic_loss_scaling(net, monkeypatch) -> None:
    small = content_at(CHELSEA, 32)
    style = style_like(STARRY, small)
    calls = _watch_loss_scale(monkeypatch)
    params = _params(size=32, steps=3, precision="fp16")
    result = stylize(net, small, style_targets(net, style, params), params)
    assert result.steps == 3 and len(result.history) == 3  # overflows are not steps
    assert result.losses.total < 0.9 * result.initial_losses.total
    assert (
        result.image.dtype == torch.float32 and 0 <= result.image.min() <= result.image.max() <= 1
    )
    start = _fp32_loss(net, small, style, small)
    assert result.initial_losses.total == pytest.approx(start, rel=1e-2)
    # The scale started at START, halved on each overflow, then held for every step.
    overflows = [factor for factor, overflowed in calls if overflowed]
    assert overflows and overflows[0] == _LossScale.START / 2
    assert overflows == [_LossScale.START / 2 ** (i + 1) for i in range(len(overflows))]
    assert [overflowed for _, overflowed in calls[len(overflows) :]] == [False] * 3
    assert {factor for factor, _ in calls[len(overflows) :]} == {overflows[-1]}


@pytest.mark.slow
def test_fp16_survives_a_gradient_that_overflows_at_scale_one(net) -> None:
    small = content_at(CHELSEA, 32)
    style = style_like(STARRY, small)
    fp32 = _params(size=32, steps=2, style_weight=100.0)
    reference = stylize(net, small, style_targets(net, style, fp32), fp32)
    assert reference.losses.total < reference.initial_losses.total
    fp16 = _params(size=32, steps=2, style_weight=100.0, precision="fp16")
    try:
        result = stylize(net, small, style_targets(net, style, fp16), fp16)
    except StylizeError as exc:
        pytest.fail(f"fp16: {exc}")
    assert result.losses.total < result.initial_losses.total


def test_loss_scale_disabled_is_one_and_never_overflows() -> None:
    scale = _LossScale(enabled=False)
    assert scale.factor == 1.0
    for grad in (torch.tensor([float("inf")]), torch.tensor([float("nan")]), torch.ones(2)):
        assert scale.overflowed(torch.tensor(3.0), grad) is False
    assert scale.factor == 1.0


def test_loss_scale_halves_on_an_overflowed_gradient() -> None:
    scale = _LossScale(enabled=True)
    start = _LossScale.START
    assert scale.factor == start

    def finite(grad: torch.Tensor) -> bool:  # the gradient's check, read on the host
        check = scale.check(grad)
        assert check is not None and check.shape == (1,)
        return bool(check[0])

    assert scale.overflowed(5.0, finite(torch.tensor([1.0, float("inf")]))) is True
    assert scale.factor == start / 2
    assert scale.overflowed(5.0, finite(torch.tensor([float("nan"), 1.0]))) is True
    assert scale.factor == start / 4
    assert scale.overflowed(5.0, finite(torch.tensor([1.0, -2.0]))) is False
    assert scale.factor == start / 4


def test_loss_scale_is_off_and_reads_nothing_outside_fp16() -> None:
    scale = _LossScale(enabled=False)
    assert scale.check(torch.tensor([float("inf")])) is None
    assert scale.overflowed(5.0, False) is False and scale.factor == 1.0


@pytest.mark.parametrize("total", [float("inf"), float("nan")])
def test_loss_scale_does_not_take_a_divergence_for_an_overflow(total) -> None:
    scale = _LossScale(enabled=True)
    assert scale.overflowed(total, False) is False
    assert scale.factor == _LossScale.START


def test_loss_scale_stops_halving_at_its_floor() -> None:
    scale = _LossScale(enabled=True)
    while scale.overflowed(1.0, False):
        pass
    assert scale.factor == _LossScale.FLOOR < 1


def test_a_batch_needs_one_precision_and_one_shape(net, content, style) -> None:
    targets = style_targets(net, style, _params())
    fp32, bf16 = _params(steps=2), _params(steps=2, precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        stylize_batch(net, [Job(content, targets, fp32), Job(content, targets, bf16)])
    other = content_at(CONTENT / "astronaut.png", 64)
    assert other.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="shape"):
        stylize_batch(net, [Job(content, targets, fp32), Job(other, targets, fp32)])


# -- precision: auto (nst_batch/precision.py), the machine's capabilities faked ----------

AMX = frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})  # bf16 instructions, no matrix units


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Fake what this machine has: its CPU flags and its CUDA devices' capabilities."""

    def fake(cpu: frozenset[str], cuda: Sequence[tuple[int, int]] = ()) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: cpu)
        monkeypatch.setattr(
            precision, "cuda_capability", lambda i: cuda[i] if i < len(cuda) else None
        )
        monkeypatch.setattr(precision, "_auto_devices", lambda: _cuda_names(cuda) or ["cpu"])

    return fake


def _cuda_names(cuda: Sequence[tuple[int, int]]) -> list[str]:
    return [f"cuda:{i}" for i in range(len(cuda))]


@pytest.mark.parametrize(
    ("cpu", "cuda", "devices", "expected"),
    [
        (AMX, (), ["cpu"], "bf16"),
        (AVX512_BF16, (), ["cpu"], "fp32"),  # measured slower than fp32: docs/gpus.md
        (frozenset(), (), ["cpu"], "fp32"),  # no /proc/cpuinfo (macOS)
        (AVX512_BF16, ((8, 0),), ["cuda:0"], "bf16"),
        (AVX512_BF16, ((9, 0), (9, 0)), ["auto"], "bf16"),
        (AMX, ((7, 5),), ["cuda"], "fp32"),  # Turing: no bf16 tensor cores
        (AMX, (), ["auto"], "bf16"),  # auto without CUDA: the CPU
        (AVX512_BF16, ((8, 0),), ["cuda:0", "cpu"], "fp32"),  # all of them, or none
        (AMX, ((8, 6),), ["cuda:0", "cpu", "cpu"], "bf16"),
        (AMX, ((8, 0),), ["cuda:1"], "fp32"),  # no such device: the run will say so
        (AMX, (), ["mps"], "fp32"),
    ],
)
def test_auto_is_bf16_only_where_every_device_has_fast_bf16(
    machine: Callable[..., None],
    cpu: frozenset[str],
    cuda: tuple[tuple[int, int], ...],
    devices: list[str],
    expected: str,
) -> None:
    machine(cpu, cuda)
    assert precision.resolve(devices) == expected


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx512_bf16 amx_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx512_bf16 amx_bf16\n"
    )
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_flags() == {"fpu", "avx512_bf16", "amx_bf16"}
        assert precision.fast_bf16("cpu")
        monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
        precision.cpu_flags.cache_clear()
        assert precision.cpu_flags() == frozenset() and not precision.fast_bf16("cpu")
    finally:
        precision.cpu_flags.cache_clear()


@pytest.mark.parametrize(("cpu", "autocast"), [(AMX, True), (AVX512_BF16, False)])
def test_an_auto_scope_autocasts_as_the_device_resolves(
    machine: Callable[..., None], cpu: frozenset[str], autocast: bool
) -> None:
    machine(cpu)
    with precision_scope(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu") is autocast


def _planned(path: Path) -> list[Task]:
    return plan(load_manifest(path))


def test_auto_plans_the_resolved_precision_with_its_key(
    machine: Callable[..., None], write_manifest: Callable[..., Path]
) -> None:
    """The key holds the precision that makes the pixels: `auto` resolved to bf16 is the
    task of `bf16`, and resolved to fp32 the task of the default."""
    auto = write_manifest("auto.yaml", params={"precision": "auto"})
    bf16 = write_manifest("bf16.yaml", params={"precision": "bf16"})
    fp32 = write_manifest("fp32.yaml")
    machine(AMX)
    on_amx = session.prepare(auto).whole
    assert {task.params.precision for task in on_amx} == {"bf16"}
    assert [t.key for t in on_amx] == [t.key for t in _planned(bf16)]
    machine(AVX512_BF16)
    elsewhere = session.prepare(auto).whole
    assert {task.params.precision for task in elsewhere} == {"fp32"}
    assert [t.key for t in elsewhere] == [t.key for t in _planned(fp32)]


def test_auto_keeps_the_precision_an_output_was_made_in(
    machine: Callable[..., None], write_manifest: Callable[..., Path]
) -> None:
    """A gallery run on nodes of two kinds is not redone back and forth: an output made in
    bf16 on an AMX node is up to date on a node without AMX, and one made in fp32 there is
    up to date on the AMX node. An output of other settings is redone in what this node
    resolves to."""
    path = write_manifest(params={"precision": "auto", "size": 48, "steps": 2})
    machine(AMX)
    made = invoke(path, "--devices", "cpu")
    assert made.exit_code == 0, made.output
    rows = read_rows(path.parent / "out" / "results.csv")
    assert {row.precision for row in rows} == {"bf16"}
    assert {row.status for row in rows} == {"done"}
    (chosen,) = {task.params.precision for task in session.prepare(path).whole}
    assert chosen == "bf16"

    machine(AVX512_BF16)  # another node: what is made stays made
    prepared = session.prepare(path)
    assert prepared.todo == [] and {t.params.precision for t in prepared.whole} == {"bf16"}
    first = prepared.whole[0]
    metadata = read_metadata(first.output)
    assert json.loads(metadata[PARAMS_METADATA])["precision"] == "bf16"

    # An output made with other settings is redone in this node's choice, fp32.
    new = write_manifest(params={"precision": "auto", "size": 48, "steps": 3})
    again = session.prepare(new)
    assert len(again.todo) == 4 and {t.params.precision for t in again.todo} == {"fp32"}
