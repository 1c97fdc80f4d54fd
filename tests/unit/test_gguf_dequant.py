"""Unit tests of the torch GGUF kernels: coverage of the type set, the dispatcher's contract, and
hand-computed blocks (values worked out from ggml-common.h's struct comments, not from our code)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from quantdispatch.gguf import BLOCK, GgmlType
from quantdispatch.gguf.blocks import DEQUANTIZABLE_TYPES, summarize, undequantizable
from quantdispatch.gguf.header import TensorInfo
from quantdispatch.kernels.gguf import KERNELS, OUTPUT_DTYPES, dequantize

torch.set_num_threads(1)


def _f16(x: float) -> bytes:
    return struct.pack("<e", x)


def _u8(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def test_kernels_implement_exactly_the_pure_set() -> None:
    """The torch kernels and the planner's pure DEQUANTIZABLE_TYPES name the same 26 types."""
    assert set(KERNELS) == DEQUANTIZABLE_TYPES
    assert len(DEQUANTIZABLE_TYPES) == 26


def test_kernels_package_imports_no_torch() -> None:
    """`import quantdispatch.kernels` and the pure block facts load no torch."""
    code = "import sys, json, quantdispatch.kernels, quantdispatch.gguf.blocks, quantdispatch.gguf.data; print(json.dumps('torch' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) is False


def test_q4_0_block_by_hand() -> None:
    """Q4_0: d = 0.5; byte j holds weight j (low nibble) and j + 16 (high); w = d * (q - 8)."""
    qs = bytes((j % 16) | (15 - j % 16) << 4 for j in range(16))
    out = dequantize(_u8(_f16(0.5) + qs), GgmlType.Q4_0, (32,))
    expected = [0.5 * (j - 8) for j in range(16)] + [0.5 * (15 - j - 8) for j in range(16)]
    assert out.tolist() == expected


def test_q8_0_block_by_hand() -> None:
    """Q8_0: d = 2; 32 signed bytes; w = d * q."""
    q = list(range(-16, 16))
    out = dequantize(_u8(_f16(2.0) + struct.pack("<32b", *q)), GgmlType.Q8_0, (1, 32))
    assert out.tolist() == [[2.0 * v for v in q]]


def test_q4_k_block_by_hand() -> None:
    """Q4_K: scales 1..4 and mins 0 for sub-blocks 0-3 (bits 0-5 of bytes 0-3 and 4-7),
    sub-blocks 4-7 scale 5 min 1 (bytes 8-11 = 0x15, top bits 0); all codes 3."""
    scales = bytes([1, 2, 3, 4, 0, 0, 0, 0, 0x15, 0x15, 0x15, 0x15])
    block = _f16(0.25) + _f16(1.0) + scales + bytes([0x33] * 128)
    out = dequantize(_u8(block), GgmlType.Q4_K, (256,)).reshape(8, 32)
    for s, (scale, mn) in enumerate([(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (5, 1), (5, 1), (5, 1)]):
        assert out[s].tolist() == [0.25 * scale * 3 - 1.0 * mn] * 32


def test_mxfp4_block_by_hand() -> None:
    """MXFP4: e = 128 means a scale of 1 (half of 2); code 5 is E2M1 3.0 doubled, code 13 is -3.0 doubled."""
    out = dequantize(_u8(bytes([128]) + bytes([0xD5] * 16)), GgmlType.MXFP4, (32,))
    assert out.tolist() == [6.0] * 16 + [-6.0] * 16


def test_writes_into_out_and_casts_once() -> None:
    """`out=` is filled and returned; a bfloat16 result equals the float32 one cast."""
    block = _u8(_f16(1 / 3) + bytes(range(32)))
    full = dequantize(block, GgmlType.Q8_0, (32,))
    out = torch.empty(32, dtype=torch.bfloat16)
    assert dequantize(block, GgmlType.Q8_0, (32,), torch.bfloat16, out=out) is out
    assert torch.equal(out, full.to(torch.bfloat16))


@pytest.mark.parametrize(
    ("raw", "shape", "dtype", "match"),
    [
        (bytes(34), (48,), torch.float32, "whole Q8_0 blocks"),
        (bytes(33), (32,), torch.float32, "need 34"),
        (bytes(34), (32,), torch.float64, "output dtype"),
    ],
)
def test_misuse_raises(raw: bytes, shape: tuple[int, ...], dtype: torch.dtype, match: str) -> None:
    """Sizes, shapes and dtypes that do not fit are a ValueError naming the problem."""
    with pytest.raises(ValueError, match=match):
        dequantize(_u8(raw), GgmlType.Q8_0, shape, dtype)


def test_wrong_out_and_unknown_type_raise() -> None:
    """An `out` of another shape or dtype, or a type without a kernel, is a ValueError."""
    with pytest.raises(ValueError, match="out must be"):
        dequantize(_u8(bytes(34)), GgmlType.Q8_0, (32,), out=torch.empty(31))
    with pytest.raises(ValueError, match="no kernel"):
        dequantize(_u8(bytes(292)), GgmlType.Q8_K, (256,))


@pytest.mark.parametrize("t", sorted(DEQUANTIZABLE_TYPES), ids=lambda t: t.name)
def test_zero_bytes_are_finite_for_every_type(t: GgmlType) -> None:
    """All-zero blocks give finite weights of the requested dtype and shape, for every type."""
    per_block, size = BLOCK[t]
    for dtype in OUTPUT_DTYPES:
        out = dequantize(torch.zeros(2 * size, dtype=torch.uint8), t, (2, per_block), dtype)
        assert out.shape == (2, per_block) and out.dtype is dtype and bool(out.isfinite().all())


def test_undequantizable_names_tensor_and_type() -> None:
    """Types we cannot dequantize are refused by name (live, removed and unknown ids alike)."""
    infos = [TensorInfo("ok", (32,), 8, 0), TensorInfo("act", (256,), 15, 64), TensorInfo("old", (32,), 4, 0), TensorInfo("new", (32,), 99, 0)]
    issues = undequantizable(infos)
    assert [(i.code, i.path) for i in issues] == [("gguf.tensor.type_unsupported", f"$.tensors[{k}]") for k in (1, 2, 3)]
    assert "'act' has type Q8_K" in issues[0].message and "Q4_2" in issues[1].message and "id 99" in issues[2].message


def test_summarize_gives_torch_shape_bytes_and_bits() -> None:
    """Each summary has the PyTorch shape, the data size and bits per weight; unknown ids say so."""
    q6, unknown = summarize([TensorInfo("w", (256, 3), 14, 0), TensorInfo("x", (7,), 99, 0)])
    assert (q6.type_name, q6.shape, q6.nbytes, q6.bits) == ("Q6_K", (3, 256), 3 * 210, 210 * 8 / 256)
    assert (unknown.type_name, unknown.nbytes) == ("id 99", 0)


def test_new_output_large_and_small() -> None:
    """Large outputs (huge-page backed) and small ones are ordinary writable contiguous tensors."""
    from quantdispatch.kernels.gguf.dequant import HUGE_PAGE_BYTES, new_output

    big = new_output((HUGE_PAGE_BYTES // 2 + 3, 1), torch.bfloat16)  # not a whole number of huge pages
    big.fill_(1.5)
    assert big.is_contiguous() and big.shape == (HUGE_PAGE_BYTES // 2 + 3, 1) and bool((big == 1.5).all())
    small = new_output((2, 3), torch.float32)
    assert small.shape == (2, 3) and small.dtype is torch.float32


def test_paths_choose_kernels() -> None:
    """"eager" always runs torch; "native" refuses a type without a C kernel; "auto" falls back."""
    from quantdispatch.kernels.gguf.dequant import kernel_for

    kernel, native = kernel_for(GgmlType.Q4_K, "eager")
    assert kernel is KERNELS[GgmlType.Q4_K] and not native
    assert kernel_for(GgmlType.Q2_K, "auto") == (KERNELS[GgmlType.Q2_K], False)
    with pytest.raises(ValueError, match="no native kernel for Q2_K"):
        kernel_for(GgmlType.Q2_K, "native")


def test_native_can_be_switched_off() -> None:
    """QUANTDISPATCH_NATIVE=0 leaves only the eager kernels (checked in a fresh process)."""
    code = "from quantdispatch.kernels.gguf.native import native_kernels; print(native_kernels() is None)"
    env = {**os.environ, "QUANTDISPATCH_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env)
    assert done.stdout.strip() == "True"
