"""Rows repacked in groups of 16 for the 8-bit decode kernels (``kernels/gguf/repack.py``, ``rx_*``).

The layout is a permutation of the file's bytes that ``unpack`` inverts; the repacked kernels
compute the 8-bit arithmetic (``W @ q8(x)``, the activations coded per run of 32) up to float32
summation error, give the same bits at every SIMD level and thread count, and the prefill GEMM
on repacked rows equals the one on the file's rows bit for bit. The reference is the dense
weight from ``dequantize`` (itself checked against gguf-py) times the activations as the 8-bit
kernels code them, in float64.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import warnings
from pathlib import Path
from typing import get_args

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.gguf.types import BLOCK, GgmlType
from quantdispatch.kernels._native import Isa
from quantdispatch.kernels.gguf.dequant import dequantize
from quantdispatch.kernels.gguf.matvec import FUSED_ROWS, GgufMatvecLinear, MatvecKernels, gguf_matvec, matvec_kernels, repacks
from quantdispatch.kernels.gguf.repack import REPACK_TYPES, ROWS_PER_GROUP, repack, unpack

from .test_gguf_levels import _blocks, _q8, _run

pytestmark = pytest.mark.skipif(matvec_kernels() is None, reason="the fused GGUF kernels cannot be built here")

TYPES = sorted(REPACK_TYPES)
LEVELS: tuple[Isa, ...] = tuple(level for level in get_args(Isa) if matvec_kernels(level) is not None)


def _kernels(level: Isa | None = None) -> MatvecKernels:
    kernels = matvec_kernels(level)
    assert kernels is not None
    return kernels


def _repacked(kernels: MatvecKernels, t: GgmlType, packed: torch.Tensor, x: torch.Tensor, rows: int, threads: int) -> torch.Tensor:
    y = torch.full((x.shape[0], rows), float("nan"))
    assert kernels.repacked[t](packed.data_ptr(), x.data_ptr(), y.data_ptr(), x.shape[0], rows, x.shape[1], threads) == 0
    return y


@settings(max_examples=60)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 50), supers=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_unpack_inverts_repack(t: GgmlType, rows: int, supers: int, seed: int) -> None:
    """Any bytes: ``unpack(repack(b)) == b``; repack only moves bytes (same size and byte counts),
    and rows past the last whole group stay where the file has them."""
    cols = 256 * supers
    blocks = _blocks(t, rows, cols, seed)
    packed = repack(blocks, t, rows, cols)
    assert packed.shape == blocks.shape and packed.dtype == torch.uint8
    assert torch.equal(torch.bincount(packed, minlength=256), torch.bincount(blocks, minlength=256))
    head = rows // ROWS_PER_GROUP * ROWS_PER_GROUP * cols // BLOCK[t][0] * BLOCK[t][1]
    assert torch.equal(packed[head:], blocks[head:])
    if head:
        assert not torch.equal(packed[:head], blocks[:head])
    assert torch.equal(unpack(packed, t, rows, cols), blocks)


@settings(max_examples=40)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 50), supers=st.integers(1, 3), threads=st.integers(1, 2),
       seed=st.integers(0, 2**32 - 1))
def test_c_layout_is_the_torch_one(t: GgmlType, rows: int, supers: int, threads: int, seed: int) -> None:
    """The modules repack and unpack with ``rp_*``/``ru_*`` (C): the same bytes as ``repack``/``unpack``."""
    cols = 256 * supers
    blocks = _blocks(t, rows, cols, seed)
    pack, back = _kernels().layout[t]
    packed, unpacked = torch.empty_like(blocks), torch.empty_like(blocks)
    pack(blocks.data_ptr(), packed.data_ptr(), rows, cols, threads)
    assert torch.equal(packed, repack(blocks, t, rows, cols))
    back(packed.data_ptr(), unpacked.data_ptr(), rows, cols, threads)
    assert torch.equal(unpacked, blocks)


def test_repack_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="cannot be repacked"):
        repack(torch.zeros(10, dtype=torch.uint8), GgmlType.Q4_0, 16, 32)
    with pytest.raises(ValueError, match="cannot be repacked"):
        repack(torch.zeros(18, dtype=torch.uint8), GgmlType.Q4_1, 1, 32)


@settings(max_examples=40)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 70), supers=st.integers(1, 3), m=st.integers(1, FUSED_ROWS),
       seed=st.integers(0, 2**32 - 1))
def test_repacked_decode_is_the_8bit_arithmetic(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """Odd row counts (a tail past the last group of 16), several input rows: the output is
    ``q8(x) @ W.T`` (dense ``W`` from ``dequantize``, float64) within 16 float32 roundings of
    ``|q8(x)| @ |W|.T``, and within twice that of the row kernel on the file's layout."""
    cols = 256 * supers
    blocks, x = _blocks(t, rows, cols, seed), torch.randn(m, cols, generator=torch.Generator().manual_seed(seed))
    y = _repacked(_kernels(), t, repack(blocks, t, rows, cols), x, rows, 1)
    w = dequantize(blocks, t, (rows, cols), torch.float32).double()
    xq = _q8(x)
    bound = (xq.abs() @ w.abs().T) * 16 * 2.0**-24
    assert bool(((y.double() - xq @ w.T).abs() <= bound).all())
    rows_kernel = _run(_kernels(), "int8", t, blocks, x, rows, 1)
    assert bool(((y.double() - rows_kernel.double()).abs() <= 2 * bound).all())


@pytest.mark.skipif(len(LEVELS) < 2, reason="one SIMD level here")
@settings(max_examples=30)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 40), supers=st.integers(1, 3), m=st.integers(1, FUSED_ROWS),
       seed=st.integers(0, 2**32 - 1))
def test_repacked_levels_give_the_same_bits(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """The same repacked bytes at AVX2 (two 256-bit halves per group), AVX-512 and VNNI: equal outputs."""
    cols = 256 * supers
    blocks, x = _blocks(t, rows, cols, seed), torch.randn(m, cols, generator=torch.Generator().manual_seed(seed))
    packed = repack(blocks, t, rows, cols)
    outs = [_repacked(_kernels(level), t, packed, x, rows, 1) for level in LEVELS]
    assert all(torch.equal(outs[0], y) for y in outs[1:])


@settings(max_examples=15)
@given(t=st.sampled_from(TYPES), rows=st.integers(260, 330), m=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_repacked_one_thread_equals_two(t: GgmlType, rows: int, m: int, seed: int) -> None:
    blocks, x = _blocks(t, rows, 1024, seed), torch.randn(m, 1024, generator=torch.Generator().manual_seed(seed))
    packed = repack(blocks, t, rows, 1024)
    assert torch.equal(_repacked(_kernels(), t, packed, x, rows, 1), _repacked(_kernels(), t, packed, x, rows, 2))


@pytest.mark.skipif(not _kernels().repacked_gemm if matvec_kernels() is not None else True, reason="no prefill GEMM here")
@settings(max_examples=15)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 150), m=st.integers(FUSED_ROWS + 1, 20), seed=st.integers(0, 2**32 - 1))
def test_repacked_gemm_equals_the_file_gemm(t: GgmlType, rows: int, m: int, seed: int) -> None:
    """The prefill GEMM unpacks each group to the file's layout first: the same bits as on the
    file's rows, any thread count (this also checks matvec.c's region table against repack.py's)."""
    blocks, x = _blocks(t, rows, 512, seed), torch.randn(m, 512, generator=torch.Generator().manual_seed(seed))
    packed, kernels = repack(blocks, t, rows, 512), _kernels()
    expected = _run(kernels, "gemm", t, blocks, x, rows, 1)
    for threads in (1, 2):
        y = torch.full((m, rows), float("nan"))
        assert kernels.repacked_gemm[t](packed.data_ptr(), x.data_ptr(), y.data_ptr(), m, rows, 512, threads) == 0
        assert torch.equal(y, expected)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_int8_module_keeps_one_repacked_copy(t: GgmlType) -> None:
    """A q8dot module repacks its rows in place of the file's (same size); its dense weight,
    decode, and torch paths (autograd) read the same weight as the file's blocks."""
    torch.set_num_threads(1)
    rows, cols = 37, 512
    blocks, bias = _blocks(t, rows, cols, 4), torch.randn(rows)
    module = GgufMatvecLinear(blocks, t, rows, cols, bias, activations="int8")
    assert module.repacked and repacks(t, "int8") and not repacks(t, "float32")
    assert module.qweight.numel() == blocks.numel()
    assert not torch.equal(module.qweight.reshape(-1), blocks)
    assert torch.equal(module.file_blocks().reshape(-1), blocks)
    dense = dequantize(blocks, t, (rows, cols), torch.float32)
    assert torch.equal(module.dequantize(), dense)
    x = torch.randn(2, cols)
    with torch.no_grad():
        decoded = module(x)
    expected = _run(_kernels(), "int8", t, blocks, x, rows, 1) + bias
    assert torch.allclose(decoded, expected, rtol=1e-5, atol=1e-3 * float(expected.abs().max()))
    assert torch.equal(gguf_matvec(x, module.qweight, t, rows, "int8", repacked=True) + bias, decoded)
    xg = x.clone().requires_grad_(True)
    assert torch.allclose(module(xg), x @ dense.T + bias, rtol=1e-5, atol=1e-5 * float(dense.abs().max()) * cols)
    assert "repacked" in repr(module)
    assert not GgufMatvecLinear(blocks, t, rows, cols, None, activations="float32").repacked


def _resident_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _pageout_known() -> bool:
    """Whether this kernel takes MADV_PAGEOUT (Linux 5.4 and later)."""
    if not sys.platform.startswith("linux"):
        return False
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.restype, madvise.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with mmap.mmap(-1, mmap.PAGESIZE) as page:
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        known = bool(madvise(address, mmap.PAGESIZE, 21) == 0)
        del address
    return known


@pytest.mark.skipif(not _pageout_known(), reason="no MADV_PAGEOUT here (Linux before 5.4, or not Linux)")
def test_repacking_a_mapped_file_keeps_one_copy_resident(tmp_path: Path) -> None:
    """A weight that views a read-only memory-mapped file (as the loader hands them over) is
    repacked, then its file pages are paged out of this process: while the map stays alive, the
    resident set grows by about one copy of the weight, not two."""
    torch.set_num_threads(1)
    t, rows, cols = GgmlType.Q4_K, 2048, 4096
    size = rows * cols // BLOCK[t][0] * BLOCK[t][1]                   # 4.5 MiB
    path = tmp_path / "w.bin"
    path.write_bytes(_blocks(t, rows, cols, 1).numpy().tobytes())
    GgufMatvecLinear(_blocks(t, 16, cols, 2), t, 16, cols, None, activations="int8")  # the library built, scratch warm
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
            raw = torch.frombuffer(view, dtype=torch.uint8)
        before = _resident_mib()
        module = GgufMatvecLinear(raw, t, rows, cols, None, activations="int8")
        grown = _resident_mib() - before
        assert torch.equal(module.file_blocks().reshape(-1), raw)
        del raw
        view.release()
    assert grown < 1.5 * size / 2**20


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_prefill_without_a_gemm_runs_the_fused_kernel_row_by_row(t: GgmlType) -> None:
    """On a level with no int8 GEMM (AVX2, as the mask makes it), more than ``FUSED_ROWS`` rows run the
    fused decode kernel over all rows at once: each output is the same bits as that row's own decode
    call, and within the 8-bit arithmetic's bound of the dense product (no float32 copy of the weight)."""
    from tests.cpu import cpu_mask

    rows, cols, m = 40, 512, FUSED_ROWS + 5
    blocks = _blocks(t, rows, cols, 7)
    x = torch.randn(m, cols, generator=torch.Generator().manual_seed(3))
    with cpu_mask("avx2,fma"):
        if matvec_kernels() is None:
            pytest.skip("the AVX2 build of the fused kernels cannot be made here")
        layer = GgufMatvecLinear(blocks.reshape(-1), t, rows, cols, activations="int8")
        assert not layer.gemm_prefill
        with torch.inference_mode():
            whole = layer(x)
            one_by_one = torch.cat([layer(x[i:i + 1]) for i in range(m)])
    assert torch.equal(whole, one_by_one)
    dense = dequantize(blocks.reshape(-1), t, (rows, cols))
    exact = _q8(x).double() @ dense.double().T
    bound = 16 * 2.0**-24 * (_q8(x).double().abs() @ dense.double().abs().T) + 1e-6
    assert bool(((whole.double() - exact).abs() <= bound).all())
