#!/usr/bin/env bash
# The test command (README): lint, formatting, import layers, then the test suite, on synthetic data the tests generate.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export KERAS_BACKEND=${KERAS_BACKEND:-torch}
if [ -z "${PI_PYTHON:-}" ] && [ -x .venv-pi/bin/python ]; then export PI_PYTHON="$PWD/.venv-pi/bin/python"; fi
"$PY" -m ruff check .
"$PY" -m ruff format --check .
# imports run one way (.importlinter: entry points -> teacher/student -> training -> distill -> models/data/metrics -> common -> pi)
"$(dirname "$PY")/lint-imports" --no-cache
"$PY" -m pytest -q "$@"
