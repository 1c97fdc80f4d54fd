"""The native MXFP4 op (``quantdispatch::mxfp4_matmul``): opcheck, and its products against a float64
product of the reference weights, Transformers' ``convert_moe_packed_tensors``, never the kernel's own
code. The fused loop (up to ``FUSED_ROWS`` rows) sums in float32 in its own order, so it is held to
float32 rounding of the float64 product; the prefill path's weights are exact, so it is a float32
GEMM of the reference weights, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

from quantdispatch.kernels.fp4_native import FUSED_ROWS, native_fp4
from quantdispatch.kernels.mxfp4 import MXFP4_MATMUL
from quantdispatch.layouts.mxfp4 import mxfp4_rows

torch.set_num_threads(1)
needs_fp4 = pytest.mark.skipif(native_fp4() is None, reason="the native FP4 kernel cannot be built here (no C compiler?)")


def _args(m: int, n: int, groups: int, dtype: torch.dtype, seed: int, low: int = 110, high: int = 135,
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, blocks ``[N, G, 16]``, E8M0 scales ``[N, G]`` in ``[low, high)``, and the reference weight ``[N, K]``."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (n, groups, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(low, high, (n, groups), dtype=torch.uint8, generator=g)
    weight = convert_moe_packed_tensors(blocks[None], scales[None], dtype=torch.float32)[0].T  # [N, K]
    x = torch.randn(m, groups * 32, generator=g).to(dtype)
    return x, blocks, scales, weight


def _assert_float32_sum(got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """``got`` is ``x @ weight.T`` up to float32 summation error (K terms, each rounded once)."""
    expected = x.double() @ weight.double().T
    bound = (x.double().abs() @ weight.double().abs().T) * (x.shape[1] + 2) * 2.0**-24
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert bool(((got.double() - expected).abs() <= bound + 1e-30).all())


@needs_fp4
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("m", "n", "groups"), [(1, 16, 2), (3, 40, 4), (FUSED_ROWS, 24, 8), (12, 40, 4)])
def test_opcheck_and_values(m: int, n: int, groups: int, dtype: torch.dtype) -> None:
    """Decode (the fused loop) and prefill (dequantized blocks + GEMM): opcheck passes (the Meta fake
    gives the shape), and the result is the product with Transformers' dequantized weights."""
    x, blocks, scales, weight = _args(m, n, groups, dtype, seed=m * groups + n)
    torch.library.opcheck(MXFP4_MATMUL, (x, blocks, scales))
    got = MXFP4_MATMUL(x, blocks, scales)
    _assert_float32_sum(got, x, weight)
    if m > FUSED_ROWS:
        assert torch.equal(got, x.float() @ weight.T)


@needs_fp4
@given(m=st.integers(1, 12), n=st.integers(1, 48), groups=st.integers(1, 6), seed=st.integers(0, 2**16),
       low=st.integers(0, 140))
def test_any_shape_and_scale_is_the_reference_product(m: int, n: int, groups: int, seed: int, low: int) -> None:
    """Over shapes, token counts on both paths and scale bytes from 0 (2**-127, subnormal) up: the op
    is the product with Transformers' dequantized weights, and the portable rows are those weights."""
    x, blocks, scales, weight = _args(m, n, groups, torch.float32, seed, low=low, high=low + 10)
    assert torch.equal(mxfp4_rows(blocks, scales, torch.float32), weight)
    _assert_float32_sum(MXFP4_MATMUL(x, blocks, scales), x, weight)


@needs_fp4
def test_the_op_refuses_what_it_would_read_out_of_bounds() -> None:
    """Sizes or dtypes that disagree are a ValueError, never an out-of-bounds read."""
    x, blocks, scales, _ = _args(2, 16, 2, torch.float32, seed=1)
    for bad in ((x, blocks[:, :1], scales), (x, blocks, scales[:, :1]), (x[:, :40], blocks, scales),
                (x, blocks, scales.float()), (x, blocks.to(torch.int8), scales)):
        with pytest.raises(ValueError, match="mxfp4_matmul needs"):
            MXFP4_MATMUL(*bad)


def test_the_op_is_reachable_by_name() -> None:
    """The handle the experts module calls is ``torch.ops.quantdispatch.mxfp4_matmul``."""
    assert torch.ops.quantdispatch.mxfp4_matmul.default is MXFP4_MATMUL
    assert str(MXFP4_MATMUL) == "quantdispatch.mxfp4_matmul.default"
