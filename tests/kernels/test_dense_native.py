"""The native bf16 matrix-vector kernel (``bf16_gemv``) and ``GemvLinear``.

Oracle: a float64 product of the same bf16 values (torch's, not the kernel's code). Every product is
exact in float32, so the kernel's only error is its float32 summation order: held to the bound of a
K-term float32 dot product. Levels (AVX2, AVX-512 builds, chosen through the CPU-feature mask as a
user would) and thread counts must give the same bits: the kernel documents one order for all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quantdispatch.kernels._native import isa_level
from quantdispatch.kernels._simd import LEVELS
from quantdispatch.kernels.dense_native import BF16_GEMV, GEMV_ROWS, GemvLinear, bf16_gemv, native_dense, use_gemv
from tests.cpu import cpu_mask

_HOST = isa_level()
RUNNABLE = LEVELS[:LEVELS.index(_HOST) + 1] if _HOST is not None else ()
_MASKS = {"avx2": "avx2,fma", "avx512": "avx2,fma,avx512f", "avx512-vnni": "avx2,fma,avx512f,avx512_vnni"}

needs_kernel = pytest.mark.skipif(native_dense() is None, reason="no SIMD level (or no C compiler) here: the kernel is not built")

EPS32 = 2.0**-24


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_bound(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    exact = x.double() @ w.double().T
    magnitude = x.double().abs() @ w.double().abs().T
    bound = (w.shape[1] + 2) * EPS32 * magnitude + 1e-30
    assert y.dtype is torch.float32
    assert bool(((y.double() - exact).abs() <= bound).all()), float(((y.double() - exact).abs() - bound).max())


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 200), m=st.integers(1, GEMV_ROWS), seed=st.integers(0, 2**31 - 1))
def test_gemv_within_the_float32_bound_of_the_exact_product(n: int, k: int, m: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(torch.bfloat16)
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    _check_bound(bf16_gemv(x, w), x, w)


@needs_kernel
def test_gemv_large_layer_and_threads_give_the_same_bits() -> None:
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(1000, 2080, generator=g) * 3).to(torch.bfloat16)  # 2080: whole chunks and a tail of 0; rows not a multiple of 4
    x = torch.randn(2, 2080, generator=g).to(torch.bfloat16)
    with _threads(1):
        one = bf16_gemv(x, w)
    with _threads(2):
        two = bf16_gemv(x, w)
    _check_bound(one, x, w)
    assert torch.equal(one, two)


@needs_kernel
@pytest.mark.skipif(len(RUNNABLE) < 2, reason="this CPU runs one SIMD level only")
def test_levels_agree_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.randn(37, 1000, generator=g).to(torch.bfloat16)  # 1000 = 31 chunks + a tail of 8
    x = torch.randn(3, 1000, generator=g).to(torch.bfloat16)
    outs = {}
    for level in RUNNABLE:
        with cpu_mask(_MASKS[level]):
            assert isa_level() == level
            outs[level] = BF16_GEMV(x, w)
    first = outs[RUNNABLE[0]]
    _check_bound(first, x, w)
    for level, y in outs.items():
        assert torch.equal(y, first), level


@needs_kernel
def test_non_finite_values_propagate() -> None:
    w = torch.ones(3, 64, dtype=torch.bfloat16)
    x = torch.ones(1, 64, dtype=torch.bfloat16)
    w[1, 5] = float("inf")
    w[2, 63] = float("nan")
    y = bf16_gemv(x, w)
    assert y[0, 0].item() == 64.0 and y[0, 1].item() == float("inf") and torch.isnan(y[0, 2])


@needs_kernel
@pytest.mark.parametrize(("x", "w"), [
    (torch.ones(1, 8), torch.ones(4, 8, dtype=torch.bfloat16)),                        # float32 x
    (torch.ones(1, 8, dtype=torch.bfloat16), torch.ones(4, 9, dtype=torch.bfloat16)),  # K differs
    (torch.ones(8, dtype=torch.bfloat16), torch.ones(4, 8, dtype=torch.bfloat16)),     # x not 2-D
    (torch.ones(1, 8, dtype=torch.bfloat16), torch.ones(4, 8, dtype=torch.float16)),   # fp16 weight
])
def test_misuse_is_refused_before_the_kernel_reads(x: torch.Tensor, w: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="bf16_gemv needs"):
        bf16_gemv(x, w)


def _linear(n: int, k: int, bias: bool, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias).to(torch.bfloat16)


@needs_kernel
@pytest.mark.parametrize("bias", [False, True])
def test_gemv_linear_holds_the_same_parameters_and_matches_f_linear(bias: bool) -> None:
    source = _linear(300, 96, bias)
    layer = GemvLinear(source)
    assert layer.weight is source.weight and layer.bias is source.bias
    assert (layer.in_features, layer.out_features) == (96, 300)
    x = torch.randn(1, 3, 96).to(torch.bfloat16)
    with torch.inference_mode():
        y = layer(x)
        ref = F.linear(x, source.weight, source.bias)
        bias_term = source.bias.double() if bias else torch.zeros(300, dtype=torch.float64)
        exact = (x.double() @ source.weight.double().T) + bias_term
    assert y.shape == ref.shape == (1, 3, 300) and y.dtype is torch.bfloat16
    # one bf16 rounding of a float32 sum: within one bf16 ulp (2^-8 relative) of the exact value, as torch's own result is
    scale = exact.abs().clamp_min(1e-3)
    assert float(((y.double() - exact).abs() / scale).max()) <= 2.0**-7
    assert float(((ref.double() - exact).abs() / scale).max()) <= 2.0**-7


def test_gemv_linear_falls_back_to_f_linear_outside_decode() -> None:
    source = _linear(64, 32, True)
    layer = GemvLinear(source)
    many = torch.randn(GEMV_ROWS + 1, 32).to(torch.bfloat16)
    assert torch.equal(layer(many), F.linear(many, source.weight, source.bias))
    wide = torch.randn(2, 32)
    with pytest.raises(RuntimeError):  # float32 input on a bf16 weight: F.linear's own error, as nn.Linear gives
        layer(wide)
    x = torch.randn(1, 32).to(torch.bfloat16).requires_grad_(True)
    layer(x).float().sum().backward()
    assert x.grad is not None and source.weight.grad is not None


def test_use_gemv_swaps_only_large_plain_bf16_linears_and_keeps_ties() -> None:
    class Sub(nn.Linear):
        pass

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(512, 64).to(torch.bfloat16)
            self.big = nn.Linear(64, 512, bias=False).to(torch.bfloat16)
            self.big.weight = self.embed.weight  # tied, as an output layer to its input embedding
            self.small = nn.Linear(8, 8).to(torch.bfloat16)
            self.fp32 = nn.Linear(64, 512)
            self.sub = Sub(64, 512).to(torch.bfloat16)

    model = Model()
    swapped = use_gemv(model, min_weights=512 * 64)
    if native_dense() is None:
        assert swapped == 0 and type(model.big) is nn.Linear
        return
    assert swapped == 1
    assert type(model.big) is GemvLinear and model.big.weight is model.embed.weight
    assert type(model.small) is nn.Linear and type(model.fp32) is nn.Linear and type(model.sub) is Sub
    assert use_gemv(model, min_weights=512 * 64) == 0  # a GemvLinear is not swapped again


@needs_kernel
@pytest.mark.parametrize(("m", "n", "k"), [(1, 5, 40), (3, 17, 64), (8, 4, 7)])
def test_opcheck_bf16_gemv(m: int, n: int, k: int) -> None:
    """Schema, fake tensor and dispatch checks of the op (``torch.compile`` sees one node)."""
    g = torch.Generator().manual_seed(m + n + k)
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    w = torch.randn(n, k, generator=g).to(torch.bfloat16)
    torch.library.opcheck(BF16_GEMV, (x, w))


@needs_kernel
@pytest.mark.parametrize(("m", "n", "k"), [(1, 0, 16), (1, 5, 0), (0, 5, 16)])
def test_empty_shapes_give_empty_or_zero_outputs(m: int, n: int, k: int) -> None:
    """No rows, no outputs or no columns: the kernel reads nothing; an empty sum is 0, as ``F.linear`` gives."""
    x, w = torch.ones(m, k, dtype=torch.bfloat16), torch.ones(n, k, dtype=torch.bfloat16)
    y = bf16_gemv(x, w)
    assert y.shape == (m, n) and bool((y == 0).all())


@needs_kernel
def test_strided_inputs_read_as_their_values() -> None:
    """Transposed (non-contiguous) views are read by value, not by their storage order."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(70, 3, generator=g).to(torch.bfloat16).t()
    w = torch.randn(70, 11, generator=g).to(torch.bfloat16).t()
    assert not x.is_contiguous() and not w.is_contiguous()
    assert torch.equal(bf16_gemv(x, w), bf16_gemv(x.contiguous(), w.contiguous()))
