#!/usr/bin/env bash
# Set up the dev environment, then run the whole suite: ruff, mypy --strict, pytest; then the
# loading tests again with the CPU features masked down (QUANTDISPATCH_CPU_FEATURES), so that every
# kernel-dispatch branch runs on whatever CPU this is: portable kernels only ("none") and AVX2+FMA
# only ("avx2,fma"), AVX-512 without bfloat16 ("avx2,fma,avx512f"). QD_TEST_MASKS="" skips those runs;
# extra arguments go to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export HF_HUB_OFFLINE=1 GPTQMODEL_CPU_WORKERS=2 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
unset QUANTDISPATCH_CPU_FEATURES
echo "== ruff (lint)"
.venv/bin/ruff check .
echo "== mypy --strict (package, tests, benchmarks)"
.venv/bin/python -m mypy
echo "== CPU: $(.venv/bin/python -c 'from quantdispatch.probing import cpu_features; print(", ".join(cpu_features().names()) or "no SIMD features")')"
echo "== pytest (native CPU features)"
.venv/bin/python -m pytest "$@"
for mask in ${QD_TEST_MASKS-none avx2,fma avx2,fma,avx512f}; do
  echo "== pytest, loading tests with QUANTDISPATCH_CPU_FEATURES=$mask"
  QUANTDISPATCH_CPU_FEATURES=$mask .venv/bin/python -m pytest "$@" tests/loading tests/differential tests/unit/test_cli.py tests/unit/test_plan.py
done
