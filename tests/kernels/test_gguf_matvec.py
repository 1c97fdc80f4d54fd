"""The fused GGUF matrix-vector kernels against gguf-py's dequantization of the same blocks.

Blocks are random bytes (every code, every packed 6-bit scale and min, every ``qh`` bit pattern),
with their float16 scales drawn finite: gguf-py dequantizes them to the reference weight, and the
kernel's ``x @ W.T`` must equal ``x @ dequantize(blocks).T`` computed in float64, up to float32
summation error. A wrong nibble order, scale index or sign shows as an error of the size of the
weights, far above the bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from quantdispatch.gguf.types import BLOCK, GgmlType
from quantdispatch.kernels.gguf.matvec import (
    FUSED_ROWS,
    MATVEC_TYPES,
    Activations,
    GgufMatvecLinear,
    gguf_matvec,
    matvec_kernels,
    matvec_linears,
)
from quantdispatch.kernels.gguf.modules import GgufLinear, packed_linear

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.skipif(matvec_kernels() is None, reason="the fused GGUF kernels cannot be built here")

TYPES = tuple(t for t in GgmlType if t in MATVEC_TYPES)

HALVES: dict[GgmlType, tuple[int, ...]] = {  # byte offsets of each block's float16 scales
    GgmlType.Q4_0: (0,), GgmlType.Q4_1: (0, 2), GgmlType.Q4_K: (0, 2), GgmlType.Q8_0: (0,), GgmlType.Q6_K: (208,),
}


def _blocks(ggml_type: GgmlType, rows: int, cols: int, seed: int) -> NDArray[Any]:
    """Random blocks for a ``[rows, cols]`` weight, float16 scales finite (and small, as real ones are)."""
    per, size = BLOCK[ggml_type]
    n = rows * cols // per
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for at in HALVES[ggml_type]:
        b[:, at:at + 2] = (rng.standard_normal(n) * 0.02).astype(np.float16).reshape(n, 1).view(np.uint8)
    return b


def _reference(blocks: NDArray[Any], ggml_type: GgmlType, rows: int) -> torch.Tensor:
    w = gguf.quants.dequantize(blocks.reshape(rows, -1), gguf.GGMLQuantizationType[ggml_type.name])
    return torch.from_numpy(np.asarray(w, dtype=np.float64))


def _bound(x: torch.Tensor, w: torch.Tensor) -> float:
    """Float32 summation error of a dot product of length K: a few ulps of sum |x||w|."""
    return float((x.abs().double() @ w.abs().T).max()) * 4e-7 * 4


def _int8_activations(x: NDArray[Any]) -> NDArray[Any]:
    """llama.cpp's 8-bit activations, as the kernel forms them: per run of 32, ``d = max|x| / 127``
    and codes ``x * (1 / d)`` rounded half away from zero, all in float32; returned as ``codes * d``."""
    runs = x.astype(np.float32).reshape(-1, 32)
    d = (np.abs(runs).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    f = (runs * inv[:, None]).astype(np.float32)
    codes = np.trunc(f + np.where(f < 0, np.float32(-0.5), np.float32(0.5))).astype(np.float64)
    out: NDArray[Any] = (codes * d[:, None].astype(np.float64)).reshape(x.shape)
    return out


def test_every_type_the_issue_names_has_a_kernel() -> None:
    """Q4_0, Q4_1 and Q4_K (the int4 path) and Q8_0, Q6_K (the rest of a Q4_K_M file)."""
    assert {GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q4_K, GgmlType.Q8_0, GgmlType.Q6_K} == MATVEC_TYPES
    assert set(matvec_linears()) == MATVEC_TYPES


@given(t=st.sampled_from(TYPES), rows=st.integers(1, 24), supers=st.integers(1, 3),
       m=st.integers(1, FUSED_ROWS), seed=st.integers(0, 2**32 - 1))
def test_matvec_equals_gguf_py_dequantization(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """Any rows, row lengths of whole super-blocks, one to FUSED_ROWS input rows (the 4-row and 1-row loops)."""
    cols = 256 * supers
    blocks = _blocks(t, rows, cols, seed)
    w = _reference(blocks, t, rows)
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((m, cols)).astype(np.float32))
    y = gguf_matvec(x, torch.from_numpy(blocks.reshape(-1)), t, rows)
    assert y.dtype == torch.float32 and y.shape == (m, rows)
    expected = x.double() @ w.T
    assert float((y.double() - expected).abs().max()) <= _bound(x, w)


@given(t=st.sampled_from(TYPES), rows=st.integers(1, 16), supers=st.integers(1, 2),
       m=st.integers(1, FUSED_ROWS), seed=st.integers(0, 2**32 - 1))
def test_int8_activations_are_llama_cpp_arithmetic(t: GgmlType, rows: int, supers: int, m: int, seed: int) -> None:
    """``activations="int8"`` is exactly W @ q8(x): the weights unchanged, the activations rounded
    to 8 bits per run of 32 (integer dot products, then float32 sums); and it stays within that
    rounding's error of the float32 kernel."""
    cols = 256 * supers
    blocks = _blocks(t, rows, cols, seed)
    w = _reference(blocks, t, rows)
    x = np.random.default_rng(seed + 1).standard_normal((m, cols)).astype(np.float32)
    raw = torch.from_numpy(blocks.reshape(-1))
    y = gguf_matvec(torch.from_numpy(x), raw, t, rows, "int8").double()
    xq = torch.from_numpy(_int8_activations(x))
    assert float((y - xq @ w.T).abs().max()) <= _bound(xq, w)
    exact = torch.from_numpy(x).double() @ w.T
    # each activation moves by at most half a code: max|x| / 254 of its run
    step = torch.from_numpy(np.abs(x).reshape(m, -1, 32).max(-1).astype(np.float64) / 254).repeat_interleave(32, dim=1)
    assert bool(((y - exact).abs() <= step @ w.abs().T + _bound(torch.from_numpy(x), w)).all())


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_module_decode_and_prefill_equal_the_dequantized_linear(t: GgmlType) -> None:
    """GgufMatvecLinear: the fused kernel up to FUSED_ROWS rows, GgufLinear's path above, bias and
    bfloat16 activations included; both equal F.linear on gguf-py's weight."""
    torch.set_num_threads(1)
    rows, cols = 40, 512
    blocks = _blocks(t, rows, cols, 7)
    raw = torch.from_numpy(blocks.reshape(-1))
    bias = torch.randn(rows)
    fused, plain = GgufMatvecLinear(raw, t, rows, cols, bias), GgufLinear(raw, t, rows, cols, bias)
    w = _reference(blocks, t, rows)
    with torch.no_grad():
        for shape in ((1, 1, cols), (2, 3, cols), (1, FUSED_ROWS + 5, cols)):
            x = torch.randn(shape)
            expected = x.double() @ w.T + bias.double()
            for module in (fused, plain):
                got = module(x)
                assert got.shape == (*shape[:-1], rows)
                assert float((got.double() - expected).abs().max()) <= _bound(x.reshape(-1, cols), w) + 1e-6
        xb = torch.randn(1, 2, cols).to(torch.bfloat16)
        got_bf16 = fused(xb)
        assert got_bf16.dtype == torch.bfloat16
        # bfloat16 activations are read as float32 and the float32 result is rounded once
        assert torch.equal(got_bf16, fused(xb.float()).to(torch.bfloat16))


def test_blocks_are_used_in_place() -> None:
    """Kept packed means no copy: the module's buffer is the caller's bytes."""
    raw = torch.from_numpy(_blocks(GgmlType.Q4_0, 4, 64, 1).reshape(-1))
    assert GgufMatvecLinear(raw, GgmlType.Q4_0, 4, 64).qweight.data_ptr() == raw.data_ptr()


def test_autograd_takes_the_dequantizing_path() -> None:
    """With gradients wanted, the module runs GgufLinear's differentiable path (the kernel has no backward)."""
    raw = torch.from_numpy(_blocks(GgmlType.Q8_0, 4, 64, 2).reshape(-1))
    x = torch.randn(1, 64, requires_grad=True)
    GgufMatvecLinear(raw, GgmlType.Q8_0, 4, 64)(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (1, 64)


def test_packed_linear_prefers_the_backends_table_over_the_default() -> None:
    """``preferred`` (the fused table) wins over GgufLinear; types outside it keep GgufLinear."""
    q4 = torch.from_numpy(_blocks(GgmlType.Q4_0, 2, 32, 3).reshape(-1))
    assert isinstance(packed_linear(q4, GgmlType.Q4_0, 2, 32, None, matvec_linears()), GgufMatvecLinear)
    assert type(packed_linear(q4, GgmlType.Q4_0, 2, 32, None, {})) is GgufLinear
    f16 = torch.zeros(2 * 32, dtype=torch.float16).view(torch.uint8)
    assert type(packed_linear(f16, GgmlType.F16, 2, 32, None, matvec_linears())) is GgufLinear


def test_bad_calls_are_refused() -> None:
    """A type without a kernel, blocks that are not the weight's size, another dtype: ValueError."""
    raw = torch.from_numpy(_blocks(GgmlType.Q4_0, 4, 64, 4).reshape(-1))
    x = torch.randn(1, 64)
    with pytest.raises(ValueError, match="no fused"):
        gguf_matvec(x, raw, GgmlType.Q5_K, 4)
    with pytest.raises(ValueError, match="do not make"):
        gguf_matvec(x, raw[:-1], GgmlType.Q4_0, 4)
    with pytest.raises(ValueError, match="do not make"):
        gguf_matvec(x, raw, GgmlType.Q4_0, 5)
    with pytest.raises(ValueError, match="no fused"):
        GgufMatvecLinear(raw, GgmlType.Q5_0, 4, 64)


def test_native_off_means_no_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """``QUANTDISPATCH_NATIVE=0`` turns the kernels off: the backend's table is then empty."""
    monkeypatch.setenv("QUANTDISPATCH_NATIVE", "0")
    assert matvec_kernels() is None


def test_int8_module_is_the_int8_kernel_plus_bias() -> None:
    """``GgufMatvecLinear(activations="int8")`` runs the 8-bit kernel on its blocks, bias added in float32."""
    raw = torch.from_numpy(_blocks(GgmlType.Q4_K, 8, 256, 5).reshape(-1))
    bias = torch.randn(8)
    module = GgufMatvecLinear(raw, GgmlType.Q4_K, 8, 256, bias, activations="int8")
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(module(x), gguf_matvec(x, raw, GgmlType.Q4_K, 8, "int8") + bias)
        assert not torch.equal(module(x), gguf_matvec(x, raw, GgmlType.Q4_K, 8, "float32") + bias)


@pytest.mark.parametrize("activations", ["float32", "int8"])
def test_non_finite_activations_give_nan_not_silent_numbers(activations: Activations) -> None:
    """An infinite or NaN activation makes the outputs it feeds non-finite in both arithmetics, as
    F.linear would (the 8-bit path cannot code it: NaN, never a rounded finite number)."""
    raw = torch.from_numpy(_blocks(GgmlType.Q4_0, 4, 64, 6).reshape(-1))
    for bad in (float("inf"), float("nan")):
        x = torch.randn(2, 64)
        x[0, 40] = bad
        y = gguf_matvec(x, raw, GgmlType.Q4_0, 4, activations)
        assert not bool(y[0].isfinite().any()) and bool(y[1].isfinite().all())


def test_a_row_length_that_is_not_whole_blocks_is_refused() -> None:
    """The kernel reads whole blocks: a module whose in_features is not whole blocks is an error, not a short read."""
    raw = torch.from_numpy(_blocks(GgmlType.Q4_K, 2, 256, 8).reshape(-1))
    with pytest.raises(ValueError, match="whole number of Q4_K blocks"):
        GgufMatvecLinear(raw, GgmlType.Q4_K, 2, 200)


def test_the_plan_names_the_types_the_kernels_take() -> None:
    """The pure layer's list of fused types (what the plan's notes say) is the kernels' own."""
    from quantdispatch.methods.gguf import FUSED_GGUF_TYPES

    assert FUSED_GGUF_TYPES == MATVEC_TYPES
