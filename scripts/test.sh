#!/usr/bin/env bash
# The test suite, from a fresh clone: set up .venv, lint, type-check, then pytest. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check nst_batch tests scripts
.venv/bin/ruff format --check nst_batch tests scripts
.venv/bin/mypy nst_batch
.venv/bin/python -m pytest -q --durations=15 "$@"  # the slowest 15, to keep the suite short
