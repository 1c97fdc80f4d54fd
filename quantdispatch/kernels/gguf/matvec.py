"""Fused GGUF matrix-vector products on the blocks as the file stores them, or repacked by rows (C: AVX2 + FMA + F16C, AVX-512, VNNI).

A kept-packed weight (``GgufLinear``) dequantizes its whole matrix at every forward, then calls
``F.linear``: for one token that writes and reads four bytes per weight to use each once. This
kernel is the int4 path of ``kernels/int4_native.py`` applied to GGML blocks without repacking
them: it reads a row's blocks once, expands each run of 32 weights in registers as
``q * scale + offset`` and multiplies it into the activations (Q4_0, Q4_1, Q8_0: four rows per
expansion; Q4_K, Q6_K: runs that share bytes expanded from one load), accumulating in float32.
Nothing is copied at load, so memory stays at the file's size.

How each type maps onto ``W = q * scale + offset`` per run of 32 (a run is what one AVX2 pass of
the int4 kernel covers; the nibble order of Q4_0/Q4_1 is the int4 kernel's own):

=====  ============================================  ==========================================
type   run                                           scale, offset
=====  ============================================  ==========================================
Q4_0   one block: 16 bytes, low nibbles 0-15,        ``d``, ``-8 d``
       high nibbles 16-31
Q4_1   one block, as Q4_0                            ``d``, ``m``
Q4_K   sub-block j of a super-block: the low         ``d * sc[j]``, ``-dmin * m[j]`` (6-bit
       (j even) or high (j odd) nibbles of 32 bytes  scales and mins unpacked as ggml does)
Q8_0   one block: 32 signed bytes                    ``d``, 0
Q6_K   a quarter of half a super-block: 4 low bits   ``d * sc[i]`` per 16 weights, ``-32 d sc[i]``
       from ``ql``, 2 high bits from ``qh``
=====  ============================================  ==========================================

Q4_0, Q4_1 and Q4_K are the 4-bit types of the int4 path; Q8_0 and Q6_K (the other half of a
``Q4_K_M`` file: its output layer and half of its ``attn_v``/``ffn_down``) take the same loop
with a different unpack (the list is ``quantdispatch.gguf.native.FUSED_MATVEC_TYPES``). Each weight is formed with one fused multiply-add from the
same float32 scale gguf-py computes (exact for Q4_0, Q4_1, Q8_0 and Q6_K, within one rounding of
gguf-py's two for Q4_K); only the order of the sums differs from ``F.linear`` on the dequantized
matrix.

Threads and SIMD levels: every entry point takes the thread count (``_native.threads()``, torch's
intra-op count, read inside the op) and splits the output rows with OpenMP (torch's own libgomp),
one thread on tiny problems; each output is computed by one thread with the same code, so any
thread count gives the same bits. The library is built per SIMD level (``_native.isa_level()``:
AVX2, AVX-512, AVX-512 VNNI, less what ``QUANTDISPATCH_CPU_FEATURES`` masks; ``matvec_kernels(level)``
builds any level up to the CPU's). The 8-bit kernels compute at every level the exact int32 sum of
each 4-byte lane of a run of 32 (AVX2 and AVX-512BW ``maddubs``, VNNI ``dpbusd`` on unsigned codes
from a per-run correction), then the same float operations in the same order: the levels agree
bit for bit (``tests/kernels/test_gguf_levels.py``).

Repacked rows (the 8-bit module, ``cpu-gguf-q8dot``): a row at a time, those kernels are bound by
arithmetic (a scale conversion per block, a horizontal sum per row), not memory. So the 8-bit
module of a ``repack.REPACK_TYPES`` weight (Q4_0, Q8_0, Q4_K, Q6_K) repacks it at construction
into groups of 16 interleaved rows (``repack.py``: a permutation of the file's bytes, done in C by
``rp_*``; the module keeps that one copy and pages the source's file pages out) and decodes with
``rx_*``: per group and unit of 32 weights (Q6_K: 16), ``dpbusd`` (or ``maddubs``) of 4 code bytes
of each of the 16 rows against 4 broadcast activation codes, one ``cvtph`` for the 16 rows'
scales, one float multiply-add per row; rows past the last whole group take the row kernel. Its
bits too are the same at every level and thread count (``tests/kernels/test_gguf_repack.py``);
they differ from the row kernel's by float summation order only. The prefill GEMM reads the
repacked groups (``gr_*``: each group unpacked into its panel), the dequantizing paths unpack
through ``quantdispatch::gguf_unpack_rows``; ``GgufMatvecLinear.file_blocks()`` gives the file's layout.

Above ``FUSED_ROWS`` input rows (prefill) the 8-bit module runs an int8 GEMM (``gx_*``: Q4_0, Q8_0,
Q4_K, Q6_K on AVX-512 VNNI; panels of 16 weight rows unpacked into ``dpbusd`` order, blocks of 8
input rows in registers), the same 8-bit arithmetic summed in another order; the float32 module,
and the 8-bit one without VNNI, use ``GgufLinear``'s dequantize-then-GEMM path. ``matvec_kernels()``
is ``None`` without a C compiler, off x86-64 Linux, without AVX2/FMA/F16C, or when
``QUANTDISPATCH_NATIVE=0``; then every type keeps ``GgufLinear``.

The C is ``matvec.c`` beside this module (package data), with the block sizes of the one block
table passed as ``-D`` defines and ``h2f`` from ``half.h``. Both arithmetics run as one
``torch.library`` op, ``quantdispatch::gguf_matvec`` (``GGUF_MATVEC``), so ``torch.compile`` sees
a decode step's fused layer as one node.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from collections.abc import Callable, Mapping
from typing import Final, Literal, get_args

import attrs
import torch

from quantdispatch.gguf.native import FUSED_MATVEC_TYPES, c_name
from quantdispatch.gguf.types import BLOCK, GgmlType

from .._native import Isa, build_library, cpu_flags, custom_op, isa_flags, threads
from .._simd import simd_level
from .modules import GgufLinear, PackedLinearFactory
from .native import block_defines, c_sources
from .repack import REPACK_TYPES, ROWS_PER_GROUP, unpack

__all__ = ["current_level", "has_gemm", "repacks", "GEMM_TYPES",
           "MATVEC_TYPES", "FUSED_ROWS", "Activations", "MatvecKernels", "GgufMatvecLinear", "matvec_kernels", "gguf_matvec",
           "matvec_linears", "GGUF_MATVEC", "GGUF_UNPACK_ROWS"]

FUSED_ROWS: Final = 8
"""Up to this many input rows a forward runs the fused kernel; above it, dequantize + GEMM."""

GEMM_TYPES: Final[frozenset[GgmlType]] = frozenset({GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q6_K})
"""The block types with a prefill GEMM on 8-bit activations (``gx_*``, AVX-512 VNNI)."""

MATVEC_TYPES: Final[frozenset[GgmlType]] = FUSED_MATVEC_TYPES
"""The block types with fused matrix-vector kernels (both arithmetics): the one table,
``quantdispatch.gguf.native.FUSED_MATVEC_TYPES``."""

Activations = Literal["float32", "int8"]
"""How a kernel reads the activations: as float32 (exact weights, float32 sums), or quantized to
8 bits per run of 32 with integer dot products (llama.cpp's arithmetic)."""

_Fn = Callable[..., object]
"""A bound C function (``ctypes`` releases the GIL while it runs)."""


@attrs.frozen
class MatvecKernels:
    """The compiled kernels by type for one SIMD level: ``float32[type]`` (``mv_*``) and
    ``int8[type]`` (``qx_*``: quantize the float32 activations, then ``qv_*``). Both are called as
    ``kernel(blocks, x, y, M, N, K, threads)``; the 8-bit ones return nonzero when out of memory."""

    level: Isa
    float32: Mapping[GgmlType, _Fn]
    int8: Mapping[GgmlType, _Fn]
    gemm: Mapping[GgmlType, _Fn]
    """``gx_*``: the prefill GEMM on 8-bit activations (AVX-512 VNNI only; empty below it)."""
    repacked: Mapping[GgmlType, _Fn] = attrs.field(factory=dict)
    """``rx_*``: the 8-bit kernels on rows repacked by ``repack.repack`` (``REPACK_TYPES``)."""
    repacked_gemm: Mapping[GgmlType, _Fn] = attrs.field(factory=dict)
    """``gr_*``: the prefill GEMM on repacked rows (AVX-512 VNNI only)."""
    layout: Mapping[GgmlType, tuple[_Fn, _Fn]] = attrs.field(factory=dict)
    """``(rp_*, ru_*)``: ``repack.repack`` and ``repack.unpack`` in C, called as
    ``fn(src, dst, N, K, threads)`` (the torch functions are the reference; these are ~100x faster)."""


def current_level() -> Isa | None:
    """``isa_level()`` for this process's ``QUANTDISPATCH_CPU_FEATURES`` (``_simd.simd_level``: cached
    per value of the mask, since the op reads it at every call and reading ``/proc/cpuinfo`` costs ~50 us)."""
    return simd_level()


def matvec_kernels(level: Isa | None = None) -> MatvecKernels | None:
    """The kernels compiled for ``level`` (default: this process's ``current_level()``; built once
    per level and process, cached on disk), or ``None`` where they cannot run here (no compiler,
    not x86-64 Linux, no AVX2/FMA/F16C, a level above the CPU's, ``QUANTDISPATCH_NATIVE=0``)."""
    if os.environ.get("QUANTDISPATCH_NATIVE") == "0" or not sys.platform.startswith("linux"):
        return None
    here = current_level()
    if here is None:
        return None
    if level is None:
        level = here
    elif _RANK[level] > _RANK[here]:
        return None
    return _level_kernels(level)


_RANK: Final[Mapping[Isa, int]] = {"avx2": 0, "avx512": 1, "avx512-vnni": 2}


@functools.cache
def _level_kernels(level: Isa) -> MatvecKernels | None:
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx2", "fma", "f16c"} <= set(cpu_flags().split()):
        return None
    source, headers = c_sources("matvec.c")
    # A NaN scale gives a NaN output whatever its payload: h2f may take F16C alone (half.h).
    # No contraction of the C expressions: the levels' float operations stay the same ones.
    defines = {**block_defines(MATVEC_TYPES), "QUANTDISPATCH_H2F_QUIET_NAN": 1}
    lib = build_library(f"gguf_matvec_{level}", source, (*isa_flags(level), "-ffp-contract=off"), headers=headers, defines=defines)
    if lib is None:
        return None

    def bind(symbol: str, restype: type[ctypes.c_int] | None) -> _Fn:
        fn = getattr(lib, symbol)
        fn.restype = restype
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4
        return fn  # type: ignore[no-any-return]

    vnni = level == "avx512-vnni"

    def bind_layout(symbol: str) -> _Fn:
        fn = getattr(lib, symbol)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3
        return fn  # type: ignore[no-any-return]

    return MatvecKernels(level=level, float32={t: bind(f"mv_{c_name(t)}", None) for t in MATVEC_TYPES},
                         int8={t: bind(f"qx_{c_name(t)}", ctypes.c_int) for t in MATVEC_TYPES},
                         gemm={t: bind(f"gx_{c_name(t)}", ctypes.c_int) for t in GEMM_TYPES} if vnni else {},
                         repacked={t: bind(f"rx_{c_name(t)}", ctypes.c_int) for t in REPACK_TYPES},
                         repacked_gemm={t: bind(f"gr_{c_name(t)}", ctypes.c_int) for t in REPACK_TYPES & GEMM_TYPES} if vnni else {},
                         layout={t: (bind_layout(f"rp_{c_name(t)}"), bind_layout(f"ru_{c_name(t)}")) for t in REPACK_TYPES})


def _kernels(ggml_type: GgmlType) -> MatvecKernels:
    kernels = matvec_kernels()
    if kernels is None or ggml_type not in MATVEC_TYPES:
        raise ValueError(f"no fused matrix-vector kernel for {ggml_type.name} here; check matvec_kernels() first")
    return kernels


def _shape_error(ggml_type: GgmlType, blocks: torch.Tensor, k: int, out_features: int) -> str | None:
    per_block, size = BLOCK[ggml_type]
    if k % per_block or blocks.numel() != out_features * (k // per_block) * size or blocks.dtype != torch.uint8:
        return f"{ggml_type.name} blocks of {blocks.numel()} bytes do not make a [{out_features}, {k}] weight"
    return None


@functools.cache
def _entries(level: Isa | None) -> Mapping[tuple[int, str, bool], tuple[int, int, _Fn, _Fn | None]]:
    """``(type id, activations, repacked)`` → ``(weights per block, bytes per block, C function,
    prefill GEMM or None)`` at ``level``: what the op looks up once per call."""
    kernels = matvec_kernels(level) if level is not None else None
    if kernels is None:
        return {}
    found: dict[tuple[int, str, bool], tuple[int, int, _Fn, _Fn | None]] = {
        (int(t), a, False): (*BLOCK[t], (kernels.float32 if a == "float32" else kernels.int8)[t],
                             kernels.gemm.get(t) if a == "int8" else None)
        for t in MATVEC_TYPES for a in get_args(Activations)}
    for t, fn in kernels.repacked.items():
        found[(int(t), "int8", True)] = (*BLOCK[t], fn, kernels.repacked_gemm.get(t))
    return found


def has_gemm(ggml_type: GgmlType) -> bool:
    """Whether ``ggml_type`` has the prefill GEMM on 8-bit activations here (AVX-512 VNNI)."""
    entry = _entries(current_level()).get((int(ggml_type), "int8", False))
    return entry is not None and entry[3] is not None


def repacks(ggml_type: GgmlType, activations: Activations) -> bool:
    """Whether a ``GgufMatvecLinear`` of ``ggml_type`` on ``activations`` repacks its rows at
    construction (``repack.REPACK_TYPES`` on 8-bit activations, where the kernels are built)."""
    return (int(ggml_type), activations, True) in _entries(current_level())


def _matvec(x: torch.Tensor, blocks: torch.Tensor, ggml_type: int, out_features: int, activations: str,
            repacked: bool = False) -> torch.Tensor:
    """``quantdispatch::gguf_matvec``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float
    dtype (read as float32); ``W`` the ``[out_features, K]`` weight whose GGML blocks ``blocks`` holds
    (``repacked``: in ``repack.repack``'s layout). With ``"int8"`` activations, more than
    ``FUSED_ROWS`` rows run the prefill GEMM where there is one."""
    entry = _entries(current_level()).get((ggml_type, activations, repacked))
    if entry is None:
        raise ValueError(f"no fused matrix-vector kernel for GGML type {ggml_type} with {activations!r} activations"
                         f"{' on repacked rows' if repacked else ''} here")
    per_block, size, fn, gemm = entry
    m, k = x.shape
    if k % per_block or blocks.numel() != out_features * (k // per_block) * size or blocks.dtype is not torch.uint8 \
            or not x.dtype.is_floating_point:
        raise ValueError(f"GGML type {ggml_type} blocks of {blocks.numel()} bytes ({blocks.dtype}) do not make a "
                         f"[{out_features}, {k}] weight for {x.dtype} activations")
    if x.dtype is not torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    if not blocks.is_contiguous():
        blocks = blocks.contiguous()
    y = torch.empty(m, out_features, dtype=torch.float32)
    run = gemm if gemm is not None and m > FUSED_ROWS else fn
    if run(blocks.data_ptr(), x.data_ptr(), y.data_ptr(), m, out_features, k, threads()):
        raise MemoryError(f"no memory for the 8-bit activations of a [{m}, {k}] input")
    return y


def _matvec_fake(x: torch.Tensor, blocks: torch.Tensor, ggml_type: int, out_features: int, activations: str,
                 repacked: bool = False) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


GGUF_MATVEC: Final = custom_op("gguf_matvec",
                               "(Tensor x, Tensor blocks, int ggml_type, int out_features, str activations, bool repacked=False) -> Tensor",
                               _matvec, _matvec_fake)
"""``torch.ops.quantdispatch.gguf_matvec(x, blocks, ggml_type, out_features, activations, repacked=False)``:
the fused kernels as one op."""


def gguf_matvec(x: torch.Tensor, blocks: torch.Tensor, ggml_type: GgmlType, out_features: int,
                activations: Activations = "float32", repacked: bool = False) -> torch.Tensor:
    """``x @ W.T`` in float32, ``x`` ``[M, K]``, ``W`` the ``[out_features, K]`` weight whose GGML
    blocks ``blocks`` holds (uint8; ``repacked``: in ``repack.repack``'s layout, 8-bit activations
    and ``repack.REPACK_TYPES`` only). Needs ``matvec_kernels()``.

    Raises:
        ValueError: the type has no kernel, or the shapes do not agree.
    """
    _kernels(ggml_type)
    error = _shape_error(ggml_type, blocks, x.shape[-1], out_features)
    if error is not None:
        raise ValueError(error)
    y: torch.Tensor = GGUF_MATVEC(x, blocks, int(ggml_type), out_features, activations, repacked)
    return y


_RELAYOUT_CHUNK: Final = 8 << 20
"""Bytes of whole groups ``_relayout`` moves between two page-outs of its source."""


def _relayout(blocks: torch.Tensor, ggml_type: GgmlType, rows: int, cols: int, *, pack: bool,
              page_out: bool = False) -> torch.Tensor:
    """``repack.repack`` (``pack``) or ``repack.unpack`` of uint8 ``blocks`` in C: a new tensor of
    its shape. With ``page_out``, in chunks of whole groups, each chunk's source pages paged out
    (``_page_out``) once moved: a weight that views the mapped file then adds one chunk, not its
    whole size, to the peak resident set."""
    fn = _kernels(ggml_type).layout[ggml_type][0 if pack else 1]
    src = blocks.contiguous()
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    flat_src, flat_out = src.reshape(-1), out.reshape(-1)
    row_bytes = src.numel() // max(rows, 1)
    step = rows if not page_out else max(ROWS_PER_GROUP, _RELAYOUT_CHUNK // max(row_bytes, 1) // ROWS_PER_GROUP * ROWS_PER_GROUP)
    for first in range(0, rows, step):
        n = min(step, rows - first)
        part = flat_src[first * row_bytes:(first + n) * row_bytes]
        fn(part.data_ptr(), flat_out[first * row_bytes:].data_ptr(), n, cols, threads())
        if page_out:
            _page_out(part)
    return out


def _unpack_rows(blocks: torch.Tensor, ggml_type: int, rows: int, cols: int) -> torch.Tensor:
    """``quantdispatch::gguf_unpack_rows``: ``repack.unpack`` in C, a new tensor of ``blocks``' shape."""
    return _relayout(blocks, GgmlType(ggml_type), rows, cols, pack=False)


def _unpack_rows_fake(blocks: torch.Tensor, ggml_type: int, rows: int, cols: int) -> torch.Tensor:
    return torch.empty_like(blocks)


GGUF_UNPACK_ROWS: Final = custom_op("gguf_unpack_rows", "(Tensor blocks, int ggml_type, int rows, int cols) -> Tensor",
                                    _unpack_rows, _unpack_rows_fake)
"""``torch.ops.quantdispatch.gguf_unpack_rows(blocks, ggml_type, rows, cols)``: a repacked weight's
blocks back in the file's layout (what the dequantizing paths of a repacked module read), one op
for ``torch.compile``."""

_MADV_PAGEOUT: Final = 21


@functools.cache
def _madvise() -> _Fn | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return fn


def _page_out(source: torch.Tensor) -> None:
    """Advise Linux to take this process's resident pages of ``source``'s whole pages out of it
    (``MADV_PAGEOUT``; contents kept: a memory-mapped file's pages are read again from the file
    if touched, anonymous ones are swapped or stay). After repacking a weight that is a view of
    the memory-mapped GGUF file, its file pages would otherwise stay resident while the map lives
    (the whole load, or as long as a tied embedding views the same bytes): twice the weight in
    the peak RSS. Nothing happens where the advice is unknown (kernels before 5.4, not Linux)."""
    madvise = _madvise() if sys.platform.startswith("linux") else None
    if madvise is None or source.numel() == 0:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start = -(-source.data_ptr() // page) * page
    end = (source.data_ptr() + source.numel() * source.element_size()) // page * page
    if end > start:
        madvise(start, end - start, _MADV_PAGEOUT)


class GgufMatvecLinear(GgufLinear):
    """``GgufLinear`` whose few-row forwards (decode) run a fused kernel on the blocks in place;
    more rows (prefill) run, with ``"int8"`` activations, the int8 GEMM where there is one
    (``has_gemm``: AVX-512 VNNI) and the fused kernel otherwise; with ``"float32"`` activations,
    like other devices and autograd, ``GgufLinear``'s path (dequantize, then ``F.linear``).

    ``activations`` picks the arithmetic: ``"float32"`` (``cpu-gguf-matvec``) or ``"int8"``
    (``cpu-gguf-q8dot``). The kernel runs as the op ``quantdispatch::gguf_matvec``. With
    ``"int8"``, a weight of ``repack.REPACK_TYPES`` is repacked by rows at construction
    (``repacked``): ``qweight`` then holds that layout (same size), and ``file_blocks()`` the file's.
    """

    def __init__(self, raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
                 bias: torch.Tensor | None = None, activations: Activations = "float32") -> None:
        _kernels(ggml_type)
        if in_features % BLOCK[ggml_type][0]:
            raise ValueError(f"in_features {in_features} is not a whole number of {ggml_type.name} blocks "
                             f"({BLOCK[ggml_type][0]} weights each)")
        super().__init__(raw, ggml_type, out_features, in_features, bias)
        if not self.qweight.is_contiguous():
            self.qweight = self.qweight.contiguous()
        if self.bias is not None:
            self.bias = self.bias.to(torch.float32)
        self.activations: Activations = activations
        self.repacked = repacks(ggml_type, activations)
        if self.repacked:  # the only copy: the file's layout is made again where a path needs it
            self.qweight = _relayout(self.qweight, ggml_type, out_features, in_features, pack=True, page_out=True)
        # Decided here, not per forward (torch.compile traces the forward): the op runs the GEMM
        # above FUSED_ROWS rows where the level it finds at the call has one, else the decode kernel.
        self.gemm_prefill = activations == "int8" and has_gemm(ggml_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.numel() // self.in_features
        # More rows with int8 activations and no GEMM at this level (AVX2, AVX-512 without VNNI): the
        # fused kernel still, each group of 16 weight rows read once from memory and then from cache
        # for every input row (4096x4096 Q4_0 on AVX2, 1 thread: 2.75x fp32 dense at 16 rows, 1.42x at
        # 512, where dequantizing the weight for F.linear was 0.45x / 0.92x and held a float32 copy).
        prefill = m > FUSED_ROWS and not self.gemm_prefill and self.activations != "int8"
        if prefill or x.device.type != "cpu" or not x.dtype.is_floating_point or x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        y = GGUF_MATVEC(x.reshape(m, self.in_features), self.qweight, self.type_id, self.out_features, self.activations,
                        self.repacked)
        if self.bias is not None:
            y = y + self.bias  # in float32 (the module keeps it so), then one rounding to the activations' dtype
        if x.dtype is not torch.float32:  # one rounding to the activations' dtype (skipped: a no-op .to costs ~1 us)
            y = y.to(x.dtype)
        result: torch.Tensor = y.reshape(*x.shape[:-1], self.out_features)
        return result

    def file_blocks(self) -> torch.Tensor:
        """The blocks in the file's layout: ``qweight``, or a new tensor unpacked from its repacked rows."""
        if not self.repacked:
            return self.qweight
        if self.qweight.device.type != "cpu":
            return unpack(self.qweight, self.ggml_type, self.out_features, self.in_features).view(self.qweight.shape)
        blocks: torch.Tensor = GGUF_UNPACK_ROWS(self.qweight, self.type_id, self.out_features, self.in_features)
        return blocks

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel=fused matvec, activations={self.activations}" + \
            (", rows repacked by 16" if self.repacked else "")


def matvec_linears(activations: Activations = "float32") -> Mapping[GgmlType, PackedLinearFactory]:
    """The packed module of every type with a kernel here (empty where they cannot be built): the
    table ``packed_linear`` takes as ``preferred`` on ``cpu-gguf-matvec`` / ``cpu-gguf-q8dot``."""
    if matvec_kernels() is None:
        return {}

    def make(raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
             bias: torch.Tensor | None) -> GgufMatvecLinear:
        return GgufMatvecLinear(raw, ggml_type, out_features, in_features, bias, activations)

    return dict.fromkeys(MATVEC_TYPES, make)
