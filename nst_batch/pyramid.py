"""The image pyramid around the optimization: scales coarse to fine, colour control, style
blends and the start image; and `transfer`, the public one-call API built on it.

`stylize` optimizes one image at one size. A pyramid turns a content image and settings
into that optimization's inputs at each scale (the content resized, the start upsampled
from the coarser scale or taken from `init`, the images moved to luminance for
`preserve_color: luminance`), carries each scale's result into the next, and makes the
output (the content's own colours put back). The worker runs many pyramids in step,
batching each scale across tasks, and owns files, caches and devices; `transfer` runs one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from PIL import Image
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from nst_batch import color, images
from nst_batch.params import LAYER_NAMES, Params
from nst_batch.stopping import Start, StopRule
from nst_batch.stylize import (
    Job,
    Losses,
    Progress,
    Result,
    StyleTargets,
    StylizeError,
    Temporal,
    style_targets,
    stylize_batch,
)
from nst_batch.vgg import VGG19Features, build_vgg19
from nst_batch.weights import ORIGINAL

Targets = Callable[[int, torch.Tensor], StyleTargets]  # (size, content at that size) -> Grams


def style_grams(
    vgg: VGG19Features,
    styles: Sequence[tuple[Image.Image, float]],
    params: Params,
    size: int,
    content: torch.Tensor,
) -> StyleTargets:
    """The style Gram matrices for output size `size`: a blend averages its images' Grams
    with its weights; the colour modes first fit each style image to `content` (1, 3, H, W),
    the content at `size`."""
    p = params.model_copy(update={"size": size})
    device = next(vgg.parameters()).device
    blended: StyleTargets = {}
    for style, weight in styles:
        style_size = images.scaled_style_size(style.size, size, p.style_scale)
        tensor = images.to_tensor(images.resize(style, style_size)).to(device)
        if p.preserve_color == "luminance":
            tensor = color.match_luminance(tensor, content)
        elif p.preserve_color == "histogram":
            tensor = color.match_colors(tensor, content)
        for layer, gram in style_targets(vgg, tensor, p).items():
            blended[layer] = blended[layer] + weight * gram if layer in blended else weight * gram
    return blended


@dataclass
class Pyramid:
    """One image's way through its scales: its inputs, loaded once, and its progress."""

    content: Image.Image
    params: Params
    init: Image.Image | None = None  # the style, init_image or previous output to start from
    stages: list[tuple[int, int]] = field(default_factory=list)  # (size, steps), coarse first
    done: int = 0  # steps of the scales finished
    previous: torch.Tensor | None = None  # the last scale's result
    content_tensor: torch.Tensor | None = None  # the content at the current scale
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0  # optimization, every scale
    initial: Losses | None = None  # at the very start (the first scale's start)
    stage_done: int = 0  # steps done at the current scale before its job (a resumed one)
    resumed: tuple[int, int, torch.Tensor] | None = None  # (scale, its steps done, image)
    resumed_from: int | None = None  # the step a resumed pyramid goes on from
    # A sequence's frame after its first: the frame before, stylized and warped onto this
    # one, (1, 3, H, W) 0..1, and the pixels its flow can be trusted for, (1, 1, H, W).
    follows: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def start(
        cls, content: Image.Image, params: Params, init: Image.Image | None, name: str
    ) -> Pyramid:
        """The pyramid of `content` (named `name` in errors) under `params`; the coarse
        scales under the minimum side are skipped. ImageError if the output would be too
        small."""
        p = params
        output_size(content, p, name)  # refuses an image too small at this size
        coarse_steps = p.scale_steps or p.steps
        stages = [
            (s, coarse_steps)
            for s in p.scale_sizes[:-1]
            if min(images.target_size(*content.size, s, p.square)) >= images.MIN_SIDE
        ]
        return cls(content, p, init, [*stages, (p.size, p.steps)])

    @property
    def final(self) -> tuple[int, int]:
        """The output's size (W, H)."""
        return images.target_size(*self.content.size, self.params.size, self.params.square)

    def follow(self, warped: torch.Tensor, trusted: torch.Tensor) -> None:
        """Make this a sequence frame's pyramid: start from `warped`, the frame before warped
        onto this one (at the output size, so the coarse scales go), unless the start is
        the task's own previous output, and hold its `trusted` pixels to it."""
        self.stages = self.stages[-1:]
        self.follows = (warped, trusted)

    def resume(
        self,
        stage: int,
        stage_steps: int,
        image: torch.Tensor,
        done: int,
        history: list[float],
        seconds: float,
        initial: Losses,
    ) -> None:
        """Go on from a checkpoint: `stage_steps` steps done at scale `stage` (0 the
        coarsest), whose best image is `image`, `done` steps over every scale. ValueError
        when it does not fit this pyramid (another scale count or image size)."""
        if not 0 <= stage < len(self.stages):
            raise ValueError(f"it is at scale {stage + 1}, this task has {len(self.stages)}")
        size, steps = self.stages[stage]
        shape = images.target_size(*self.content.size, size, self.params.square)
        if tuple(image.shape) != (1, 3, shape[1], shape[0]):
            raise ValueError(
                f"its image is {tuple(image.shape)[-1]}x{tuple(image.shape)[-2]}, "
                f"the task's is {shape[0]}x{shape[1]} at that scale"
            )
        if not 1 <= stage_steps <= steps:
            raise ValueError(f"it has {stage_steps} steps done of that scale's {steps}")
        before = sum(budget for _, budget in self.stages[:stage])
        if done - stage_steps > before:
            raise ValueError(f"it has {done - stage_steps} steps done before a scale of {before}")
        self.resumed = (stage, stage_steps, image)
        self.done, self.history, self.seconds = done, list(history), seconds
        self.initial, self.resumed_from = initial, done

    def job(
        self,
        stage: int,
        device: torch.device,
        targets: Targets,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Job:
        """The optimization of scale `stage` (0: the coarsest): images at its size, its
        targets, its start; `on_progress` hears the progress over every scale."""
        p = self.params
        size, steps = self.stages[stage]
        shape = images.target_size(*self.content.size, size, p.square)
        content = images.to_tensor(images.resize(self.content, shape)).to(device)
        self.content_tensor = content
        grams = targets(size, content)
        # A warm start (from the task's previous output, or the frame before) stops earlier
        # than a cold one: see nst_batch/stopping.py.
        begins: Start = "cold"
        if self.follows is not None:
            begins = "frame"
        elif p.init == "previous" and self.init is not None:
            begins = "previous" if self.init.size == self.final else "resized"
        rule = StopRule.of(p.model_copy(update={"steps": steps}), begins)
        update: dict[str, object] = {"size": size, "steps": rule.steps, "tolerance": rule.tolerance}
        start = None
        resumed = self.resumed is not None and self.resumed[0] == stage
        self.stage_done = 0
        if self.resumed is not None and resumed:  # the rest of the scale, from its best image
            _, self.stage_done, image = self.resumed
            # At least one step: a scale whose budget was spent still yields its result.
            update["steps"] = max(1, rule.steps - self.stage_done)
            start, update["init"] = image.to(device), "image"
        elif self.previous is not None:  # the coarser scale's result, upsampled by stylize
            start, update["init"] = self.previous, "image"
        elif self.init is not None:
            start = images.to_tensor(images.resize(self.init, shape)).to(device)
            if p.preserve_color == "histogram" and p.init == "style":
                start = color.match_colors(start, content)
        elif self.follows is not None:
            start, update["init"] = self.follows[0].to(device), "image"
        temporal = None
        if self.follows is not None:
            warped, trusted = (t.to(device) for t in self.follows)
            temporal = Temporal(warped, trusted)
        if p.preserve_color == "luminance":
            content = color.luminance(content)
            start = None if start is None else color.luminance(start)
            if temporal is not None:
                temporal = Temporal(color.luminance(temporal.warped), temporal.trusted)
        callback = None
        if on_progress is not None:
            offset, total = self.done, sum(n for _, n in self.stages)

            def callback(progress: Progress) -> None:
                on_progress(Progress(offset + progress.step, total, progress.losses))

        job_params = p.model_copy(update=update)
        stop = StopRule(job_params.steps, rule.tolerance, rule.warm)
        return Job(content, grams, job_params, start, callback, resumed, temporal, stop)

    def carry(self, result: Result) -> None:
        """Take one scale's result as the next one's start."""
        self.previous = result.image
        self.done += result.steps
        self.history += result.history
        self.seconds += result.seconds
        if self.initial is None:
            self.initial = result.initial_losses

    def combined(self, last: Result) -> Result:
        """The last scale's result with steps, time and curve over every scale."""
        assert self.initial is not None
        return dataclasses.replace(
            last,
            initial_losses=self.initial,
            steps=self.done,
            seconds=self.seconds,
            history=self.history,
        )

    def output(self, result: Result) -> torch.Tensor:
        """The final image (1, 3, H, W): with luminance transfer, the content's own colours."""
        return self.picture(result.image)

    def picture(self, image: torch.Tensor) -> torch.Tensor:
        """An image of the current scale as it is shown (an output, a snapshot): with
        luminance transfer, the content's own colours put back."""
        if self.params.preserve_color != "luminance":
            return image
        assert self.content_tensor is not None
        return color.recombine(image, self.content_tensor)


def output_size(content: Image.Image, params: Params, name: str) -> tuple[int, int]:
    """The output's (W, H) for `content` under `params`; ImageError, naming the image
    `name`, when a side would fall under the minimum."""
    size = images.target_size(*content.size, params.size, params.square)
    if min(size) < images.MIN_SIDE:
        raise images.ImageError(
            f"{name}: at size {params.size} it becomes {size[0]}x{size[1]}, under "
            f"the minimum of {images.MIN_SIDE} pixels on a side; raise size, crop the "
            "image, or set square: true"
        )
    return size


ImageInput = str | os.PathLike[str] | Image.Image
# transfer's own keywords, beside Params' fields: the unknown-keyword hint suggests them too.
_TRANSFER_KEYWORDS = ("weights", "device", "on_progress", "report_every")


def transfer(
    content: ImageInput,
    style: ImageInput | Sequence[ImageInput | tuple[ImageInput, float]],
    *,
    weights: str = ORIGINAL,
    device: str | torch.device | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    report_every: int = 10,
    **params: object,
) -> Image.Image:
    """Stylize one image: `content` in the style of `style`, as nst-batch does per task.

    `content` and `style` are paths or PIL images (any mode, converted as files are: EXIF
    orientation, ICC profile to sRGB, transparency over white). `style` may be a blend: a
    list of images (equal weights) or of (image, weight) pairs, the weights positive and
    normalized to sum 1, as a manifest's `path: [...]` and `weights: [...]`. `params` are
    the manifest's `params` (size, steps, style_weight, preserve_color, scales, init, ...;
    `init_image` is a path or image). `weights`: 'original', 'torchvision' or a state-dict
    path; `device`: 'cpu', 'cuda', 'cuda:N' or 'mps', by default CUDA if available, else
    the CPU. `on_progress` hears a Progress every `report_every` (>= 1) steps.

    Raises TypeError or ValueError, one sentence per problem naming the argument, for bad
    arguments and settings (a ValidationError of Params becomes such a ValueError);
    ImageError for an unusable image; StylizeError if the optimization diverges;
    WeightsError.
    """
    _check_reporting(on_progress, report_every)
    init_image = params.pop("init_image", None)
    init_source = None if init_image is None else _source(init_image, "init_image")
    if init_source is not None:
        label = "<image>" if isinstance(init_source, Image.Image) else os.fspath(init_source)
        params["init_image"] = label
    p = _settings(params)
    _source(content, "content")
    blend = _blend(style)
    where = _device(device)
    total = sum(weight for _, weight in blend)
    names = ["style"] if _is_source(style) else [f"style[{i}]" for i in range(len(blend))]
    styles = [
        (_image(image, name), weight / total)
        for name, (image, weight) in zip(names, blend, strict=True)
    ]
    picture = _image(content, "content")
    init = None
    if p.init == "style":
        init = styles[0][0]
    elif p.init == "image":
        assert init_source is not None  # Params: init: image needs init_image
        init = _image(init_source, "init_image")
    layers = sorted({*p.content_layers, *p.style_layers}, key=LAYER_NAMES.index)
    vgg = build_vgg19(weights, layers, p.pooling, where)
    pyramid = Pyramid.start(picture, p, init, _name(content))
    result: Result | None = None
    for stage in range(len(pyramid.stages)):
        job = pyramid.job(
            stage, where, lambda size, c: style_grams(vgg, styles, p, size, c), on_progress
        )
        outcome = stylize_batch(vgg, [job], report_every)[0]
        if isinstance(outcome, StylizeError):
            raise outcome
        pyramid.carry(outcome)
        result = outcome
    assert result is not None
    return images.to_image(pyramid.output(result))


def _check_reporting(on_progress: object, report_every: object) -> None:
    if on_progress is not None and not callable(on_progress):
        raise TypeError(
            f"on_progress: expected a function that takes a Progress, or None, got "
            f"{type(on_progress).__name__}"
        )
    if isinstance(report_every, bool) or not isinstance(report_every, int):
        raise TypeError(f"report_every: expected a whole number of steps, got {report_every!r}")
    if report_every < 1:
        raise ValueError(
            f"report_every: {report_every} steps between progress reports; give 1 or more"
        )


def _settings(params: dict[str, object]) -> Params:
    """`params` validated; a ValidationError becomes a ValueError, one line per problem."""
    try:
        return Params.model_validate(params)
    except ValidationError as exc:
        raise ValueError("\n".join(_explain(exc))) from None


def _explain(exc: ValidationError) -> list[str]:
    """One sentence per keyword with a problem: 'size: Input should be ... (got 10)'.

    A union's alternatives (tolerance: 'auto' or a number) fail together, so a keyword's
    errors become one sentence: a validator's own message if one spoke, else the
    alternatives joined with 'or'.
    """
    problems: dict[str, list[ErrorDetails]] = {}
    for error in exc.errors():
        loc = error["loc"]
        # The keyword, then list indices; union members' tags ('float', ...) are dropped.
        key = (
            ".".join([str(loc[0]), *(str(p) for p in loc[1:] if isinstance(p, int))]) if loc else ""
        )
        problems.setdefault(key, []).append(error)
    lines = []
    for key, errors in problems.items():
        if errors[0]["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, [*_TRANSFER_KEYWORDS, *Params.model_fields])
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f"; transfer takes {', '.join(_TRANSFER_KEYWORDS)} and the manifest's "
                f"params: {', '.join(Params.model_fields)}"
            )
            lines.append(f"unknown keyword argument '{key}'{hint}")
            continue
        own = [e for e in errors if e["type"] == "value_error"]
        messages = [e["msg"].removeprefix("Value error, ") for e in own or errors]
        message = " or ".join(
            [messages[0], *(m.removeprefix("Input should be ") for m in messages[1:])]
        )
        got = errors[0].get("input")
        shown = "" if isinstance(got, dict | list | tuple) else f" (got {got!r})"
        lines.append(f"{key}: {message}{shown}" if key else message)
    return lines


def _is_source(value: object) -> bool:
    return isinstance(value, str | os.PathLike | Image.Image)


def _source(value: object, name: str) -> ImageInput:
    """`value` if it is a path or a PIL image; TypeError naming the argument `name` if not."""
    if not _is_source(value):
        raise TypeError(f"{name}: expected a path or a PIL image, got {type(value).__name__}")
    return cast(ImageInput, value)


def _blend(style: object) -> list[tuple[ImageInput, float]]:
    """`style` as (image, weight) pairs: one image weighs 1, so do a blend's bare images."""
    if _is_source(style):
        return [(cast(ImageInput, style), 1.0)]
    if isinstance(style, bytes) or not isinstance(style, Sequence):
        raise TypeError(
            f"style: expected a path, a PIL image or a blend (a list of images or of "
            f"(image, weight) pairs), got {type(style).__name__}"
        )
    if not style:
        raise ValueError(
            "style: the blend is empty; give a style image, or a list of images or of "
            "(image, weight) pairs"
        )
    pairs: list[tuple[ImageInput, float]] = []
    for i, item in enumerate(style):
        weight: object = 1.0
        if _is_source(item):
            image = item
        elif isinstance(item, tuple | list) and len(item) == 2 and _is_source(item[0]):
            image, weight = item
        else:
            raise TypeError(
                f"style[{i}]: expected an image (a path or a PIL image) or an (image, weight) "
                f"pair, got {item!r}; a blend is a list such as [('a.jpg', 3), ('b.jpg', 1)]"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"style[{i}]: its weight must be a number, got {weight!r}")
        value = float(weight)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"style[{i}]: its weight is {weight!r}; blend weights must be positive, "
                "finite numbers (they are normalized to sum 1)"
            )
        pairs.append((cast(ImageInput, image), value))
    return pairs


def _device(device: object) -> torch.device:
    """The device to run on; None: CUDA if available, else the CPU. A device this machine
    lacks is refused as runner.resolve_devices refuses the command line's."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(
            f"device: expected 'cpu', 'cuda', 'cuda:N', 'mps', a torch.device or None, "
            f"got {type(device).__name__}"
        )
    try:
        where = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device {device!r}: torch knows no such device; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    name = str(device)
    if where.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (where.index or 0) >= count:
            found = f"{count} CUDA device{'s' * (count != 1)}" if count else "no CUDA device"
            listed = "'cuda:0'" if count == 1 else f"'cuda:0' .. 'cuda:{count - 1}'"
            advice = f"use {listed} or 'cpu'" if count else "use 'cpu'"
            raise ValueError(f"device {name!r}: this machine has {found}; {advice}")
    elif where.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r}: Apple's Metal is not available here; use 'cpu'")
    elif where.type != "cpu":
        raise ValueError(
            f"device {name!r}: nst-batch stylizes on 'cpu', 'cuda', 'cuda:N' or 'mps'; use one "
            "of them"
        )
    return where


def _image(source: ImageInput, name: str) -> Image.Image:
    """A path or PIL image as 8-bit sRGB RGB, as load_image makes a file's; `name` is the
    argument, named in errors about a PIL image (a path names itself)."""
    if isinstance(source, Image.Image):
        _check_open(source, name)
        return images.to_rgb(source, name)
    return images.load_image(source)


def _check_open(image: Image.Image, name: str) -> None:
    """Decode `image` (as conversion would); ValueError if it was closed first."""
    try:
        image.load()
    except (*images.IMAGE_ERRORS, AssertionError) as exc:
        # close() leaves "Operation on closed image"; an image opened lazily in a `with`
        # block and never loaded has lost its file (fp None), and Pillow asserts.
        if getattr(image, "fp", False) is None or "closed" in str(exc):
            raise ValueError(
                f"{name}: the PIL image is closed; pass an open one (load() it inside its "
                "`with Image.open(...)` block) or its path"
            ) from None
        raise images.ImageError(
            f"Cannot use image '{name}': its pixels cannot be read ({exc}); pass the "
            "file's path, or re-open it"
        ) from exc


def _name(source: ImageInput) -> str:
    return "the content image" if isinstance(source, Image.Image) else str(Path(source))
