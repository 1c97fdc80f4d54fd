"""A fused C path for the most used block types, compiled at first use; the eager kernels are the fallback.

Eager torch makes several passes over the output (unpack, convert, scale, offset), and at
~0.5 ns a weight each they cap the speed-up over gguf-py near 5x. These loops make one pass.
torch.compile was measured first and did not help (14-25 s cold compile, then Q4_K no faster than
eager), so this is plain C99 (``native.c`` beside this module, with ``half.h``), built with the
system C compiler into a per-user cache, called through ``ctypes`` on raw pointers inside the op
``quantdispatch::gguf_dequant_blocks``. The block sizes come from the one block table
(``quantdispatch.gguf.types.BLOCK``) as ``-D`` defines (``block_defines``); the types are
``quantdispatch.gguf.native.NATIVE_DEQUANT_TYPES``.

Bit-exactness holds by construction: each weight is the same float32 expression as in gguf-py
(``ds * q - dm`` as a product, then a difference), built with ``-ffp-contract=off`` (no fused
multiply-add) and without ``-ffast-math``; the differential tests run both paths. float16 and
bfloat16 outputs are cast from float32 chunks by torch, as on the eager path.

Built per SIMD level (``_native.isa_flags``; a portable build where there is none), with OpenMP:
each call splits its blocks into one range per thread (``_native.threads()``), each block written
by one thread with the same code, so the output does not depend on the thread count.

``native_kernels()`` returns ``None`` where there is no C compiler or the build fails (then the
eager path serves every type), and always when ``QUANTDISPATCH_NATIVE=0``.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import torch

from quantdispatch.gguf.native import NATIVE_DEQUANT_TYPES, c_name
from quantdispatch.gguf.types import BLOCK, GgmlType

from .._native import Isa, build_library, custom_op, isa_flags, read_source, threads
from .._simd import PORTABLE_FLAGS, simd_level
from .tables import IQ4NL_VALUES, grid_table, sign_mask_table

__all__ = ["NATIVE_TYPES", "NativeKernel", "native_kernels", "block_defines", "c_sources", "GGUF_DEQUANT_BLOCKS"]

NativeKernel = Callable[[torch.Tensor, torch.Tensor], None]
"""``kernel(blocks, out)``: like an eager kernel, but ``blocks`` and ``out`` must be contiguous."""

NATIVE_TYPES: Final = NATIVE_DEQUANT_TYPES
"""The block types with a fused C kernel (the ones the benchmark measures)."""

_FLAGS: Final = ("-ffp-contract=off", "-fno-fast-math")
"""Added to ``isa_flags(level)``: no fused multiply-add, no fast math (bit-exact against gguf-py)."""

HEADER: Final = "half.h"
"""The header the GGUF C files share (``h2f``, the guard that the block sizes were passed)."""


def block_defines(types: Iterable[GgmlType]) -> dict[str, int]:
    """The ``-D`` macros that give the C kernels their block sizes, from the one block table:
    ``<TYPE>_WEIGHTS`` and ``<TYPE>_BYTES`` for each type, and the guard ``half.h`` checks.

    >>> block_defines([GgmlType.Q4_K])
    {'QUANTDISPATCH_BLOCK_SIZES': 1, 'Q4_K_WEIGHTS': 256, 'Q4_K_BYTES': 144}
    """
    defines = {"QUANTDISPATCH_BLOCK_SIZES": 1}
    for t in sorted(types):
        defines[f"{t.name}_WEIGHTS"], defines[f"{t.name}_BYTES"] = BLOCK[t]
    return defines


def c_sources(name: str) -> tuple[str, dict[str, str]]:
    """The C file ``name`` of this package and the shared header, as ``build_library`` takes them."""
    return read_source(__package__ or "", name), {HEADER: read_source(__package__ or "", HEADER)}


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _tables(t: GgmlType) -> tuple[torch.Tensor, ...]:
    """The lookup tables a type's C function takes after ``(blocks, out, n)``."""
    if t is GgmlType.IQ4_XS:
        return (torch.tensor(IQ4NL_VALUES, dtype=torch.float32),)
    if t is GgmlType.IQ2_XS:
        return (grid_table("iq2xs").contiguous(), sign_mask_table(True).contiguous())
    return ()


_Bound = Mapping[int, tuple[Callable[..., object], tuple[ctypes.c_void_p, ...]]]


def _library() -> _Bound | None:
    """Each type's C function and its table pointers, by type id, built for this process's SIMD
    level (``isa_level``, cached per value of ``QUANTDISPATCH_CPU_FEATURES``; a portable build
    where there is none); ``None`` when they cannot be built."""
    if os.environ.get("QUANTDISPATCH_NATIVE", "1") == "0":
        return None
    return _level_library(simd_level())


@functools.cache
def _level_library(level: Isa | None) -> _Bound | None:
    source, headers = c_sources("native.c")
    flags = (*isa_flags(level), *_FLAGS) if level is not None else \
        (*PORTABLE_FLAGS, *_FLAGS)
    lib = build_library(f"gguf_native_{level or 'portable'}", source, flags, headers=headers, defines=block_defines(NATIVE_TYPES))
    if lib is None:
        return None
    bound: dict[int, tuple[Callable[..., object], tuple[ctypes.c_void_p, ...]]] = {}
    for t in NATIVE_TYPES:
        fn = getattr(lib, c_name(t))
        fn.restype = None
        tables = _tables(t)
        _KEEP.extend(tables)
        bound[int(t)] = (fn, tuple(_ptr(x) for x in tables))
    return bound


_KEEP: list[torch.Tensor] = []
"""The lookup tables the C functions read, kept alive for the process."""


def _dequant_blocks(blocks: torch.Tensor, ggml_type: int, out: torch.Tensor) -> None:
    """``quantdispatch::gguf_dequant_blocks``: ``blocks`` uint8 ``[B, type_size]`` into ``out``
    float32 ``[B, block_size]``, both contiguous."""
    bound = _library()
    found = None if bound is None else bound.get(ggml_type)
    if found is None:
        raise RuntimeError(f"no native dequantization kernel for GGML type {ggml_type} here; check native_kernels() first")
    per_block, size = BLOCK[GgmlType(ggml_type)]
    n = blocks.shape[0] if blocks.dim() == 2 else -1
    if blocks.dtype != torch.uint8 or blocks.shape != (n, size) or not blocks.is_contiguous():
        raise ValueError(f"need contiguous uint8 blocks [B, {size}], got {blocks.dtype} {list(blocks.shape)}")
    if out.dtype != torch.float32 or out.shape != (n, per_block) or not out.is_contiguous():
        raise ValueError(f"need a contiguous float32 output [{n}, {per_block}], got {out.dtype} {list(out.shape)}")
    fn, tables = found
    fn(_ptr(blocks), _ptr(out), ctypes.c_int64(n), ctypes.c_int64(threads()), *tables)


def _dequant_blocks_fake(blocks: torch.Tensor, ggml_type: int, out: torch.Tensor) -> None:
    return None


GGUF_DEQUANT_BLOCKS: Final = custom_op("gguf_dequant_blocks", "(Tensor blocks, int ggml_type, Tensor(a!) out) -> ()",
                                       _dequant_blocks, _dequant_blocks_fake)
"""``torch.ops.quantdispatch.gguf_dequant_blocks(blocks, ggml_type, out)``: the fused C dequantization."""


def _kernel(t: GgmlType) -> NativeKernel:
    type_id = int(t)

    def kernel(blocks: torch.Tensor, out: torch.Tensor) -> None:
        GGUF_DEQUANT_BLOCKS(blocks, type_id, out)

    kernel.__name__ = kernel.__qualname__ = f"native_{c_name(t)}"
    return kernel


@functools.cache
def native_kernels() -> Mapping[GgmlType, NativeKernel] | None:
    """The fused kernels by type, built (once per user and source version) on first call, or
    ``None`` when they cannot be: no C compiler, not Linux, a failed build, ``QUANTDISPATCH_NATIVE=0``."""
    if os.environ.get("QUANTDISPATCH_NATIVE", "1") == "0" or _library() is None:
        return None
    return {t: _kernel(t) for t in sorted(NATIVE_TYPES)}
