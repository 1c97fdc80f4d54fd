#!/usr/bin/env bash
# Set up the dev environment, then run the whole suite: mypy --strict, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export HF_HUB_OFFLINE=1 GPTQMODEL_CPU_WORKERS=2 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
echo "== ruff (lint)"
.venv/bin/ruff check .
echo "== mypy --strict (package, tests, benchmarks)"
.venv/bin/python -m mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
