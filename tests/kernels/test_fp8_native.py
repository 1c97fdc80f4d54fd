"""The native FP8 kernel (``cpu-e4m3``) against the layouts' exact float32 weights.

Every e4m3 byte's value as the C vector path computes it (sign, exponent and mantissa moved into a
half) must be torch's own conversion, exactly; the fused decode loop and the prefill path must equal
``x @ W.T`` of the layout's dequantized weight within float32 summation error; the op passes
``opcheck`` (schema, fake tensor, AOTAutograd); a checkpoint loads on it and its logits match
the portable module's (``tests/loading/test_load_fp8.py``). Skips, saying so, where the C library
cannot be built.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.kernels.fp8_native import FP8_MATMUL, Fp8Blocks, fp8_matmul, native_fp8
from quantdispatch.layouts import Fp8Scaled, Fp8ScaleInv

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(native_fp8() is None, reason="the native FP8 kernel cannot be built here (no C compiler, or not Linux)")


def _bytes(n: int, k: int, seed: int) -> torch.Tensor:
    raw = torch.randint(0, 254, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.int16)
    return torch.where(raw >= 0x7F, raw + 1, raw).to(torch.uint8)  # 0x7f and 0xff are NaN


def test_every_finite_byte_is_read_exactly() -> None:
    """Row r holds byte r in column 0 (and zeros in the other 15): with x = e0 each output is that byte's value times the scale, exactly."""
    finite = torch.tensor([b for b in range(256) if b not in (0x7F, 0xFF)], dtype=torch.uint8)
    weight = torch.zeros(len(finite), 16, dtype=torch.uint8)
    weight[:, 0] = finite
    x = torch.zeros(1, 16)
    x[0, 0] = 1.0
    scale = torch.full((1, 1), 3.0)
    y = fp8_matmul(x, Fp8Blocks(weight, scale, len(finite), 16))
    assert torch.equal(y[0], finite.view(torch.float8_e4m3fn).to(torch.float32) * 3.0)


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([1, 2, 8, 9, 17]), n=st.integers(1, 70), k=st.integers(1, 90), bn=st.integers(1, 40), bk=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_matmul_is_the_dequantized_weights_product(m: int, n: int, k: int, bn: int, bk: int, seed: int) -> None:
    """Decode (fused) and prefill (dequantized blocks, torch's GEMM), partial edge blocks included."""
    w = _bytes(n, k, seed)
    scale = torch.exp2(torch.rand((-(-n // bn), -(-k // bk)), generator=torch.Generator().manual_seed(seed)) * 8 - 12)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1))
    dense = Fp8ScaleInv(granularity="block", block=(bn, bk)).dequantize({"weight": w.view(torch.float8_e4m3fn), "weight_scale_inv": scale},
                                                                         torch.float32)
    y = fp8_matmul(x, Fp8Blocks(w, scale, bn, bk))
    exact = x.double() @ dense.double().t()
    bound = (x.abs().double() @ dense.abs().double().t()) * (k + 2) * 2.0**-23 + 1e-30
    assert torch.all((y.double() - exact).abs() <= bound)


@pytest.mark.parametrize("round_bf16", [False, True])
@pytest.mark.parametrize(("m", "dtype"), [(1, torch.float32), (3, torch.bfloat16), (12, torch.float32)])
def test_opcheck_fp8_matmul(m: int, dtype: torch.dtype, round_bf16: bool) -> None:
    w, scale = _bytes(24, 40, m), torch.rand(2, 3) + 0.5
    torch.library.opcheck(FP8_MATMUL, (torch.randn(m, 40).to(dtype), w, scale, 16, 16, round_bf16))


def test_fp8_matmul_refuses_what_it_would_read_out_of_bounds() -> None:
    w, scale, x = _bytes(24, 40, 0), torch.rand(2, 3), torch.randn(2, 40)
    for args in [(x, w, scale[:, :2], 16, 16, False), (x[:, :39], w, scale, 16, 16, False), (x, w.view(torch.int8), scale, 16, 16, False),
                 (x, w, scale, 0, 16, False)]:
        with pytest.raises(ValueError, match="fp8_matmul needs"):
            FP8_MATMUL(*args)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(9, 70), bn=st.integers(1, 24), bk=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_prefill_weights_are_the_layouts_bit_for_bit(n: int, k: int, bn: int, bk: int, seed: int) -> None:
    """The prefill path's dequantized blocks are the layout's weights: with x the identity (K > 8 rows) the product returns them exactly."""
    w = _bytes(n, k, seed)
    scale = torch.exp2(torch.rand((-(-n // bn), -(-k // bk)), generator=torch.Generator().manual_seed(seed)) * 8 - 12) * 1.37
    dense = Fp8ScaleInv(granularity="block", block=(bn, bk)).dequantize({"weight": w.view(torch.float8_e4m3fn), "weight_scale_inv": scale},
                                                                         torch.float32)
    assert torch.equal(fp8_matmul(torch.eye(k), Fp8Blocks(w, scale, bn, bk)).t(), dense)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(9, 70), channel=st.booleans(), seed=st.integers(0, 2**16))
def test_bfloat16_scales_round_each_weight_as_compressed_tensors_does(n: int, k: int, channel: bool, seed: int) -> None:
    """With bfloat16 scales (compressed-tensors from a bfloat16 model) each weight is value * scale
    rounded to bfloat16: the prefill path returns the layout's weights bit for bit, and the fused
    decode loop sums those weights (float32 summation error only)."""
    w = _bytes(n, k, seed)
    shape = (n, 1) if channel else (1,)
    scale = (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.01 + 1e-4).to(torch.bfloat16)
    layout = Fp8Scaled(granularity="channel" if channel else "tensor", scale_rounding=True, scalar_shape=(1,))
    dense = layout.dequantize({"weight": w.view(torch.float8_e4m3fn), "weight_scale": scale}, torch.float32)
    blocks = Fp8Blocks(w, scale.float().reshape(n, 1) if channel else scale.float().reshape(1, 1), 1 if channel else n, k, round_bf16=True)
    assert torch.equal(fp8_matmul(torch.eye(k), blocks).t(), dense)
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(seed + 1))
    exact = x.double() @ dense.double().T
    bound = 1e-5 * (x.double().abs() @ dense.double().abs().T) + 1e-30
    assert torch.all((fp8_matmul(x, blocks).double() - exact).abs() <= bound)
