"""The native int4, FP8 and NVFP4 kernels at every SIMD level this CPU can run, on 1 and 2 threads.

Each level's build is selected the way a user selects it, through the ``QUANTDISPATCH_CPU_FEATURES``
mask (``avx2,fma`` builds and runs the AVX2 code on an AVX-512 machine; ``none`` the portable C
loops of the FP8 and NVFP4 kernels). Oracle: a float64 product with the weights computed from the
documented formats by torch, never by the kernels' code. Every output is a float32 sum whose only
error is summation order, so each level is held to the float32 bound of a K-term dot product, and
the levels agree with each other within twice that. Threads split output rows, so 1 and 2 threads
give the same bits: the whole op at decode (up to ``FUSED_ROWS`` rows), and the C dequantizers at
prefill (the GEMM after them is torch's, whose bits may depend on its thread count).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.kernels._native import Isa, isa_level
from quantdispatch.kernels._simd import LEVELS
from quantdispatch.kernels.fp4_native import E4M3_TABLE, NVFP4_MATMUL, native_fp4, native_fp4_at
from quantdispatch.kernels.fp8_native import E4M3_VALUES, FP8_MATMUL, native_fp8, native_fp8_at
from quantdispatch.kernels.int4_native import FUSED_ROWS, Q4_MATMUL, native_int4, native_int4_at, pack_q4
from tests.cpu import cpu_mask

_HOST = isa_level()
_MASKS = {"avx2": "avx2,fma", "avx512": "avx2,fma,avx512f", "avx512-vnni": "avx2,fma,avx512f,avx512_vnni"}
RUNNABLE: tuple[Isa, ...] = LEVELS[:LEVELS.index(_HOST) + 1] if _HOST is not None else ()
"""The SIMD levels this CPU runs, lowest first."""

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])

needs_levels = pytest.mark.skipif(not RUNNABLE or native_int4() is None, reason="no SIMD level (or no C compiler) here")

Op = Callable[[torch.Tensor], torch.Tensor]


def _outputs(op: Op, x: torch.Tensor, masks: tuple[str, ...]) -> dict[tuple[str, int], torch.Tensor]:
    """The op's output under each mask, on 1 and 2 threads."""
    threads = torch.get_num_threads()
    found: dict[tuple[str, int], torch.Tensor] = {}
    try:
        for mask in masks:
            with cpu_mask(mask):
                for n in (1, 2):
                    torch.set_num_threads(n)
                    found[(mask, n)] = op(x)
    finally:
        torch.set_num_threads(threads)
    return found


def _check(found: dict[tuple[str, int], torch.Tensor], x: torch.Tensor, weight: torch.Tensor) -> None:
    """Same bits on 1 and 2 threads (decode); each level within the float32 bound of the float64 product."""
    exact = x.double() @ weight.double().T
    bound = 2 * weight.shape[1] * torch.finfo(torch.float32).eps * (x.double().abs() @ weight.double().abs().T) + 1e-30
    for (mask, n), got in found.items():
        assert x.shape[0] > FUSED_ROWS or torch.equal(got, found[(mask, 1)]), f"{mask}: {n} threads differ from 1"
        excess = (got.double() - exact).abs() - bound
        assert excess.max().item() <= 0, f"{mask}: worst output {divmod(int(excess.argmax()), weight.shape[0])}"


@st.composite
def int4_cases(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    group = draw(st.sampled_from((32, 64, 128, 256)))
    k = group * draw(st.integers(1, max(1, 640 // group)))
    return draw(st.integers(1, 12)), draw(st.integers(1, 40)), k, group, draw(st.integers(0, 2**16))


@needs_levels
@settings(max_examples=25)
@given(int4_cases(), st.sampled_from((torch.float32, torch.bfloat16)))
def test_int4_levels_and_threads_agree(case: tuple[int, int, int, int, int], dtype: torch.dtype) -> None:
    """q4_matmul (fused decode up to 8 rows, float32 prefill above): every level, 1 and 2 threads.
    bf16 activations at decode are read in place (AVX512-BF16 products of the same exact values);
    they are held to the same float32 bound as float32 ones, the activations being exact either way."""
    m, n, k, group, seed = case
    if dtype is torch.bfloat16 and m > FUSED_ROWS:
        m = FUSED_ROWS  # bf16 prefill rounds weights to bf16 (test_custom_ops holds it to that)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g)
    scale = torch.rand(n, k // group, generator=g) * 0.02
    offset = -8 * scale + torch.randn(n, k // group, generator=g) * 0.001
    weight = codes.float() * scale.repeat_interleave(group, 1) + offset.repeat_interleave(group, 1)
    x = torch.randn(m, k, generator=g).to(dtype)
    packed = pack_q4(codes)
    _check(_outputs(lambda x: Q4_MATMUL(x, packed, scale, offset, group), x, tuple(_MASKS[v] for v in RUNNABLE)), x, weight)


@st.composite
def fp4_cases(draw: st.DrawFn) -> tuple[int, int, int, int]:
    return draw(st.integers(1, 12)), draw(st.integers(1, 40)), 16 * draw(st.integers(1, 24)), draw(st.integers(0, 2**16))


@pytest.mark.skipif(native_fp4() is None, reason="the native FP4 kernel cannot be built here")
@settings(max_examples=25)
@given(fp4_cases())
def test_nvfp4_levels_and_threads_agree(case: tuple[int, int, int, int]) -> None:
    """nvfp4_matmul at every level and the portable loops (mask ``none``), 1 and 2 threads."""
    m, n, k, seed = case
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
    scale8 = torch.randint(0, 0x7F, (n, k // 16), dtype=torch.uint8, generator=g)  # positive E4M3 bytes, no NaN (0x7F)
    tensor_scale = torch.rand(1, generator=g) + 0.25
    divide = seed % 2 == 0  # compressed-tensors' global scale divides, ModelOpt's weight_scale_2 multiplies
    e4m3 = E4M3_TABLE[scale8.long()]
    scale = e4m3 / tensor_scale if divide else e4m3 * tensor_scale  # float32, as the C table computes it
    codes = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(n, k).long()  # low nibble first
    weight = E2M1[codes] * scale.repeat_interleave(16, 1)
    x = torch.randn(m, k, generator=g)
    _check(_outputs(lambda x: NVFP4_MATMUL(x, packed, scale8, tensor_scale, divide), x, ("none", *(_MASKS[v] for v in RUNNABLE))),
           x, weight)


@st.composite
def fp8_cases(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    n, k = draw(st.integers(1, 40)), draw(st.integers(1, 300))
    return draw(st.integers(1, 12)), n, k, draw(st.integers(1, n)), draw(st.sampled_from((k, 1, 16, 37, 128))), draw(st.integers(0, 2**16))


@pytest.mark.skipif(native_fp8() is None, reason="the native FP8 kernel cannot be built here")
@settings(max_examples=25)
@given(fp8_cases())
def test_fp8_levels_and_threads_agree(case: tuple[int, int, int, int, int, int]) -> None:
    """fp8_matmul at every level and the table path (mask ``none``), any block shape, 1 and 2 threads."""
    m, n, k, rows, cols, seed = case
    g = torch.Generator().manual_seed(seed)
    weight8 = torch.randint(0, 256, (n, k), dtype=torch.uint8, generator=g)
    weight8[(weight8 & 0x7F) == 0x7F] = 0  # e4m3 has no NaN bytes in a checkpoint (the loader refuses them)
    scale = torch.rand(-(-n // rows), -(-k // cols), generator=g)
    weight = E4M3_VALUES[weight8.long()] * scale.repeat_interleave(rows, 0)[:n].repeat_interleave(cols, 1)[:, :k]
    x = torch.randn(m, k, generator=g)
    _check(_outputs(lambda x: FP8_MATMUL(x, weight8, scale, rows, cols, False), x, ("none", *(_MASKS[v] for v in RUNNABLE))), x, weight)


def _same_bits(call: Callable[[torch.Tensor, int], object], size: int, dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``call(out, threads)`` writes every element of ``out`` and the same bits on 1 and 2 threads."""
    one, two = torch.full((size,), float("nan"), dtype=dtype), torch.full((size,), float("nan"), dtype=dtype)
    call(one, 1)
    call(two, 2)
    return not one.isnan().any().item() and torch.equal(one, two)


@needs_levels
@pytest.mark.parametrize("level", RUNNABLE)
@pytest.mark.parametrize("m", [1, 5])
def test_large_layers_split_rows_over_threads_with_the_same_bits(level: Isa, m: int) -> None:
    """Layers big enough to run on two threads (the kernels stay on one below ~65k weights): every C
    entry point, fused and dequantizing, gives the same bits on 1 and 2 threads at every level."""
    g = torch.Generator().manual_seed(3)
    n, k, group = 512, 1024, 128
    codes = pack_q4(torch.randint(0, 16, (n, k), generator=g))
    scale, offset = torch.rand(n, k // group, generator=g), torch.randn(n, k // group, generator=g)
    packed4, scale4 = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g), torch.randint(0, 0x7F, (n, k // 16), dtype=torch.uint8,
                                                                                                          generator=g)
    g4 = torch.tensor([0.75])
    weight8, scale8 = torch.randint(0, 0x7E, (n, k), dtype=torch.uint8, generator=g), torch.rand(n // 128, k // 128, generator=g)
    x = torch.randn(m, k, generator=g)
    xs = x.view(m, k // group, group).sum(2)
    q4, fp4, fp8 = native_int4_at(level), native_fp4_at(level), native_fp8_at(level)
    assert q4 is not None and fp4 is not None and fp8 is not None
    assert _same_bits(lambda y, t: q4.q4_matmul(codes.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), xs.data_ptr(),
                                                y.data_ptr(), m, n, k, group, t), m * n)
    assert _same_bits(lambda y, t: fp4.nvfp4_matvec(packed4.data_ptr(), scale4.data_ptr(), E4M3_TABLE.data_ptr(), g4.data_ptr(),
                                                       x.data_ptr(), y.data_ptr(), 1, m, n, k, t), m * n)
    assert _same_bits(lambda y, t: fp8.fp8_matvec(weight8.data_ptr(), scale8.data_ptr(), E4M3_VALUES.data_ptr(), x.data_ptr(),
                                                  y.data_ptr(), m, n, k, 128, 128, 0, t), m * n)
    assert _same_bits(lambda y, t: q4.q4_dequant(codes.data_ptr(), scale.data_ptr(), offset.data_ptr(), y.data_ptr(), 0, n, k, group, t),
                      n * k)
    assert _same_bits(lambda y, t: q4.q4_dequant_bf16(codes.data_ptr(), scale.data_ptr(), offset.data_ptr(), y.data_ptr(), 0, n, k, group,
                                                      t), n * k, torch.bfloat16)
    assert _same_bits(lambda y, t: fp4.nvfp4_dequant(packed4.data_ptr(), scale4.data_ptr(), E4M3_TABLE.data_ptr(), g4.data_ptr(), y.data_ptr(),
                                                        0, 0, n, k, t), n * k)
    assert _same_bits(lambda y, t: fp8.fp8_dequant(weight8.data_ptr(), scale8.data_ptr(), E4M3_VALUES.data_ptr(), y.data_ptr(), 0, n, k,
                                                   128, 128, 0, t), n * k)
