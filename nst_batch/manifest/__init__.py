"""A gallery manifest: YAML in, a typed and fully validated `Manifest` out.

Everything a run needs is checked on loading, before any work: keys and types, value
ranges, layer names, image paths (files, folders, globs; relative to the manifest's
folder), the output-name template, every effective parameter combination, and (through
the plan's walk over the tasks) every output path. Every error names the manifest, the
key and the fix. What a manifest may say: docs/manifest.md.

    schema    the raw YAML models and the validated types (`Manifest`, `ImageSpec` ...)
    errors    `ManifestError`, and the sentences a validation error becomes
    loading   YAML and its limits, `--set`, resolution into a `Manifest`
    inputs    files, folders, globs, blends, sequences: what becomes an `ImageSpec`
    settings  params keys, init_image, the sweep's variants, the output-name template
"""

from nst_batch.manifest.errors import ManifestError
from nst_batch.manifest.inputs import natural_key
from nst_batch.manifest.loading import load_manifest, parse_devices
from nst_batch.manifest.schema import (
    DEFAULT_CHECKPOINT_EVERY,
    FrameSequence,
    ImageSpec,
    Manifest,
    Variant,
)

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "FrameSequence",
    "ImageSpec",
    "Manifest",
    "ManifestError",
    "Variant",
    "load_manifest",
    "natural_key",
    "parse_devices",
]
