"""Every setting of one stylization, with its default, in one place.

`Params` is what `stylize` receives and what a manifest's `params:` block (and its
per-style, per-content and sweep overrides) is validated into. Pure pydantic and
stdlib, so the manifest can be checked without importing torch.
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

GATYS_CONTENT_LAYERS = ("relu4_2",)
CONVERGENCE_WINDOW = 30  # evaluations over which `tolerance` measures the loss's fall
# tolerance: auto stops a sequence's frame (started from the frame before) once its best
# loss fell by less than WARM_TOLERANCE over CONVERGENCE_WINDOW evaluations; a cold start
# keeps its whole budget, since the same rule would cut it short by up to 3% of its loss.
WARM_TOLERANCE = 0.015
# A warm start from the task's previous output (init: previous) runs WARM_SHARE of `steps`,
# at least WARM_FLOOR evaluations: see nst_batch/stopping.py for why a share and not a
# tolerance, and docs/performance.md for the grid (scripts/bench_warm.py) it was chosen on.
WARM_SHARE = 0.3
WARM_FLOOR = 20
# From an output of another size (a preview's, upscaled): WARM_RESIZED_SHARE of `steps`, at
# least WARM_RESIZED_FLOOR evaluations (the same grid; see nst_batch/stopping.py).
WARM_RESIZED_SHARE = 0.5
WARM_RESIZED_FLOOR = 75
# temporal_weight's default, from scripts/bench_sequence.py (6 frames of the sample pan at
# 96 px, 60 steps): warping error against independent frames 0.47x with the warm start
# alone (0), 0.37x at 1e7, 0.20x at 1e8, 0.13x at 1e9; style loss 0.60x, 0.64x, 0.84x,
# 1.10x. 1e8 is the strongest hold that keeps the style loss under the independent frames'.
TEMPORAL_WEIGHT = 1e8
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# Layer names of VGG19's feature stack, in order. Owned here (not in vgg.py) so that
# manifest validation can reject an unknown layer without importing torch.
_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block


def _layer_names() -> tuple[tuple[str, ...], dict[str, str]]:
    names: list[str] = []
    flat: dict[str, str] = {}  # the single-image script's names: conv_N is the N-th conv
    n = 0
    for block, convs in enumerate(_BLOCKS, start=1):
        for i in range(1, convs + 1):
            n += 1
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            flat[f"conv_{n}"] = f"conv{block}_{i}"
            flat[f"relu_{n}"] = f"relu{block}_{i}"
        names.append(f"pool{block}")
        flat[f"pool_{block}"] = f"pool{block}"
    return tuple(names), flat


LAYER_NAMES, FLAT_ALIASES = _layer_names()


def canonical_layer(name: str) -> str:
    """`conv_4` -> `conv2_2`; paper names pass through; unknown names raise ValueError."""
    if name in LAYER_NAMES:
        return name
    if name in FLAT_ALIASES:
        return FLAT_ALIASES[name]
    import difflib

    close = difflib.get_close_matches(name, LAYER_NAMES, n=1) or difflib.get_close_matches(
        name, FLAT_ALIASES, n=1
    )
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"unknown VGG19 layer '{name}'{hint}; use names like relu4_2, conv1_1, pool3 "
        "or the flat conv_1 ... conv_16"
    )


def _finite_number(value: object) -> object:
    """Take numeric text as a float and refuse inf and nan; leave other values to the type.

    YAML reads `1e6` (no dot) as text, so a weight written that way arrives as a string.
    """
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# Strict: YAML's true and false are not numbers (lax pydantic would take them as 1 and 0).
# A strict float still takes an int, so `style_weight: 10` is fine.
StrictInt = Annotated[int, Strict()]
PositiveFloat = Annotated[float, Strict(), Field(gt=0), BeforeValidator(_finite_number)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0), BeforeValidator(_finite_number)]


class Params(BaseModel):
    """One stylization's settings. Defaults are calibrated for the `original` weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: StrictInt = Field(512, ge=32, le=8192, description="longest side of the output, px")
    square: bool = Field(False, description="resize content to size x size, ignoring aspect")
    style_scale: PositiveFloat = Field(1.0, description="style image size relative to output")
    steps: StrictInt = Field(
        300, ge=2, le=100_000, description="loss evaluations (forward+backward)"
    )
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    learning_rate: PositiveFloat | None = Field(
        None, description="None: 1.0 for L-BFGS, 0.02 (in 0..1 pixel units) for Adam"
    )
    line_search: Literal["strong_wolfe", "none"] = Field(
        "strong_wolfe", description="L-BFGS step control; 'none' is the single-image script's"
    )
    content_weight: NonNegativeFloat = 1.0
    style_weight: NonNegativeFloat = 10.0
    tv_weight: NonNegativeFloat = 0.0
    temporal_weight: NonNegativeFloat = Field(
        TEMPORAL_WEIGHT,
        description="sequence frames: hold the pixels the optical flow can be trusted for to "
        "the previous stylized frame warped onto this one (Ruder et al. 2016); 0: warm start "
        "only. Less flicker for a little less style",
    )
    content_layers: tuple[str, ...] = GATYS_CONTENT_LAYERS
    style_layers: tuple[str, ...] = GATYS_STYLE_LAYERS
    style_layer_weights: tuple[NonNegativeFloat, ...] | None = Field(
        None, description="one per style layer; None: 1 each"
    )
    init: Literal["content", "noise", "style", "image", "previous"] = Field(
        "content",
        description="previous: start from the task's existing (outdated) output, resized; "
        "the content where there is none",
    )
    init_image: str | None = Field(None, description="path, with init: image")
    tolerance: Literal["auto"] | Annotated[NonNegativeFloat, Field(lt=1)] = Field(
        "auto",
        description=f"L-BFGS stops when its best loss fell by less than this fraction over "
        f"the last {CONVERGENCE_WINDOW} evaluations; 0: every step; auto: a warm start from "
        f"a previous output runs {WARM_SHARE:.0%} of steps ({WARM_RESIZED_SHARE:.0%}, at least "
        f"{WARM_RESIZED_FLOOR}, after a size change), a sequence's frame stops at "
        f"{WARM_TOLERANCE}, a cold start runs every step",
    )
    seed: StrictInt = Field(0, ge=0)
    pooling: Literal["max", "avg"] = "max"
    preserve_color: Literal["none", "luminance", "histogram"] = Field(
        "none",
        description="luminance: transfer on luminance, keep the content's colours; "
        "histogram: match the style's colours to the content's first",
    )
    scales: StrictInt = Field(
        1, ge=1, le=6, description="coarse-to-fine: sizes size/2^(scales-1) .. size"
    )
    scale_steps: StrictInt | None = Field(
        None, ge=1, le=100_000, description="steps at each coarser scale; None: as `steps`"
    )
    adam_average: NonNegativeFloat = Field(
        0.9, lt=1, description="Adam: decay of the iterate average output at the end; 0 off"
    )
    precision: Literal["fp32", "tf32", "bf16", "fp16", "auto"] = Field(
        "fp32",
        description="VGG19 arithmetic; Gram matrices and losses stay float32. auto: bf16 "
        "where the devices have fast bf16 (CPUs with AMX, CUDA from Ampere), else fp32",
    )
    save_every: StrictInt = Field(
        0,
        ge=0,
        le=100_000,
        description="write a snapshot <output stem>.stepNNNN.<format> beside the output every "
        "N steps (over all scales), to watch a long run; 0: none. Not part of the task key",
    )

    @field_validator("content_layers", "style_layers", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _known_layers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one layer")
        return tuple(canonical_layer(name) for name in value)

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(
            self.style_layers
        ):
            raise ValueError(
                f"style_layer_weights has {len(self.style_layer_weights)} values but "
                f"style_layers has {len(self.style_layers)}; give one weight per layer"
            )
        if (self.init == "image") != (self.init_image is not None):
            raise ValueError(
                "init: image needs init_image (a path), and init_image needs init: image"
            )
        return self

    @property
    def layer_weights(self) -> tuple[float, ...]:
        return self.style_layer_weights or (1.0,) * len(self.style_layers)

    @property
    def scale_sizes(self) -> tuple[int, ...]:
        """The coarse-to-fine sizes, ending at `size`; none under MIN_SCALE_SIZE but the last."""
        sizes = [self.size // 2**k for k in reversed(range(self.scales))]
        return (*(s for s in sizes[:-1] if s >= MIN_SCALE_SIZE), self.size)

    @property
    def total_steps(self) -> int:
        """Loss evaluations over every scale."""
        coarse = len(self.scale_sizes) - 1
        return self.steps + coarse * (self.scale_steps or self.steps)

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer == "lbfgs" else 0.02


MIN_SCALE_SIZE = 64  # coarser scales leave relu5_1 a few pixels wide: too little to shape


PRESETS: dict[str, dict[str, object]] = {
    # The PyTorch tutorial's single-image script: its layers (flat names), its weights
    # and its square 512 px, 300-step run. Its style weight belongs to torchvision's
    # 0..1 input convention, so the preset selects those weights too (see README).
    "pytorch-tutorial": {
        "content_layers": ("conv_4",),
        "style_layers": ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5"),
        "style_weight": 1e6,
        "content_weight": 1.0,
        "size": 512,
        "square": True,
        "steps": 300,
    },
}
PRESET_WEIGHTS: dict[str, str] = {"pytorch-tutorial": "torchvision"}

# Part of every task key: bump when a change to the math alters outputs.
ALGORITHM_VERSION = "6"
