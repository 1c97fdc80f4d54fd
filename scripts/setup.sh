#!/usr/bin/env bash
# Create .venv (if missing) and install quantdispatch into it.
#   scripts/setup.sh          the library alone (attrs, plum): enough for check/inspect/demo
#   scripts/setup.sh load     plus what loading needs (torch==2.13.0 CPU, transformers 5.24, accelerate, bitsandbytes)
#   scripts/setup.sh dev      plus everything the tests need (the above, gptqmodel, gguf, mypy, ruff…)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "dev" ]; then
  # torch is pinned to 2.13.0 in the dev extra: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -e '.[dev]'
elif [ "${1:-}" = "load" ]; then
  .venv/bin/python -m pip install --quiet -e '.[bnb]'
else
  .venv/bin/python -m pip install --quiet -e .
fi
