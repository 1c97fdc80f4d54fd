#!/usr/bin/env bash
# Set up, then run the main job: check and plan the built-in examples, then build a tiny model,
# quantize it four ways (GPTQ 4/8-bit, AWQ GEMM, bitsandbytes NF4), and inspect and load each
# through dispatch, comparing with full precision. A couple of minutes after the install.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh load
export HF_HUB_OFFLINE=1
.venv/bin/quantdispatch demo
exec .venv/bin/quantdispatch demo --load
