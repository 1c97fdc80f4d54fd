"""The GGUF kernels' threads and SIMD levels: same bits whatever the thread count or the level.

Every entry point splits output rows between threads (each output computed by one thread with
the same code), so 1 and 2 threads agree bit for bit. The 8-bit kernels compute, at each level
(AVX2; AVX-512BW; AVX-512 VNNI), the exact int32 sum of each 4-byte lane of a run of 32 and then
the same float operations in the same order, so the levels agree bit for bit too. The prefill
GEMM (VNNI) has the same exact int32 per run and the same scales, summed in another order: it
stays within float32 summation error of the 8-bit decode kernel on the same 8-bit activations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from quantdispatch.gguf.types import BLOCK, GgmlType
from quantdispatch.kernels._native import Isa
from quantdispatch.kernels.gguf.matvec import (
    FUSED_ROWS,
    GEMM_TYPES,
    MATVEC_TYPES,
    Activations,
    GgufMatvecLinear,
    MatvecKernels,
    current_level,
    gguf_matvec,
    has_gemm,
    matvec_kernels,
)

pytestmark = pytest.mark.skipif(matvec_kernels() is None, reason="the fused GGUF kernels cannot be built here")

TYPES = tuple(t for t in GgmlType if t in MATVEC_TYPES)
LEVELS: tuple[Isa, ...] = tuple(level for level in get_args(Isa) if matvec_kernels(level) is not None)
HALVES: dict[GgmlType, tuple[int, ...]] = {
    GgmlType.Q4_0: (0,), GgmlType.Q4_1: (0, 2), GgmlType.Q4_K: (0, 2), GgmlType.Q8_0: (0,), GgmlType.Q6_K: (208,),
}


def _blocks(ggml_type: GgmlType, rows: int, cols: int, seed: int) -> torch.Tensor:
    """Random blocks (every code and packed scale), float16 scales finite and small."""
    per, size = BLOCK[ggml_type]
    n = rows * cols // per
    rng = np.random.default_rng(seed)
    b: NDArray[Any] = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for at in HALVES[ggml_type]:
        b[:, at:at + 2] = (rng.standard_normal(n) * 0.02).astype(np.float16).reshape(n, 1).view(np.uint8)
    return torch.from_numpy(b.reshape(-1))


def _run(kernels: MatvecKernels, kind: str, t: GgmlType, blocks: torch.Tensor, x: torch.Tensor, rows: int,
         threads: int) -> torch.Tensor:
    fn = {"float32": kernels.float32, "int8": kernels.int8, "gemm": kernels.gemm}[kind][t]
    y = torch.full((x.shape[0], rows), float("nan"))
    assert fn(blocks.data_ptr(), x.data_ptr(), y.data_ptr(), x.shape[0], rows, x.shape[1], threads) in (None, 0)
    return y


def _kernels(level: Isa | None = None) -> MatvecKernels:
    kernels = matvec_kernels(level)
    assert kernels is not None
    return kernels


@settings(max_examples=30)
@given(t=st.sampled_from(TYPES), activations=st.sampled_from(get_args(Activations)), rows=st.integers(260, 330),
       m=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_one_thread_equals_two(t: GgmlType, activations: str, rows: int, m: int, seed: int) -> None:
    """Big enough to be split (the kernels stay on one thread below ~2^18 multiply-adds)."""
    blocks, x = _blocks(t, rows, 1024, seed), torch.randn(m, 1024, generator=torch.Generator().manual_seed(seed))
    kernels = _kernels()
    assert torch.equal(_run(kernels, activations, t, blocks, x, rows, 1), _run(kernels, activations, t, blocks, x, rows, 2))


@pytest.mark.skipif(not _kernels().gemm if matvec_kernels() is not None else True, reason="no prefill GEMM here (AVX-512 VNNI)")
@settings(max_examples=12)
@given(t=st.sampled_from(sorted(GEMM_TYPES)), rows=st.integers(65, 200), m=st.integers(FUSED_ROWS + 1, 20),
       seed=st.integers(0, 2**32 - 1))
def test_gemm_one_thread_equals_two(t: GgmlType, rows: int, m: int, seed: int) -> None:
    """The GEMM splits panels of 64 rows between threads: any thread count, the same bits."""
    blocks, x = _blocks(t, rows, 512, seed), torch.randn(m, 512, generator=torch.Generator().manual_seed(seed))
    kernels = _kernels()
    assert torch.equal(_run(kernels, "gemm", t, blocks, x, rows, 1), _run(kernels, "gemm", t, blocks, x, rows, 2))


@pytest.mark.skipif(len(LEVELS) < 2, reason="one SIMD level here")
@settings(max_examples=40)
@given(t=st.sampled_from(TYPES), rows=st.integers(1, 40), supers=st.integers(1, 4), m=st.integers(1, FUSED_ROWS),
       seed=st.integers(0, 2**32 - 1))
def test_every_level_gives_the_same_bits(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """AVX2, AVX-512 and AVX-512 VNNI builds: equal outputs in both arithmetics (odd block counts
    take the 256-bit tail of the 512-bit loops)."""
    cols = 256 * supers
    blocks, x = _blocks(t, rows, cols, seed), torch.randn(m, cols, generator=torch.Generator().manual_seed(seed))
    for activations in get_args(Activations):
        outs = [_run(_kernels(level), activations, t, blocks, x, rows, 1) for level in LEVELS]
        assert all(torch.equal(outs[0], y) for y in outs[1:]), activations


def test_the_mask_picks_the_level_in_a_fresh_process() -> None:
    """``QUANTDISPATCH_CPU_FEATURES=avx2,fma`` on this CPU builds and runs the AVX2 code; its 8-bit
    outputs equal this process's level's, bit for bit."""
    t, rows, cols = GgmlType.Q6_K, 24, 512
    blocks, x = _blocks(t, rows, cols, 3), torch.randn(2, cols, generator=torch.Generator().manual_seed(3))
    here = gguf_matvec(x, blocks, t, rows, "int8")
    code = ("import sys, torch; from quantdispatch.kernels.gguf.matvec import current_level, gguf_matvec;"
            "from quantdispatch.gguf.types import GgmlType;"
            "b, x = torch.load(sys.argv[1]); print(current_level());"
            "torch.save(gguf_matvec(x, b, GgmlType.Q6_K, 24, 'int8'), sys.argv[2])")
    root = Path(__file__).resolve().parents[2]
    with __import__("tempfile").TemporaryDirectory() as tmp:
        src, out = Path(tmp, "in.pt"), Path(tmp, "out.pt")
        torch.save((blocks, x), src)
        env = {**os.environ, "QUANTDISPATCH_CPU_FEATURES": "avx2,fma", "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", code, str(src), str(out)], env=env, capture_output=True, text=True,
                              timeout=300, check=True)
        assert done.stdout.strip().splitlines()[-1] == "avx2"
        assert torch.equal(torch.load(out), here)


def _q8(x: torch.Tensor) -> torch.Tensor:
    """The activations as the 8-bit kernels code them (per run of 32: max/127, round half away)."""
    runs = x.reshape(-1, 32)
    d = runs.abs().amax(1) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    f = runs * inv[:, None]
    return (torch.trunc(f + torch.where(f < 0, -0.5, 0.5)).double() * d[:, None].double()).reshape(x.shape)


@pytest.mark.skipif(not has_gemm(GgmlType.Q4_0) if matvec_kernels() is not None else True, reason="no prefill GEMM here")
@settings(max_examples=30)
@given(t=st.sampled_from(sorted(GEMM_TYPES)), rows=st.integers(1, 80), supers=st.integers(1, 3),
       m=st.integers(FUSED_ROWS + 1, 40), seed=st.integers(0, 2**32 - 1))
def test_gemm_is_the_8bit_arithmetic(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """The prefill GEMM is W @ q8(x) up to float32 summation error: the same exact int32 per run
    (unit of 16 for Q6_K) and the same float scales as the decode kernel, so its distance from
    the decode kernel's output is a few float32 roundings of sum |q8(x)| |W|."""
    cols = 256 * supers
    blocks, x = _blocks(t, rows, cols, seed), torch.randn(m, cols, generator=torch.Generator().manual_seed(seed))
    kernels = _kernels()
    y, decode = _run(kernels, "gemm", t, blocks, x, rows, 1), _run(kernels, "int8", t, blocks, x, rows, 1)
    w = _dense(t, blocks, rows, cols)
    xq = _q8(x)
    bound = float((xq.abs() @ w.abs().T).max()) * 16 * 2.0**-24
    assert float((y.double() - xq @ w.T).abs().max()) <= bound
    assert float((y.double() - decode.double()).abs().max()) <= 2 * bound


def _dense(t: GgmlType, blocks: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    from quantdispatch.kernels.gguf.dequant import dequantize

    return dequantize(blocks, t, (rows, cols), torch.float32).double()


@pytest.mark.skipif(not has_gemm(GgmlType.Q4_K) if matvec_kernels() is not None else True, reason="no prefill GEMM here")
def test_int8_module_runs_the_gemm_at_prefill() -> None:
    """A q8dot module above FUSED_ROWS rows is the op's GEMM plus bias; a float32 module keeps the
    dequantize-then-GEMM path."""
    torch.set_num_threads(1)
    t, rows, cols = GgmlType.Q4_K, 40, 512
    blocks, bias = _blocks(t, rows, cols, 9), torch.randn(rows)
    module = GgufMatvecLinear(blocks, t, rows, cols, bias, activations="int8")
    x = torch.randn(2, FUSED_ROWS + 7, cols)
    with torch.no_grad():
        got = module(x)
    expected = _run(_kernels(), "gemm", t, blocks, x.reshape(-1, cols), rows, 1) + bias
    assert torch.equal(got, expected.reshape(2, FUSED_ROWS + 7, rows))


def test_current_level_is_the_mask_s() -> None:
    """The op's level follows QUANTDISPATCH_CPU_FEATURES (cached per value of it)."""
    assert current_level() == LEVELS[-1] or os.environ.get("QUANTDISPATCH_CPU_FEATURES") is not None
