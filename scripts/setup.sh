#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything it needs.
# Idempotent: a second run only checks. Python 3.11+ is required.
#
# torch: an environment that already imports torch keeps it (a cluster's own CUDA build).
# Otherwise NST_BATCH_TORCH (default torch==2.14.1) is installed, from the package index
# NST_BATCH_TORCH_INDEX when set: https://download.pytorch.org/whl/cpu gives the CPU-only
# wheels, without the 2.8 GB of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${NST_BATCH_TORCH:-torch==2.14.1}
TORCH_INDEX=${NST_BATCH_TORCH_INDEX:-}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: keeping the installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
    "$VENV/bin/pip" install --quiet ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH"
fi
"$VENV/bin/pip" install --quiet -e '.[dev]'
