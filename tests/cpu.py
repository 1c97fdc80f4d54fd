"""The CPU features this test process may use: the host's, less what ``QUANTDISPATCH_CPU_FEATURES``
masks (CI runs the loading tests natively, with ``none`` and with ``avx2,fma``). A test that forces
a kernel needing a feature skips, visibly, where the (masked) CPU lacks it; the dispatch decision
itself is tested on hand-built ``CpuFeatures`` everywhere (tests/unit/test_plan.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from quantdispatch.environment import MASK_VARIABLE
from quantdispatch.probing import cpu_features

__all__ = ["FEATURES", "needs_avx2_fma", "needs_vector_int4", "needs_native_bf16", "cpu_mask"]

FEATURES = cpu_features()
"""This process's features, masked."""

needs_avx2_fma = pytest.mark.skipif(not (FEATURES.avx2 and FEATURES.fma),
                                    reason="the kernel needs AVX2 and FMA, which this (masked) CPU does not report")
needs_vector_int4 = pytest.mark.skipif(not FEATURES.vector_int4,
                                       reason="torch's int4 kernel needs AVX2 or AVX-512, which this (masked) CPU does not report")
needs_native_bf16 = pytest.mark.skipif(not FEATURES.native_bf16,
                                       reason="the kernel is planned only where bfloat16 is native (AVX512-BF16/AMX), which this (masked) "
                                              "CPU does not report")


@contextmanager
def cpu_mask(mask: str | None) -> Iterator[None]:
    """Run the block under the CPU-feature mask ``mask`` (``None``: no mask set), as a user would set
    it; the caller's mask is restored after."""
    before = os.environ.get(MASK_VARIABLE)
    if mask is None:
        os.environ.pop(MASK_VARIABLE, None)
    else:
        os.environ[MASK_VARIABLE] = mask
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MASK_VARIABLE, None)
        else:
            os.environ[MASK_VARIABLE] = before
