#!/usr/bin/env bash
# Set up, then run the main job on the built-in examples: check them and plan a load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/quantdispatch demo
