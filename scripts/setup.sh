#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything it needs.
# Idempotent: a second run only checks. Python 3.11+ is required.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)  # cluster users: install your own CUDA build first

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet "${TORCH_PINS[@]}"
fi
"$VENV/bin/pip" install --quiet -e '.[dev]'
