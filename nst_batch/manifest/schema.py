"""The manifest's types: the raw YAML schema (pydantic models that refuse unknown keys) and
the validated `Manifest` a run is made from, with its images, variants and pairs.

Defaults live here, once. What each key means: docs/manifest.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from nst_batch.params import Params, StrictInt

if TYPE_CHECKING:
    from nst_batch.plan import Outline
    from nst_batch.video import Decoded

FORMATS = ("jpg", "png", "webp")
DEFAULT_TEMPLATE = "{content}__{style}"
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_TASKS = 20_000
# Seconds between checkpoints of a task in flight: a save measured 12 ms at 1024 px on a
# local disk, 0.02% of the run; under 1% even at 0.5 s a save on a slow network file
# system (see docs/performance.md). A kill -9 loses at most this much of a task.
DEFAULT_CHECKPOINT_EVERY = 60.0
MAX_BATCH_SIZE = 256
# A GIF holds each frame's delay in hundredths of a second, in 16 bits: 1/100 s to 655.35 s.
MIN_FPS = 100 / 65_535
MAX_FPS = 100.0
# A sequence's frames as one file beside their folder: a GIF (256 colours a frame), an
# animated WebP (full colour), or a video that browsers play (H.264 MP4, VP9 WebM).
Animation = Literal["none", "gif", "webp", "mp4", "webm"]
Seconds = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
MIN_VIDEO_SIDE = 32  # images.MIN_SIDE: the smallest image a task takes


# -- the raw YAML schema ------------------------------------------------------------


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | list[str] = Field(union_mode="left_to_right")
    weights: list[Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]] | None = None
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # A folder (or pattern) of frames, stylized in order, each from the one before; a
    # video file is one without saying so.
    sequence: Annotated[bool, Strict()] = False
    animation: Animation = "none"  # a sequence's frames as one animation
    fps: float = 12.0  # range and type checked by _frame_rate
    # The part of a video taken: from `start` to `end` seconds, every n-th frame, at most
    # `max_frames` of them, no side over `max_side` px (checked against its kind by inputs).
    start: Seconds | None = None
    end: Seconds | None = None
    every: Annotated[StrictInt, Field(ge=1)] = 1
    max_frames: Annotated[StrictInt, Field(ge=1)] | None = None
    max_side: Annotated[StrictInt, Field(ge=MIN_VIDEO_SIDE)] | None = None

    @field_validator("fps", mode="before")
    @classmethod
    def _frame_rate(cls, value: object) -> object:
        # Strict, as Params is: "7" and true are typos, not 7 and 1 frames a second.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("Input should be a number of frames a second, such as 12")
        if not MIN_FPS <= value <= MAX_FPS:  # NaN too
            raise ValueError(
                f"a GIF shows a frame for 1/100 s to 655.35 s, so fps is from {MIN_FPS:.5f} "
                f"to {MAX_FPS:g}"
            )
        return float(value)


class _Pair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str | _Entry
    style: str | _Entry
    params: dict[str, Any] = Field(default_factory=dict)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str
    # Either content and style (every content in every style) or pairs (only those listed).
    content: list[str | _Entry] | None = Field(None, min_length=1)
    style: list[str | _Entry] | None = Field(None, min_length=1)
    pairs: list[_Pair] | None = Field(None, min_length=1)
    weights: str = "original"
    devices: str | list[str] = "auto"
    workers_per_device: StrictInt = Field(1, ge=1, le=64)
    batch_size: Literal["auto"] | StrictInt = "auto"  # range checked by _auto_or_count
    compile: Annotated[bool, Strict()] = False
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    name: str = DEFAULT_TEMPLATE
    format: Literal["jpg", "png", "webp"] = "jpg"
    max_pixels: StrictInt = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_tasks: StrictInt = Field(DEFAULT_MAX_TASKS, ge=1)
    checkpoint_every: Annotated[float, Strict(), Field(ge=0, le=86_400, allow_inf_nan=False)] = (
        DEFAULT_CHECKPOINT_EVERY
    )

    @field_validator("content", "style", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str | dict) else value

    @field_validator("pairs", mode="before")
    @classmethod
    def _pair_mappings(cls, value: object) -> object:
        value = [value] if isinstance(value, dict) else value
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ValueError(
                        f"pairs[{i}] is not a mapping; write each pair as "
                        "{content: photo.jpg, style: painting.jpg}"
                    )
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _auto_or_count(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("Input should be greater than or equal to 1")
            if value > MAX_BATCH_SIZE:
                raise ValueError(f"Input should be less than or equal to {MAX_BATCH_SIZE}")
            return value
        raise ValueError("Input should be 'auto' or a valid integer")


# -- the validated manifest ---------------------------------------------------------


@dataclass(frozen=True)
class FrameSequence:
    """A content entry with `sequence: true` (or a video file): its frames in natural order
    (f2 before f10; a video's in decoding order), each stylized from the one before warped
    along the optical flow; the outputs of a sequence in a style go into one folder,
    `<template with content = name>/`."""

    name: str
    frames: int
    animation: Animation = "none"
    fps: float = 12.0
    video: Decoded | None = None  # the video file its frames were decoded from, and how


@dataclass(frozen=True)
class ImageSpec:
    """One content or style image, with its parameter overrides.

    A style may be a blend: several images whose Gram matrices are averaged with
    `blend` weights (which sum to 1); `path` is then the first of them.
    """

    path: Path
    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    blend: tuple[tuple[Path, float], ...] = ()
    sequence: FrameSequence | None = None  # the sequence this image is a frame of
    frame: int = 0  # its place in the sequence, 0 the first

    @property
    def images(self) -> tuple[tuple[Path, float], ...]:
        """(file, weight) of every image this spec stands for; weights sum to 1."""
        return self.blend or ((self.path, 1.0),)

    @property
    def frame_name(self) -> str:
        """A sequence frame's own name, the last part of `name` (its file's stem, escaped
        if it is not printable): what its outputs are called in the sequence's folder."""
        return self.name.rpartition("/")[2]


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: '' and no overrides when there is no sweep."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """One content in one style, listed under `pairs:`, with the pair's own overrides."""

    content: ImageSpec
    style: ImageSpec
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    output: Path
    contents: tuple[ImageSpec, ...]  # with pairs: each distinct content, in order of appearance
    styles: tuple[ImageSpec, ...]  # ... and each distinct style
    variants: tuple[Variant, ...]
    weights: str  # 'original', 'torchvision' or an absolute path
    devices: tuple[str, ...]  # ('auto',) or explicit devices
    workers_per_device: int
    batch_size: int | None  # most tasks optimized together; None: chosen per device
    compile: bool  # torch.compile the VGG19 stack, once per worker and image shape
    name_template: str
    format: str
    max_pixels: int
    base: Mapping[str, Any]  # preset, then `params:`
    pairs: tuple[Pair, ...] = ()  # empty: every content in every style
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY  # seconds; 0: only when stopped

    def combinations(self) -> Iterator[tuple[ImageSpec, ImageSpec, Variant]]:
        """(content, style, variant) of every task: each listed pair, or without pairs every
        content in every style, in every variant."""
        if self.pairs:
            for pair in self.pairs:
                for variant in self.variants:
                    yield pair.content, pair.style, variant
            return
        for style in self.styles:
            for variant in self.variants:
                for content in self.contents:
                    yield content, style, variant

    @cached_property
    def outlines(self) -> tuple[Outline, ...]:
        """Every task before its key, in `combinations()` order: the plan's one walk over
        them (`nst_batch.plan.outline`), which refuses outputs that collide. Made once per
        manifest: `load_manifest` makes it, so that a bad manifest is refused on loading,
        and `plan()` builds its tasks from it."""
        from nst_batch.plan import outline  # the plan imports this module: import at use

        return outline(self)

    def has_pair(self, content: ImageSpec, style: ImageSpec) -> bool:
        """Whether the plan holds this content in this style (always, without pairs)."""
        return not self.pairs or (content.name, style.name) in self._pairs_by_name

    def pair_overrides(self, content: ImageSpec, style: ImageSpec) -> Mapping[str, Any]:
        """The listed pair's own params ({} without pairs)."""
        return self._pairs_by_name.get((content.name, style.name), {})

    @cached_property
    def _pairs_by_name(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        # Within pairs a name stands for one content (or style): listed_pairs makes it so.
        return {(p.content.name, p.style.name): p.overrides for p in self.pairs}

    def params_for(self, content: ImageSpec, style: ImageSpec, variant: Variant) -> Params:
        """Effective parameters: base < content's < style's < the pair's < the variant's;
        an init_image template is filled in with the task's names."""
        pair = self.pair_overrides(content, style)
        merged = {
            **self.base,
            **content.overrides,
            **style.overrides,
            **pair,
            **variant.overrides,
        }
        init = merged.get("init_image")
        if isinstance(init, str) and ("{" in init or "}" in init):
            filled = self._own_init_image(init, content, style, variant)
            merged["init_image"] = str(Path(filled).resolve())
        # Tasks of one setting share one Params: a plan of 100,000 tasks validates a few.
        setting = repr(merged)  # repr tells 1 from 1.0, True and '1'
        params = self._params_by_setting.get(setting)
        if params is None:
            params = self._params_by_setting[setting] = Params.model_validate(merged)
        return params

    @cached_property
    def _params_by_setting(self) -> dict[str, Params]:
        return {}

    @staticmethod
    def _own_init_image(
        template: str, content: ImageSpec, style: ImageSpec, variant: Variant
    ) -> str:
        """A task's init_image from a template, filled as output names are: a sequence's
        frame takes the file of that name in the folder the template names for its
        sequence (`preview/{content}__{style}.jpg`: `preview/shots__starry/frame_001.jpg`,
        where a run with output `preview` wrote it)."""
        if content.sequence is None:
            return template.format(content=content.name, style=style.name, variant=variant.name)
        filled = template.format(
            content=content.sequence.name, style=style.name, variant=variant.name
        )
        last = template.rpartition("/")[2]
        tail = last[last.rfind("}") + 1 :]  # the file name after its last field
        suffix = tail[tail.rfind(".") :] if "." in tail else ""  # its extension
        return f"{filled.removesuffix(suffix)}/{content.frame_name}{suffix}"

    def output_name(self, content: ImageSpec, style: ImageSpec, variant: Variant) -> str:
        """Output path relative to `output`, with the format's extension; a sequence's frame
        goes into the folder its sequence would name as one content: `coffee__starry/f1.jpg`."""
        name = content.name if content.sequence is None else content.sequence.name
        stem = self.name_template.format(content=name, style=style.name, variant=variant.name)
        if content.sequence is not None:
            stem = f"{stem}/{content.frame_name}"
        # './a' and 'a' name one file: write and compare them as one. (Empty parts stay,
        # for the plan's walk to refuse.)
        stem = "/".join(part for part in stem.split("/") if part != ".")
        return f"{stem}.{self.format}"
