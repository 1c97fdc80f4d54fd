"""Test-wide settings: deterministic hypothesis profiles, offline Hugging Face, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")

# CI: derandomized and bounded, so that a run is reproducible and its time predictable.
settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# Local exploration: random, more examples (HYPOTHESIS_PROFILE=dev).
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REALWORLD = Path(__file__).resolve().parents[2] / "shared" / "realworld"
"""The shared corpus of real files; beside the repository (``../shared``), never copied into it."""

# Snippets that must fail type checking (test_misuse.py runs mypy on them); never import them.
collect_ignore_glob = ["typing/misuse/*"]
