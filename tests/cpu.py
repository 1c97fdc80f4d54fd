"""The CPU features this test process may use: the host's, less what ``QUANTDISPATCH_CPU_FEATURES``
masks (CI runs the loading tests natively, with ``none`` and with ``avx2,fma``). A test that forces
a kernel needing a feature skips, visibly, where the (masked) CPU lacks it; the dispatch decision
itself is tested on hand-built ``CpuFeatures`` everywhere (tests/unit/test_plan.py)."""

from __future__ import annotations

import pytest

from quantdispatch.probing import cpu_features

__all__ = ["FEATURES", "needs_avx2_fma", "needs_vector_int4", "needs_native_bf16"]

FEATURES = cpu_features()
"""This process's features, masked."""

needs_avx2_fma = pytest.mark.skipif(not (FEATURES.avx2 and FEATURES.fma),
                                    reason="the kernel needs AVX2 and FMA, which this (masked) CPU does not report")
needs_vector_int4 = pytest.mark.skipif(not FEATURES.vector_int4,
                                       reason="torch's int4 kernel needs AVX2 or AVX-512, which this (masked) CPU does not report")
needs_native_bf16 = pytest.mark.skipif(not FEATURES.native_bf16,
                                       reason="the kernel is planned only where bfloat16 is native (AVX512-BF16/AMX), which this (masked) "
                                              "CPU does not report")
