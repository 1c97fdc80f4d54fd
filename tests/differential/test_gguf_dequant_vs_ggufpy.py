"""Our torch dequantization against ``gguf.quants.dequantize`` (gguf-py 0.19), bit for bit.

Three sources of blocks: random valid blocks of every type (random bytes, with every float scale
field made finite), gguf-py's own quantizer output where it has one, and every tensor of the real
files in ``../shared/realworld/gguf``. float16 and bfloat16 outputs must equal gguf-py's float32
result cast once. A mismatch names the first differing weight, its block and both bit patterns.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.gguf import BLOCK, GgmlType
from quantdispatch.gguf.blocks import DEQUANTIZABLE_TYPES
from quantdispatch.gguf.data import open_gguf_data
from quantdispatch.kernels.gguf import dequantize
from quantdispatch.kernels.gguf.dequant import CHUNK_WEIGHTS, KernelPath
from quantdispatch.kernels.gguf.export import dequantize_tensor
from quantdispatch.kernels.gguf.native import NATIVE_TYPES, native_kernels
from quantdispatch.kernels.gguf.tables import (
    E2M1_VALUES,
    GRIDS,
    IQ4NL_VALUES,
    e8m0_table,
    grid_table,
    ksigns,
    ue4m3_table,
)
from quantdispatch.result import Ok

if TYPE_CHECKING:
    import gguf
else:
    gguf = pytest.importorskip("gguf")

import numpy as np  # a dependency of gguf
from numpy.typing import NDArray

torch.set_num_threads(1)

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "gguf"
TYPES = sorted(DEQUANTIZABLE_TYPES)

# Byte offsets of the f16 scale fields in one block, from ggml-common.h's structs.
F16_SCALES: dict[GgmlType, tuple[int, ...]] = {
    GgmlType.Q4_0: (0,), GgmlType.Q4_1: (0, 2), GgmlType.Q5_0: (0,), GgmlType.Q5_1: (0, 2),
    GgmlType.Q8_0: (0,), GgmlType.Q2_K: (80, 82), GgmlType.Q3_K: (108,), GgmlType.Q4_K: (0, 2),
    GgmlType.Q5_K: (0, 2), GgmlType.Q6_K: (208,), GgmlType.TQ1_0: (52,), GgmlType.TQ2_0: (64,),
    GgmlType.IQ4_NL: (0,), GgmlType.IQ4_XS: (0,), GgmlType.IQ2_XXS: (0,), GgmlType.IQ2_XS: (0,),
    GgmlType.IQ2_S: (0,), GgmlType.IQ3_XXS: (0,), GgmlType.IQ3_S: (0,), GgmlType.IQ1_S: (0,),
}  # fmt: skip
# Types whose every byte pattern is a finite scale: E8M0 (MXFP4), UE4M3 (NVFP4), and the plain
# float types, whose values may be anything (NaN payloads included; see _assert_same).
NO_F16_SCALE = {GgmlType.MXFP4, GgmlType.NVFP4, GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.IQ1_M}
# What gguf-py 0.19 can quantize (research/env.md §5), less F32/F16 whose quantize is a cast.
GGUFPY_QUANTIZES = (GgmlType.BF16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
                    GgmlType.Q8_0, GgmlType.TQ1_0, GgmlType.TQ2_0, GgmlType.MXFP4)  # fmt: skip


def test_every_type_has_a_scale_rule() -> None:
    """Each dequantizable type either has its f16 scale offsets listed or needs none."""
    assert set(F16_SCALES) | NO_F16_SCALE == DEQUANTIZABLE_TYPES


def _theirs(raw: NDArray[Any], t: GgmlType, shape: tuple[int, ...]) -> NDArray[Any]:
    """gguf-py's float32 result for bytes ``raw`` holding a tensor of PyTorch ``shape``."""
    per_block, size = BLOCK[t]
    rows = raw.reshape(*shape[:-1], shape[-1] // per_block * size)
    if t is GgmlType.F32:
        rows = rows.view(np.float32)  # gguf-py's dequantize takes F32/F16 data in their dtype
    elif t is GgmlType.F16:
        rows = rows.view(np.float16)
    with np.errstate(all="ignore"):  # NaN payloads in plain float data
        out = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(int(t)))
    return np.asarray(out, dtype=np.float32)


def _compare(got: torch.Tensor, want: torch.Tensor, t: GgmlType, what: str) -> None:
    bits = {2: torch.int16, 4: torch.int32}[got.element_size()]
    same = (got.view(bits) == want.view(bits)) | (got.isnan() & want.isnan())
    if not bool(same.all()):
        i = int((~same).nonzero()[0, 0])
        block = i // BLOCK[t][0]
        g, w = int(got.view(bits)[i]), int(want.view(bits)[i])
        msg = (f"{t.name} {what} {got.dtype}: {int((~same).sum())} weights differ; first: weight {i} (block {block}): "
               f"ours {float(got[i])!r} bits {g:#x}, gguf-py {float(want[i])!r} bits {w:#x}")
        raise AssertionError(msg)


def _paths(t: GgmlType) -> tuple[KernelPath, ...]:
    """Every kernel path that exists here for ``t``: eager always, native where it was built."""
    return ("eager", "native") if t in NATIVE_TYPES and native_kernels() is not None else ("eager",)


def _check(raw: NDArray[Any], t: GgmlType, shape: tuple[int, ...], what: str = "") -> None:
    theirs = torch.from_numpy(np.ascontiguousarray(_theirs(raw, t, shape)))
    source = torch.from_numpy(raw.copy())
    for path in _paths(t):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            ours = dequantize(source, t, shape, dtype, path=path)
            assert ours.dtype is dtype and tuple(ours.shape) == tuple(theirs.shape)
            _compare(ours.reshape(-1), theirs.to(dtype).reshape(-1), t, f"{what} ({path})")


@st.composite
def _blocks(draw: st.DrawFn, t: GgmlType) -> tuple[NDArray[Any], tuple[int, ...]]:
    """Random bytes for a ``rows x blocks`` tensor of type ``t``, every f16 scale finite."""
    per_block, size = BLOCK[t]
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 4)) * max(1, 32 // per_block)
    raw = np.frombuffer(draw(st.binary(min_size=rows * cols * size, max_size=rows * cols * size)), np.uint8).copy()
    blocks = raw.reshape(-1, size)
    finite = st.integers(0, 0xFFFF).filter(lambda h: h & 0x7C00 != 0x7C00)
    for at in F16_SCALES.get(t, ()):
        for b in range(blocks.shape[0]):
            blocks[b, at : at + 2] = np.frombuffer(struct.pack("<H", draw(finite)), np.uint8)
    if t is GgmlType.IQ1_M:  # its f16 scale is the top nibbles of bytes 49, 51, 53, 55
        blocks[:, 55] &= np.uint8(0xBF)  # clear exponent bit 4 (f16 bit 14): always finite
    return raw, (rows, cols * per_block)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
@settings(max_examples=15)
@given(data=st.data())
def test_random_blocks(t: GgmlType, data: st.DataObject) -> None:
    """Random valid blocks of every type dequantize exactly as gguf-py, to all three dtypes."""
    raw, shape = data.draw(_blocks(t))
    _check(raw, t, shape, "random blocks")


@pytest.mark.parametrize("t", GGUFPY_QUANTIZES, ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_ggufpy_quantized(t: GgmlType, scale: float) -> None:
    """What gguf-py's quantizer writes, we read back as gguf-py does."""
    rng = np.random.default_rng(int(t) * 1000 + int(scale * 10))
    values = (rng.standard_normal((8, 512)) * scale).astype(np.float32)
    values[0, :64] = 0.0  # an all-zero block
    raw = np.asarray(gguf.quants.quantize(values, gguf.GGMLQuantizationType(int(t)))).view(np.uint8).reshape(-1)
    _check(raw, t, (8, 512), f"quantized x{scale}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("t", [GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.IQ2_XS], ids=lambda t: t.name)
def test_many_chunks(t: GgmlType, threads: int) -> None:
    """A tensor of several chunks and a partial last one (the scratch path for half outputs),
    on one thread and split across two (the native kernels' own threading)."""
    per_block, size = BLOCK[t]
    rows = CHUNK_WEIGHTS * 2 // 4096 + 3
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, rows * 4096 // per_block * size, dtype=np.uint8)
    scales = rng.standard_normal(raw.size // size).astype(np.float16).view(np.uint8).reshape(-1, 2)
    blocks = raw.reshape(-1, size)
    for at in F16_SCALES[t]:
        blocks[:, at : at + 2] = scales
    torch.set_num_threads(threads)
    try:
        _check(raw, t, (rows, 4096), f"many chunks, {threads} threads")
    finally:
        torch.set_num_threads(1)


def test_native_kernels_built_here() -> None:
    """The fused C kernels build on this machine (else every type runs eager, and this says so)."""
    if native_kernels() is None:
        pytest.skip("no C compiler or QUANTDISPATCH_NATIVE=0: only the eager path is tested")
    kernels = native_kernels()
    assert kernels is not None and set(kernels) == NATIVE_TYPES <= DEQUANTIZABLE_TYPES


def _valid_files() -> list[Path]:
    if not REALWORLD.is_dir():
        return []
    return sorted(p for p in REALWORLD.glob("*.gguf") if isinstance(open_gguf_data(p), Ok))


@pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"the real-world corpus is not at {REALWORLD}")
@pytest.mark.parametrize("path", _valid_files(), ids=lambda p: p.name)
def test_real_files(path: Path) -> None:
    """Every tensor of every real file we open: the same values, in gguf-py's numpy shape."""
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as e:  # gguf-py reads v2 and v3 only (the v1 file: see test_gguf_vs_ggufpy)
        pytest.skip(f"gguf-py cannot read {path.name}: {e}")
    theirs = {t.name: t for t in reader.tensors}
    found = open_gguf_data(path)
    assert isinstance(found, Ok)
    with found.value as data:
        for info in data.header.tensors:
            tensor = data.tensor(info.name)
            assert isinstance(tensor, Ok)
            ref = theirs[info.name]
            expected = torch.from_numpy(np.array(gguf.quants.dequantize(ref.data, ref.tensor_type), dtype=np.float32))
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                ours = dequantize_tensor(tensor.value, dtype)
                assert tuple(ours.shape) == tuple(expected.shape), info.name
                _compare(ours.reshape(-1), expected.to(dtype).reshape(-1), tensor.value.ggml_type, info.name)
            del tensor


GRID_CLASSES = {"iq2xxs": "IQ2_XXS", "iq2xs": "IQ2_XS", "iq2s": "IQ2_S", "iq3xxs": "IQ3_XXS", "iq3s": "IQ3_S", "iq1s": "IQ1_S"}


@pytest.mark.parametrize("name", sorted(GRID_CLASSES))
def test_grids_equal_ggufpy(name: str) -> None:
    """Each lattice codebook equals gguf-py's decoded grid, row for row."""
    cls = getattr(gguf.quants, GRID_CLASSES[name])
    cls.init_grid()
    assert torch.equal(grid_table(name), torch.from_numpy(np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)))
    assert GRIDS[name][:2] == cls.grid_shape


def test_small_tables_equal_ggufpy() -> None:
    """ksigns, the IQ4_NL and E2M1 codebooks, and the E8M0 / UE4M3 scale decodings match gguf-py."""
    assert [ksigns(i) for i in range(128)] == list(gguf.quants.IQ2_XXS.ksigns)
    assert IQ4NL_VALUES == tuple(gguf.quants.IQ4_NL.kvalues)
    assert E2M1_VALUES == tuple(gguf.quants.MXFP4.kvalues) == tuple(gguf.quants.NVFP4.kvalues)
    every = np.arange(256, dtype=np.uint8)
    e8m0 = np.asarray(gguf.quants.MXFP4.e8m0_to_fp32_half(every), dtype=np.float32)
    assert torch.equal(e8m0_table().view(torch.int32), torch.from_numpy(e8m0.view(np.int32)))
    ue4m3 = np.asarray(gguf.quants.NVFP4.ue4m3_to_fp32(every), dtype=np.float32)
    assert torch.equal(ue4m3_table().view(torch.int32), torch.from_numpy(ue4m3.view(np.int32)))
