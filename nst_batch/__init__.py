"""nst-batch: regenerate a neural-style-transfer gallery in one command.

`nst_batch.transfer(content, style, **params)` stylizes one image from Python (see
nst_batch.pyramid); `nst_batch.run(manifest, set=..., only=...)` runs a gallery as the
command does and `nst_batch.report(manifest)` counts it (see nst_batch.session). They are
imported on first use, so that planning never imports torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "report", "run", "transfer"]


def __getattr__(name: str) -> Any:
    if name == "transfer":
        from nst_batch.pyramid import transfer

        return transfer
    if name in ("run", "report"):
        from nst_batch import session

        return getattr(session, name)
    raise AttributeError(f"module 'nst_batch' has no attribute {name!r}")
