"""Which build of a native kernel this process runs: one library per SIMD level, chosen cheaply per call.

``_native.isa_level()`` reads ``/proc/cpuinfo`` and the ``QUANTDISPATCH_CPU_FEATURES`` mask at
each call, too slow for an op called once per layer per decode step. The level only changes with
the mask, so it is cached per value of the mask variable: a test that sets the mask gets the other
level's library at its next call, and a decode step pays one dictionary lookup.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping
from typing import Final

from ..environment import MASK_VARIABLE
from ..probing import cpu_features
from ._native import Isa, isa_flags, isa_level, native_library

__all__ = ["LEVELS", "PORTABLE_FLAGS", "simd_level", "native_bf16", "level_library"]

LEVELS: Final[tuple[Isa, ...]] = ("avx2", "avx512", "avx512-vnni")
"""Every SIMD level a kernel may be built for, lowest first."""

PORTABLE_FLAGS: Final = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=gnu99")
"""The build of a kernel that has a portable C path, where no SIMD level applies (another CPU, or a
mask of ``none``): no ``-march``, so the code holds nothing the mask hides."""


@functools.cache
def _level_for(mask: str | None) -> Isa | None:
    return isa_level()


@functools.cache
def _bf16_for(mask: str | None) -> bool:
    return cpu_features().native_bf16


def simd_level() -> Isa | None:
    """``isa_level()``, read once per value of the mask variable."""
    return _level_for(os.environ.get(MASK_VARIABLE))


def native_bf16() -> bool:
    """Whether the (masked) CPU computes bfloat16 natively, read once per value of the mask variable."""
    return _bf16_for(os.environ.get(MASK_VARIABLE))


def level_library(package: str, name: str, functions: Mapping[str, tuple[int, int]], level: Isa | None) -> ctypes.CDLL | None:
    """``name.c`` of ``package`` built for ``level`` (``isa_flags``; ``None``: ``PORTABLE_FLAGS``),
    cached on disk per level (the flags are part of the key), or ``None`` where it cannot be built."""
    return native_library(package, name, isa_flags(level) if level is not None else PORTABLE_FLAGS, functions)
