"""Properties of ``read_gguf_header``: it reads back what gguf-py wrote, and never raises."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path
from typing import TypeAlias

import gguf
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.gguf import (
    ISSUE_CODES,
    GgmlType,
    GgufHeader,
    GgufValue,
    GgufValueType,
    TensorInfo,
    read_gguf_header,
    row_bytes,
)
from quantdispatch.result import Err, Ok

V = GgufValueType
Entry: TypeAlias = tuple[str, V, V | None, GgufValue]  # key, value type, array element type, value
Tensor: TypeAlias = tuple[str, GgmlType, tuple[int, ...]]  # name, type, shape in ggml order

_INTS = {
    V.UINT8: (0, 2**8 - 1),
    V.INT8: (-(2**7), 2**7 - 1),
    V.UINT16: (0, 2**16 - 1),
    V.INT16: (-(2**15), 2**15 - 1),
    V.UINT32: (0, 2**32 - 1),
    V.INT32: (-(2**31), 2**31 - 1),
    V.UINT64: (0, 2**64 - 1),
    V.INT64: (-(2**63), 2**63 - 1),
}
_SCALARS = [t for t in V if t is not V.ARRAY]
_NUMPY: dict[GgmlType, type[np.generic]] = {
    GgmlType.F32: np.float32,
    GgmlType.F16: np.float16,
    GgmlType.I8: np.int8,
    GgmlType.I32: np.int32,
}
_RESERVED = {"general.architecture", "general.alignment"}  # the writer sets these itself


def _scalar(vtype: V) -> st.SearchStrategy[GgufValue]:
    if vtype in _INTS:
        return st.integers(*_INTS[vtype])
    if vtype is V.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if vtype is V.FLOAT64:
        return st.floats(allow_nan=False)
    if vtype is V.BOOL:
        return st.booleans()
    return st.text(max_size=12)  # unicode, surrogates excluded (UTF-8 cannot hold them)


@st.composite
def _entry(draw: st.DrawFn) -> Entry:
    key = draw(st.text(min_size=1, max_size=16).filter(lambda k: k not in _RESERVED))
    kind = draw(st.sampled_from(["scalar", "array", "nested"]))
    if kind == "scalar":
        vtype = draw(st.sampled_from(_SCALARS))
        return key, vtype, None, draw(_scalar(vtype))
    if kind == "array":
        etype = draw(st.sampled_from(_SCALARS))
        return key, V.ARRAY, etype, tuple(draw(st.lists(_scalar(etype), min_size=1, max_size=5)))
    # gguf-py infers the inner element type from Python types: int -> INT32, str, bool
    inner = _scalar(draw(st.sampled_from([V.INT32, V.STRING, V.BOOL])))
    rows = draw(st.lists(st.lists(inner, min_size=1, max_size=3), min_size=1, max_size=3))
    return key, V.ARRAY, V.ARRAY, tuple(tuple(row) for row in rows)


@st.composite
def _tensor(draw: st.DrawFn) -> Tensor:
    name = draw(st.text(min_size=1, max_size=12))
    gtype = draw(st.sampled_from([*_NUMPY, GgmlType.Q8_0, GgmlType.Q4_K]))
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    if gtype in (GgmlType.Q8_0, GgmlType.Q4_K):
        shape[0] *= 32 if gtype is GgmlType.Q8_0 else 256
    return name, gtype, tuple(shape)


_entries = st.lists(_entry(), max_size=5, unique_by=lambda e: e[0])
_tensors = st.lists(_tensor(), min_size=1, max_size=3, unique_by=lambda t: t[0])
_alignments = st.sampled_from([None, 1, 8, 64])
_endians = st.sampled_from([gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])


def _writer_value(value: GgufValue) -> object:
    return [_writer_value(v) for v in value] if isinstance(value, tuple) else value


def _array(gtype: GgmlType, shape: tuple[int, ...]) -> npt.NDArray[np.generic]:
    if gtype in _NUMPY:
        return np.arange(np.prod(shape)).astype(_NUMPY[gtype]).reshape(shape[::-1])
    nbytes = row_bytes(gtype, shape[0])
    assert nbytes is not None
    return np.full((*shape[:0:-1], nbytes), 7, dtype=np.uint8)


def _write(
    path: Path,
    entries: list[Entry],
    tensors: list[Tensor],
    alignment: int | None,
    endian: gguf.GGUFEndian,
) -> None:
    writer = gguf.GGUFWriter(path, arch="test", endianess=endian)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, vtype, etype, value in entries:
        sub = None if etype is None else gguf.GGUFValueType(etype)
        writer.add_key_value(key, _writer_value(value), gguf.GGUFValueType(vtype), sub)
    for name, gtype, shape in tensors:
        data = _array(gtype, shape)
        raw = None if gtype in _NUMPY else gguf.GGMLQuantizationType(gtype)
        writer.add_tensor(name, data, raw_shape=None if raw is None else data.shape, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _flips(limit: int, n: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Up to ``n`` (position below ``limit``, non-zero XOR mask) pairs."""
    return st.lists(st.tuples(st.integers(0, limit - 1), st.integers(1, 255)), max_size=n)


def _read_ok(path: Path) -> GgufHeader:
    result = read_gguf_header(path)
    assert isinstance(result, Ok), result.error
    return result.value


def _data_end(header: GgufHeader) -> int:
    """The byte after the last tensor byte: every shorter prefix lacks data the header promises."""
    ends = []
    for t in header.tensors:
        nbytes = row_bytes(GgmlType(t.ggml_type), t.shape[0])
        assert nbytes is not None
        ends.append(header.data_offset + t.offset + nbytes * math.prod(t.shape[1:]))
    return max(ends)


def _assert_well_formed(header: GgufHeader) -> None:
    """What an Ok promises: unique keys and names; aligned, disjoint tensors inside the file."""
    keys = [k for k, _ in header.metadata]
    assert len(set(keys)) == len(keys) == len(header.value_types)
    assert len({t.name for t in header.tensors}) == len(header.tensors)
    spans = []
    for t in header.tensors:
        assert t.offset % header.alignment == 0
        if t.ggml_type in {int(g) for g in GgmlType}:
            nbytes = row_bytes(GgmlType(t.ggml_type), t.shape[0] if t.shape else 1)
            assert nbytes is not None
            start = header.data_offset + t.offset
            spans.append((start, start + nbytes * math.prod(t.shape[1:])))
    spans = sorted(s for s in spans if s[1] > s[0])
    assert all(end <= header.file_size for _, end in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(_entries, _tensors, _alignments, _endians)
def test_reads_back_what_ggufpy_wrote(
    entries: list[Entry], tensors: list[Tensor], alignment: int | None, endian: gguf.GGUFEndian
) -> None:
    """Metadata and tensor infos written by GGUFWriter read back equal, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write(d / "f.gguf", entries, tensors, alignment, endian)
        header = _read_ok(d / "f.gguf")
    expected: list[tuple[str, GgufValue, V]] = [("general.architecture", "test", V.STRING)]
    if alignment is not None:
        expected.append(("general.alignment", alignment, V.UINT32))
    for key, vtype, etype, value in entries:
        expected.append((key, value, vtype if etype is None else etype))
    assert header.metadata == tuple((k, v) for k, v, _ in expected)
    assert header.value_types == tuple((k, t) for k, _, t in expected)
    assert [(t.name, GgmlType(t.ggml_type), t.shape) for t in header.tensors] == tensors
    assert header.alignment == (alignment or 32)
    assert header.byte_order == ("big" if endian is gguf.GGUFEndian.BIG else "little")
    _assert_well_formed(header)


@settings(max_examples=6, deadline=None)
@given(_entries, _tensors, _endians)
def test_every_truncation_is_an_err(
    entries: list[Entry], tensors: list[Tensor], endian: gguf.GGUFEndian
) -> None:
    """Each prefix that cuts the header or tensor data is an Err; longer prefixes read the same."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write(d / "f.gguf", entries, tensors, None, endian)
        data = (d / "f.gguf").read_bytes()
        full = _read_ok(d / "f.gguf")
        end = _data_end(full)
        for n in range(len(data)):
            (d / "cut.gguf").write_bytes(data[:n])
            result = read_gguf_header(d / "cut.gguf")
            if n < end:
                assert isinstance(result, Err), n
                assert all(i.code in ISSUE_CODES for i in result.error)
            else:
                assert isinstance(result, Ok) and result.value.tensors == full.tensors, n


@settings(max_examples=60, deadline=None)
@given(_entries, _tensors, _endians, st.data())
def test_byte_flips_never_raise(
    entries: list[Entry], tensors: list[Tensor], endian: gguf.GGUFEndian, data: st.DataObject
) -> None:
    """Flipped header bytes give an Err with documented codes, or a well-formed Ok."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write(d / "f.gguf", entries, tensors, None, endian)
        raw = bytearray((d / "f.gguf").read_bytes())
        limit = _read_ok(d / "f.gguf").data_offset
        flips = data.draw(_flips(limit, 8))
        for at, mask in flips:
            raw[at] ^= mask
        (d / "f.gguf").write_bytes(bytes(raw))
        result = read_gguf_header(d / "f.gguf")
    if isinstance(result, Err):
        assert result.error and all(i.code in ISSUE_CODES for i in result.error)
    else:
        _assert_well_formed(result.value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.sampled_from(["<", ">"]), st.binary(max_size=300))
def test_random_bytes_after_a_valid_preamble_never_raise(
    version: int, order: str, tail: bytes
) -> None:
    """Arbitrary bytes after the magic and a valid version give an Err or a well-formed Ok."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "f.gguf").write_bytes(b"GGUF" + struct.pack(order + "I", version) + tail)
        result = read_gguf_header(d / "f.gguf")
    if isinstance(result, Err):
        assert result.error and all(i.code in ISSUE_CODES for i in result.error)
    else:
        assert result.value.version == version
        _assert_well_formed(result.value)


_REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "gguf"
_REAL_FILES = [  # small valid real files: v1, every value type, arrays, non-LLM
    "crabml__tinyllamas-stories-260k-f32.gguf",
    "hirox-gguf-parser__dummy.gguf",
    "zackshen-gguf__test-le-v3.with-arrays.gguf",
    "ggml__superpoint.gguf",
]


@pytest.mark.skipif(not _REALWORLD.is_dir(), reason=f"no real-world corpus at {_REALWORLD}")
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_REAL_FILES), st.data())
def test_byte_flips_in_real_headers_never_raise(name: str, data: st.DataObject) -> None:
    """Flipped bytes in the header of a real file give an Err or a well-formed Ok."""
    raw = bytearray((_REALWORLD / name).read_bytes())
    limit = _read_ok(_REALWORLD / name).data_offset  # flip header bytes, not tensor data
    flips = data.draw(_flips(limit, 4))
    for at, mask in flips:
        raw[at] ^= mask
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f.gguf").write_bytes(bytes(raw))
        result = read_gguf_header(Path(tmp) / "f.gguf")
    if isinstance(result, Err):
        assert result.error and all(i.code in ISSUE_CODES for i in result.error)
    else:
        _assert_well_formed(result.value)


def test_tensor_info_shapes_are_in_ggml_order() -> None:
    """A (rows, cols) numpy tensor is stored as ne0 = cols, ne1 = rows."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write(d / "f.gguf", [], [("t", GgmlType.F32, (3, 2))], None, gguf.GGUFEndian.LITTLE)
        assert _read_ok(d / "f.gguf").tensors == (TensorInfo("t", (3, 2), 0, 0),)
