"""Unit tests of ``quantdispatch.gguf``: the type table, real files, and files built here."""

from __future__ import annotations

import math
import os
import struct
import tracemalloc
from pathlib import Path

import attrs
import gguf
import numpy as np
import pytest

from quantdispatch.gguf import (
    BLOCK,
    ISSUE_CODES,
    MAX_ISSUES,
    GgmlType,
    GgufHeader,
    GgufLimits,
    GgufValueType,
    LlamaFileType,
    TensorInfo,
    bits_per_weight,
    is_quantized,
    read_gguf_header,
    row_bytes,
)
from quantdispatch.result import Err, Issue, Ok

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "gguf"

# file -> (version, metadata keys, tensors, general.architecture)
VALID = {
    "ollama__llama-2-tiny-random.gguf": (3, 18, 12, "llama"),
    "ollama__registry-testdata-empty-gguf-24-bytes.gguf": (3, 0, 0, None),
    "crabml__tinyllamas-stories-260k-f32.gguf": (1, 18, 48, "llama"),
    "ggml__superpoint.gguf": (3, 1, 24, "superpoint"),
    "hirox-gguf-parser__dummy.gguf": (3, 15, 10, None),
    "zackshen-gguf__test-le-v3.with-arrays.gguf": (3, 6, 3, "llama"),
    "emel__lifecycle_integration_smoke_model.gguf": (3, 4, 1, None),
    "emel__app_smoke_flow_a.gguf": (3, 4, 1, None),
}
# file -> the code of the first issue
REJECTED = {
    "INVALID__emel__lifecycle_integration_smoke_model.git-lfs-pointer.gguf": "gguf.magic.mismatch",
    "INVALID__ollama__api-test-6-bytes.gguf": "gguf.truncated",
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-bert-bge.corrupted.gguf": "gguf.truncated",
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-falcon.corrupted.gguf": "gguf.value_type.unknown",
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-llama-spm.corrupted.gguf": "gguf.string.too_long",
    "UNUSUAL__zackshen-gguf__test-le-v3.duplicate-kv-key.gguf": "gguf.metadata.duplicate_key",
    "UNUSUAL__zackshen-gguf__test-be-v3.big-endian.duplicate-kv-key.gguf": (
        "gguf.metadata.duplicate_key"
    ),
    # Every tensor info says offset 0 although the data lie one after another: the writer never
    # advanced the offset. gguf-py accepts it (and would read wrong data); ggml refuses it.
    "threatflux__test_model.gguf": "gguf.tensor.overlap",
}


def _realworld(name: str) -> Path:
    if not REALWORLD.is_dir():
        pytest.skip(f"the real-world corpus is not at {REALWORLD}")
    return REALWORLD / name


def _ok(path: Path) -> GgufHeader:
    result = read_gguf_header(path)
    assert isinstance(result, Ok), result.error
    return result.value


def _err(path: Path) -> tuple[Issue, ...]:
    result = read_gguf_header(path)
    assert isinstance(result, Err), f"expected an Err, read {result.value}"
    assert all(i.code in ISSUE_CODES for i in result.error)
    return result.error


def _codes(path: Path) -> list[str]:
    return [i.code for i in _err(path)]


class _Gguf:
    """Builds GGUF bytes by hand, field by field, so that any field can be wrong."""

    def __init__(self, version: int = 3, order: str = "<") -> None:
        self.version, self.order = version, order
        self.width = "I" if version == 1 else "Q"
        self.kvs: list[bytes] = []
        self.infos: list[bytes] = []

    def pack(self, fmt: str, *values: int | float) -> bytes:
        return struct.pack(self.order + fmt, *values)

    def string(self, text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        return self.pack(self.width, len(raw)) + raw

    def kv(self, key: str | bytes, vtype: int, payload: bytes) -> _Gguf:
        self.kvs.append(self.string(key) + self.pack("I", vtype) + payload)
        return self

    def kv_u32(self, key: str, value: int) -> _Gguf:
        return self.kv(key, GgufValueType.UINT32, self.pack("I", value))

    def kv_str(self, key: str | bytes, value: str | bytes) -> _Gguf:
        return self.kv(key, GgufValueType.STRING, self.string(value))

    def array(self, etype: int, count: int, payload: bytes = b"") -> bytes:
        return self.pack("I", etype) + self.pack(self.width, count) + payload

    def tensor(
        self, name: str | bytes, shape: tuple[int, ...], ggml_type: int, offset: int
    ) -> _Gguf:
        dims = self.pack(f"{len(shape)}{self.width}", *shape)
        info = self.string(name) + self.pack("I", len(shape)) + dims
        self.infos.append(info + self.pack("I", ggml_type) + self.pack("Q", offset))
        return self

    def build(self, data: bytes = b"", alignment: int = 32) -> bytes:
        head = b"GGUF" + self.pack("I", self.version)
        head += self.pack(self.width * 2, len(self.infos), len(self.kvs))
        head += b"".join(self.kvs) + b"".join(self.infos)
        return head + bytes(-len(head) % alignment) + data


def _write(tmp_path: Path, data: bytes, name: str = "t.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- the type table -----------------------------------------------------------------------


def test_block_table_covers_every_type() -> None:
    """Every GgmlType has a block geometry, and only live types are members."""
    assert set(BLOCK) == set(GgmlType)
    assert all(n >= 1 and size >= 1 for n, size in BLOCK.values())


def test_block_geometry_of_common_types() -> None:
    """The block sizes match the ggml structs of the common types."""
    assert BLOCK[GgmlType.Q4_0] == (32, 18)
    assert BLOCK[GgmlType.Q8_0] == (32, 34)
    assert BLOCK[GgmlType.Q4_K] == (256, 144)
    assert BLOCK[GgmlType.Q6_K] == (256, 210)
    assert BLOCK[GgmlType.MXFP4] == (32, 17)


def test_row_bytes_and_bits_per_weight() -> None:
    """Row sizes follow the blocks, and a row that is not whole blocks has no size."""
    assert row_bytes(GgmlType.Q4_K, 4096) == 16 * 144
    assert row_bytes(GgmlType.F32, 7) == 28
    assert row_bytes(GgmlType.Q4_K, 100) is None
    assert row_bytes(GgmlType.F16, -1) is None
    assert bits_per_weight(GgmlType.Q4_K) == 4.5
    assert bits_per_weight(GgmlType.BF16) == 16.0


def test_is_quantized_and_recipe() -> None:
    """Block types are quantized, plain types are not; file types carry a recipe label."""
    assert is_quantized(GgmlType.IQ2_XXS) and not is_quantized(GgmlType.F64)
    assert LlamaFileType.MOSTLY_Q4_K_M.recipe == "Q4_K_M"
    assert LlamaFileType.ALL_F32.recipe == "F32"
    assert LlamaFileType.GUESSED.recipe == "GUESSED"


# --- real files ---------------------------------------------------------------------------


def test_every_realworld_file_is_expected() -> None:
    """Each file of the corpus is listed here as valid or rejected, so new files get a test."""
    names = {p.name for p in _realworld("").glob("*.gguf")}
    assert names == set(VALID) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(VALID))
def test_realworld_valid_file_reads(name: str) -> None:
    """A valid real file is Ok, with its version, key and tensor counts and architecture."""
    header = _ok(_realworld(name))
    version, n_kv, n_tensors, arch = VALID[name]
    assert (header.version, len(header.metadata), len(header.tensors)) == (version, n_kv, n_tensors)
    assert header.get("general.architecture") == arch
    assert header.byte_order == "little"
    assert header.data_offset % header.alignment == 0


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_realworld_rejected_file_errs(name: str) -> None:
    """A corrupt, truncated or ill-formed real file is an Err with the expected first code."""
    assert _codes(_realworld(name))[0] == REJECTED[name]


def test_git_lfs_pointer_gets_a_hint() -> None:
    """A git-lfs pointer is named as such, with the command that fetches the file."""
    (issue,) = _err(_realworld(next(n for n in REJECTED if "git-lfs" in n)))
    assert issue.path == "$[offset 0]" and "b'vers'" in issue.message
    assert issue.hint is not None and "git lfs pull" in issue.hint


def test_corrupt_vocab_reports_the_item_and_offset() -> None:
    """A corrupt length names the metadata item it belongs to and where it is."""
    name = "INVALID__ushure-llama-jni-bridge__ggml-vocab-bert-bge.corrupted.gguf"
    issue = _err(_realworld(name))[-1]
    assert issue.path == "$[offset 220]"
    assert "metadata key #5 name" in issue.message and "1572864 bytes" in issue.message


def test_v1_file_reads_32_bit_counts() -> None:
    """The GGUF v1 file reads with 32-bit counts, and its tensors end exactly at the file end."""
    header = _ok(_realworld("crabml__tinyllamas-stories-260k-f32.gguf"))
    assert header.tensors[0] == TensorInfo("token_embd.weight", (64, 512), 0, 0)
    ends = [header.data_offset + t.offset + 4 * math.prod(t.shape) for t in header.tensors]
    assert max(ends) == header.file_size
    tokens = header.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, tuple) and tokens[:3] == ("<unk>", "<s>", "</s>")


def test_every_value_type_of_the_dummy_file() -> None:
    """The file with one key of each type reads each with its declared type and value."""
    header = _ok(_realworld("hirox-gguf-parser__dummy.gguf"))
    assert header.get("some.parameter.int8") == -19
    assert header.get("some.parameter.uint64") == 0x123456789ABCDEF0
    assert header.get("some.parameter.bool") is True
    assert header.get("some.parameter.arr.str") == ("hello", "world", "!")
    assert header.value_type("some.parameter.arr.i16") is GgufValueType.INT16
    assert header.value_type("some.parameter.float64") is GgufValueType.FLOAT64


def _dedup(data: bytes) -> bytes:
    # Rename the second general.architecture (same length) so that the twins become valid.
    first = data.index(b"general.architecture")
    second = data.index(b"general.architecture", first + 1)
    return data[:second] + b"general.architecturf" + data[second + 20 :]


def test_big_endian_twin_reads_like_the_little_endian_one(tmp_path: Path) -> None:
    """The big-endian file, duplicate key renamed, reads big-endian and equals its LE twin."""
    be_path = _realworld("UNUSUAL__zackshen-gguf__test-be-v3.big-endian.duplicate-kv-key.gguf")
    le_path = _realworld("UNUSUAL__zackshen-gguf__test-le-v3.duplicate-kv-key.gguf")
    be = _ok(_write(tmp_path, _dedup(be_path.read_bytes()), "be.gguf"))
    le = _ok(_write(tmp_path, _dedup(le_path.read_bytes()), "le.gguf"))
    assert (be.byte_order, le.byte_order) == ("big", "little")
    assert be.metadata == le.metadata and be.tensors == le.tensors
    assert be.get("general.architecturf") == "llama" and len(be.tensors) == 3


# --- files written by gguf-py -------------------------------------------------------------


def _write_with_ggufpy(path: Path, endian: gguf.GGUFEndian) -> None:
    writer = gguf.GGUFWriter(path, arch="llama", endianess=endian)
    writer.add_uint8("u8", 200)
    writer.add_int64("i64", -(2**63))
    writer.add_float32("f32", 0.5)
    writer.add_bool("flag", False)
    writer.add_string("name", "tiny ✓")
    writer.add_array("tokens", ["<s>", "é", ""])
    writer.add_key_value("ids", [1, 2, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT16)
    writer.add_tensor("w", np.zeros((3, 4), dtype=np.float32))
    q = np.zeros((2, 34), dtype=np.uint8)  # two rows of one Q8_0 block
    writer.add_tensor("q", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_file_written_by_ggufpy_reads_back(tmp_path: Path, endian: gguf.GGUFEndian) -> None:
    """A file from GGUFWriter, in either byte order, reads back as written."""
    path = tmp_path / "w.gguf"
    _write_with_ggufpy(path, endian)
    header = _ok(path)
    assert header.byte_order == ("big" if endian is gguf.GGUFEndian.BIG else "little")
    assert header.metadata == (
        ("general.architecture", "llama"),
        ("u8", 200),
        ("i64", -(2**63)),
        ("f32", 0.5),
        ("flag", False),
        ("name", "tiny ✓"),
        ("tokens", ("<s>", "é", "")),
        ("ids", (1, 2, 3)),
    )
    assert header.value_type("ids") is GgufValueType.UINT16
    assert header.tensors == (TensorInfo("w", (4, 3), 0, 0), TensorInfo("q", (32, 2), 8, 64))


# --- files built by hand ------------------------------------------------------------------


def test_zero_counts_header_is_valid(tmp_path: Path) -> None:
    """A 24-byte header with no keys and no tensors is Ok; its data offset passes the file end."""
    header = _ok(_write(tmp_path, _Gguf().build()[:24]))
    assert (header.metadata, header.tensors) == ((), ())
    assert (header.alignment, header.data_offset, header.file_size) == (32, 32, 24)


def test_v1_file_built_by_hand(tmp_path: Path) -> None:
    """A v1 file (32-bit lengths and dimensions) reads its keys and tensors."""
    data = _Gguf(version=1).kv_str("general.name", "v1").tensor("t", (2, 3), 0, 0).build(bytes(24))
    header = _ok(_write(tmp_path, data))
    assert header.version == 1 and header.get("general.name") == "v1"
    assert header.tensors == (TensorInfo("t", (2, 3), 0, 0),)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "gguf.truncated"),
        (b"GGU", "gguf.truncated"),
        (b"GGML\x03\x00\x00\x00", "gguf.magic.mismatch"),
        (b"GGUF\x04\x00\x00\x00" + bytes(16), "gguf.version.unsupported"),
        (b"GGUF\x00\x00\x00\x00" + bytes(16), "gguf.version.unsupported"),
        (b"GGUF\x03\x00\x00\x00" + bytes(8), "gguf.truncated"),
    ],
)
def test_broken_preamble(tmp_path: Path, data: bytes, code: str) -> None:
    """An empty, short, foreign or future file fails at its first bytes with one issue."""
    (issue,) = _err(_write(tmp_path, data))
    assert issue.code == code


def test_magic_hints_name_the_foreign_format(tmp_path: Path) -> None:
    """Old GGML files, safetensors and HTML pages are recognised in the hint."""
    safetensors = struct.pack("<Q", 2) + b'{"a": 1}'
    cases = [(b"tjgg" + bytes(8), "GGJT"), (safetensors, "safetensors"), (b"<html>", "HTML")]
    for data, word in cases:
        (issue,) = _err(_write(tmp_path, data))
        assert issue.hint is not None and word in issue.hint


def test_future_version_hint(tmp_path: Path) -> None:
    """A version 4 file is reported with its bytes and a hint to upgrade."""
    (issue,) = _err(_write(tmp_path, b"GGUF\x04\x00\x00\x00" + bytes(16)))
    assert issue.path == "$[offset 4]" and "04 00 00 00" in issue.message
    assert issue.hint is not None and "newer" in issue.hint


def test_truncated_value_names_key_and_offset(tmp_path: Path) -> None:
    """A file cut inside a value names the key, its position and the byte offset."""
    data = _Gguf().kv_u32("a", 1).kv_str("general.name", "abcdef").build()
    cut = data.index(b"abcdef") + 3
    (issue,) = _err(_write(tmp_path, data[:cut]))
    assert issue.code == "gguf.truncated"
    assert "metadata key #1 'general.name' value" in issue.message
    assert f"ends at byte {cut}" in issue.message and issue.path.startswith("$[offset ")


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_alignment_not_a_power_of_two(tmp_path: Path, alignment: int) -> None:
    """general.alignment must be a non-zero power of two."""
    (issue,) = _err(_write(tmp_path, _Gguf().kv_u32("general.alignment", alignment).build()))
    assert issue.code == "gguf.alignment.invalid"
    assert issue.path == '$.metadata["general.alignment"]' and str(alignment) in issue.message


def test_alignment_of_the_wrong_type(tmp_path: Path) -> None:
    """general.alignment stored as a UINT64 is refused: the format says UINT32."""
    g = _Gguf()
    (issue,) = _err(_write(tmp_path, g.kv("general.alignment", 10, g.pack("Q", 64)).build()))
    assert issue.code == "gguf.alignment.invalid" and "UINT64" in issue.message


def test_custom_alignment_places_the_data(tmp_path: Path) -> None:
    """A 256-byte alignment rounds the data offset up to 256."""
    data = _Gguf().kv_u32("general.alignment", 256).tensor("t", (4,), 0, 0).build(bytes(16), 256)
    header = _ok(_write(tmp_path, data))
    assert (header.alignment, header.data_offset) == (256, 256)


def test_misaligned_offset(tmp_path: Path) -> None:
    """A tensor offset that is not a multiple of the alignment is reported at the tensor."""
    data = _Gguf().tensor("a", (4,), 0, 0).tensor("b", (4,), 0, 16).build(bytes(64))
    (issue,) = _err(_write(tmp_path, data))
    assert (issue.code, issue.path) == ("gguf.tensor.offset_misaligned", "$.tensors[1]")
    assert "16" in issue.message


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    """Two tensor infos with one name are reported at the second."""
    data = _Gguf().tensor("w", (8,), 0, 0).tensor("w", (8,), 0, 32).build(bytes(64))
    (issue,) = _err(_write(tmp_path, data))
    assert (issue.code, issue.path) == ("gguf.tensor.duplicate_name", "$.tensors[1]")


def test_duplicate_key_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    """A repeated key and a later misaligned tensor are both reported."""
    data = _Gguf().kv_u32("k", 1).kv_u32("k", 2).tensor("t", (1,), 0, 4).build(bytes(64))
    issues = _err(_write(tmp_path, data))
    codes = [i.code for i in issues]
    assert codes == ["gguf.metadata.duplicate_key", "gguf.tensor.offset_misaligned"]
    assert issues[0].path == '$.metadata["k"]'


def test_unknown_value_type(tmp_path: Path) -> None:
    """A value type outside 0-12 stops the reading, quoting the type and the key."""
    (issue,) = _err(_write(tmp_path, _Gguf().kv("x", 13, bytes(8)).build()))
    assert (issue.code, issue.path) == ("gguf.value_type.unknown", '$.metadata["x"]')
    assert "13" in issue.message


def test_unknown_array_element_type(tmp_path: Path) -> None:
    """An array whose element type is outside 0-12 is refused."""
    g = _Gguf()
    (issue,) = _err(_write(tmp_path, g.kv("arr", 9, g.array(99, 1, bytes(8))).build()))
    assert issue.code == "gguf.value_type.unknown" and "99" in issue.message


def test_tensor_past_end_of_file(tmp_path: Path) -> None:
    """A tensor whose data would end past the file end is out of bounds."""
    data = _Gguf().tensor("big", (4096, 4), 8, 0).build(bytes(100))
    (issue,) = _err(_write(tmp_path, data))
    assert (issue.code, issue.path) == ("gguf.tensor.out_of_bounds", "$.tensors[0]")
    assert "Q8_0" in issue.message and f"the file has {len(data)} bytes" in issue.message
    assert f"-{len(data) - 100 + 4096 * 4 // 32 * 34}," in issue.message


def test_unknown_ggml_type_is_kept(tmp_path: Path) -> None:
    """An unknown tensor type id (a removed repack type) is not the reader's error."""
    header = _ok(_write(tmp_path, _Gguf().tensor("t", (32,), 31, 0).build(bytes(32))))
    assert header.tensors[0].ggml_type == 31


def test_row_that_is_not_whole_blocks(tmp_path: Path) -> None:
    """A Q4_K tensor with rows of 100 weights has no byte size and is refused."""
    (issue,) = _err(_write(tmp_path, _Gguf().tensor("t", (100, 2), 12, 0).build(bytes(512))))
    assert issue.code == "gguf.tensor.shape_misaligned" and "256" in issue.message


def test_too_many_dimensions(tmp_path: Path) -> None:
    """A tensor with five dimensions is refused (ggml has four)."""
    (issue,) = _err(_write(tmp_path, _Gguf().tensor("t", (1, 1, 1, 1, 1), 0, 0).build(bytes(4))))
    assert issue.code == "gguf.tensor.shape_invalid"


def test_overlapping_tensors(tmp_path: Path) -> None:
    """Two tensors whose bytes overlap are reported at the later one."""
    data = _Gguf().tensor("a", (16,), 0, 0).tensor("b", (16,), 0, 32).build(bytes(96))
    (issue,) = _err(_write(tmp_path, data))
    assert (issue.code, issue.path) == ("gguf.tensor.overlap", "$.tensors[1]")


def test_invalid_utf8(tmp_path: Path) -> None:
    """A key, a string value and a tensor name that are not UTF-8 are each reported."""
    data = _Gguf().kv_str("k", b"ok\xff").kv_str(b"\xc3", "v").tensor(b"\xed\xa0\x80", (1,), 0, 0)
    issues = _err(_write(tmp_path, data.build(bytes(32))))
    assert [i.code for i in issues] == ["gguf.string.invalid_utf8"] * 3
    assert [i.path for i in issues] == ['$.metadata["k"]', "$.metadata[#1]", "$.tensors[0]"]


def test_invalid_utf8_in_a_one_element_array(tmp_path: Path) -> None:
    """A bad string in an array is located by its index, even when it is the only element."""
    g = _Gguf()
    (issue,) = _err(_write(tmp_path, g.kv("a", 9, g.array(8, 1, g.string(b"\x80"))).build()))
    assert (issue.code, issue.path) == ("gguf.string.invalid_utf8", '$.metadata["a"][0]')
    assert "b'\\x80'" in issue.message


def test_invalid_bool(tmp_path: Path) -> None:
    """A bool byte of 2 is reported at its array element."""
    g = _Gguf()
    (issue,) = _err(_write(tmp_path, g.kv("b", 9, g.array(7, 3, b"\x00\x01\x02")).build()))
    assert (issue.code, issue.path) == ("gguf.bool.invalid", '$.metadata["b"][2]')


def test_nested_and_empty_arrays(tmp_path: Path) -> None:
    """Arrays of arrays nest as tuples; an empty array is an empty tuple."""
    g = _Gguf()
    inner = g.array(5, 2, g.pack("2i", -1, 7)) + g.array(5, 0)
    data = g.kv("nested", 9, g.array(9, 2, inner)).kv("empty", 9, g.array(8, 0)).build()
    header = _ok(_write(tmp_path, data))
    assert header.get("nested") == ((-1, 7), ())
    assert header.get("empty") == ()
    assert header.value_type("nested") is GgufValueType.ARRAY


def test_nesting_depth_is_bounded(tmp_path: Path) -> None:
    """Arrays nested past max_array_depth are refused."""
    g = _Gguf()
    value = g.array(5, 0)
    for _ in range(3):
        value = g.array(9, 1, value)
    path = _write(tmp_path, g.kv("deep", 9, value).build())
    assert isinstance(read_gguf_header(path, limits=GgufLimits(max_array_depth=4)), Ok)
    result = read_gguf_header(path, limits=GgufLimits(max_array_depth=3))
    assert isinstance(result, Err) and result.error[0].code == "gguf.array.too_deep"


def test_limits_on_strings_values_and_header(tmp_path: Path) -> None:
    """Each limit turns an oversized header into an Err instead of an allocation."""
    g = _Gguf().kv_str("s", "x" * 100).kv("a", 9, _Gguf().array(0, 50, bytes(50)))
    path = _write(tmp_path, g.build())
    for limits, code in [
        (GgufLimits(max_string_bytes=99), "gguf.string.too_long"),
        (GgufLimits(max_values=40), "gguf.header.too_large"),
        (GgufLimits(max_header_bytes=100), "gguf.header.too_large"),
    ]:
        result = read_gguf_header(path, limits=limits)
        assert isinstance(result, Err) and [i.code for i in result.error] == [code]


def test_huge_counts_fail_fast(tmp_path: Path) -> None:
    """Counts of 2**60 fail against the file size without allocating anything."""
    g = _Gguf()
    huge_array = g.kv("a", 9, g.array(10, 2**60)).build()
    huge_kv = b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60)
    huge_string = _Gguf().kv("s", 8, struct.pack("<Q", 2**40)).build()
    cases = [
        (huge_array, "gguf.truncated"),
        (huge_kv, "gguf.truncated"),
        (huge_string, "gguf.string.too_long"),
    ]
    for data, code in cases:
        assert _codes(_write(tmp_path, data)) == [code]


def test_only_the_header_of_a_huge_file_is_read(tmp_path: Path) -> None:
    """An 8 GiB (sparse) file reads its header Ok without touching the tensor data."""
    path = _write(tmp_path, _Gguf().tensor("w", (2**20, 2**11), 0, 0).build())
    os.truncate(path, path.stat().st_size + 2**33)
    tracemalloc.start()
    header = _ok(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert header.file_size == header.data_offset + 2**33 and peak < 2**20


def test_a_huge_declared_array_is_not_allocated(tmp_path: Path) -> None:
    """A 2 GiB file whose array claims 2**31 elements fails on the value budget, not on memory."""
    g = _Gguf()
    path = _write(tmp_path, g.kv("a", 9, g.array(0, 2**31)).build())
    os.truncate(path, 2**31 + 4096)
    tracemalloc.start()
    codes = _codes(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert codes == ["gguf.header.too_large"] and peak < 2**20


def test_too_many_issues_stop_the_reading(tmp_path: Path) -> None:
    """A header with hundreds of bad strings stops at MAX_ISSUES issues."""
    g = _Gguf()
    payload = b"".join(g.string(b"\xff") for _ in range(300))
    issues = _err(_write(tmp_path, g.kv("t", 9, g.array(8, 300, payload)).build()))
    assert len(issues) == MAX_ISSUES + 1 and issues[-1].code == "gguf.issues.too_many"


def test_unreadable_paths(tmp_path: Path) -> None:
    """A missing file, a directory and a NUL in the path are unreadable, not exceptions."""
    for path in (tmp_path / "missing.gguf", tmp_path, "a\0b"):
        result = read_gguf_header(path)
        assert isinstance(result, Err)
        assert [(i.code, i.path) for i in result.error] == [("gguf.file.unreadable", "$")]


def test_header_get_and_value_type() -> None:
    """get and value_type find keys and answer None for absent ones."""
    header = GgufHeader(
        version=3,
        byte_order="little",
        metadata=(("a", 1), ("b", ("x",))),
        value_types=(("a", GgufValueType.INT32), ("b", GgufValueType.STRING)),
        tensors=(),
        alignment=32,
        data_offset=64,
        file_size=64,
    )
    assert (header.get("a"), header.get("b"), header.get("c")) == (1, ("x",), None)
    assert header.value_type("b") is GgufValueType.STRING and header.value_type("c") is None
    twin = attrs.evolve(header)
    assert twin == header and hash(twin) == hash(header) and twin.get("a") == 1
