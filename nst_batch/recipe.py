"""The recipe around the optimization: scales coarse to fine, colour control, style blends
and the start image; and `transfer`, the public one-call API built on it.

`stylize` optimizes one image at one size. A recipe turns a content image and settings
into that optimization's inputs at each scale (the content resized, the start upsampled
from the coarser scale or taken from `init`, the images moved to luminance for
`preserve_color: luminance`), carries each scale's result into the next, and makes the
output (the content's own colours put back). The worker runs many recipes in step,
batching each scale across tasks, and owns files, caches and devices; `transfer` runs one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from nst_batch import color, images
from nst_batch.params import LAYER_NAMES, Params
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
class Recipe:
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
    resumed_from: int | None = None  # the step a resumed recipe goes on from
    # A sequence's frame after its first: the frame before, stylized and warped onto this
    # one, (1, 3, H, W) 0..1, and the pixels its flow can be trusted for, (1, 1, H, W).
    follows: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def start(
        cls, content: Image.Image, params: Params, init: Image.Image | None, name: str
    ) -> Recipe:
        """The recipe of `content` (named `name` in errors) under `params`; the coarse
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

    def follow(self, warped: torch.Tensor, trusted: torch.Tensor) -> None:
        """Make this a sequence frame's recipe: start from `warped`, the frame before warped
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
        when it does not fit this recipe (another scale count or image size)."""
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
        # A warm start (from the task's previous output, or the frame before) stops once
        # converged (tolerance).
        warm = (p.init == "previous" and self.init is not None) or self.follows is not None
        update: dict[str, object] = {
            "size": size,
            "steps": steps,
            "tolerance": p.stop_tolerance(warm),
        }
        start = None
        resumed = self.resumed is not None and self.resumed[0] == stage
        self.stage_done = 0
        if self.resumed is not None and resumed:  # the rest of the scale, from its best image
            _, self.stage_done, image = self.resumed
            # At least one step: a scale whose budget was spent still yields its result.
            update["steps"] = max(1, steps - self.stage_done)
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
        return Job(content, grams, job_params, start, callback, resumed, temporal)

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


def transfer(
    content: ImageInput,
    style: ImageInput | Sequence[tuple[ImageInput, float]],
    *,
    weights: str = ORIGINAL,
    device: str | torch.device | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    report_every: int = 10,
    **params: object,
) -> Image.Image:
    """Stylize one image: `content` in the style of `style`, as nst-batch does per task.

    `content` and `style` are paths or PIL images; `style` may be a blend, a list of
    (image, weight) pairs. `params` are the manifest's `params` (size, steps,
    style_weight, preserve_color, scales, init, ...; `init_image` is a path or image).
    `weights`: 'original', 'torchvision' or a state-dict path; `device`: default CUDA if
    available, else the CPU. `on_progress` hears a Progress every `report_every` steps.
    Raises ImageError for an unusable image, StylizeError if the optimization diverges,
    WeightsError, and pydantic's ValidationError for bad settings.
    """
    init_image = params.pop("init_image", None)
    if isinstance(init_image, str | os.PathLike):
        params["init_image"] = os.fspath(init_image)
    elif isinstance(init_image, Image.Image):
        params["init_image"] = "<image>"
    p = Params.model_validate(params)
    blend = [(style, 1.0)] if isinstance(style, str | os.PathLike | Image.Image) else style
    total = sum(weight for _, weight in blend)
    styles = [(_image(image), weight / total) for image, weight in blend]
    picture = _image(content)
    init = None
    if p.init == "style":
        init = styles[0][0]
    elif p.init == "image":
        init = init_image if isinstance(init_image, Image.Image) else _image(p.init_image or "")
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    layers = sorted({*p.content_layers, *p.style_layers}, key=LAYER_NAMES.index)
    vgg = build_vgg19(weights, layers, p.pooling, where)
    recipe = Recipe.start(picture, p, init, _name(content))
    result: Result | None = None
    for stage in range(len(recipe.stages)):
        job = recipe.job(
            stage, where, lambda size, c: style_grams(vgg, styles, p, size, c), on_progress
        )
        outcome = stylize_batch(vgg, [job], report_every)[0]
        if isinstance(outcome, StylizeError):
            raise outcome
        recipe.carry(outcome)
        result = outcome
    assert result is not None
    return images.to_image(recipe.output(result))


def _image(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return images.to_rgb(source)
    return images.load_image(source)


def _name(source: ImageInput) -> str:
    return "the content image" if isinstance(source, Image.Image) else str(Path(source))
