"""Our GGUF reader and type tables against gguf-py 0.19.0 (``GGUFReader``, its constants).

Both readers must agree on every file both accept: keys, values, declared types, tensor names,
shapes, type ids, data offsets. Where they disagree by design, the case is in a table below with
the reason; a mismatch reports the first differing key or tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from quantdispatch.gguf import (
    BLOCK,
    GgmlType,
    GgufHeader,
    GgufValue,
    GgufValueType,
    LlamaFileType,
    read_gguf_header,
    row_bytes,
)
from quantdispatch.result import Err, Ok

if TYPE_CHECKING:
    import gguf
else:
    gguf = pytest.importorskip("gguf")

import numpy as np  # a dependency of gguf, so present whenever the module above is

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "gguf"

# Real files on which the two readers answer differently: file -> (ours, gguf-py, why).
# "Ok" or our first issue code; "Ok" or the exception gguf-py raises.
FILE_DIVERGENCES: dict[str, tuple[str, str, str]] = {
    "crabml__tinyllamas-stories-260k-f32.gguf": (
        "Ok", "ValueError", "gguf-py reads v2 and v3 only; we also read v1 (32-bit counts and dims)"
    ),
    "threatflux__test_model.gguf": (
        "gguf.tensor.overlap", "Ok", "all three tensors claim offset 0; gguf-py does not check, "
        "so it would hand out wrong data; ggml refuses any offset but the running sum"
    ),
    "UNUSUAL__zackshen-gguf__test-le-v3.duplicate-kv-key.gguf": (
        "gguf.metadata.duplicate_key", "KeyError", "gguf-py raises on the first duplicate; we "
        "report every duplicate with its position and go on reading"
    ),
    "UNUSUAL__zackshen-gguf__test-be-v3.big-endian.duplicate-kv-key.gguf": (
        "gguf.metadata.duplicate_key", "KeyError", "as the little-endian twin"
    ),
    "INVALID__emel__lifecycle_integration_smoke_model.git-lfs-pointer.gguf": (
        "gguf.magic.mismatch", "ValueError", "both refuse; gguf-py by exception, without a hint"
    ),
    "INVALID__ollama__api-test-6-bytes.gguf": (
        "gguf.truncated", "ValueError", "both refuse; gguf-py's message is a numpy view error"
    ),
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-bert-bge.corrupted.gguf": (
        "gguf.truncated", "IndexError", "both refuse; gguf-py reads past the end and fails later"
    ),
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-falcon.corrupted.gguf": (
        "gguf.value_type.unknown", "ValueError", "both refuse"
    ),
    "INVALID__ushure-llama-jni-bridge__ggml-vocab-llama-spm.corrupted.gguf": (
        "gguf.string.too_long", "IndexError", "both refuse; we stop at the 69 GB string length"
    ),
}

# Behaviours that differ by design, each checked by a test below (or above, for files).
KNOWN_DIVERGENCES: tuple[tuple[str, str, str, str], ...] = (
    # (case, ours, gguf-py, why)
    ("GGUF v1 file", "Ok", "ValueError", "v1 is old but still found (crabml's test model)"),
    ("duplicate metadata key", "Err, every duplicate", "KeyError on the first", "errors as values"),
    ("overlapping tensor data", "Err gguf.tensor.overlap", "Ok", "ggml refuses such files"),
    ("array of arrays", "tuple of tuples", "one flat list (its FIXME)", "keep the structure"),
    ("Q8_1 block", "(32, 36)", "(32, 40)", "ggml's block_q8_1 is f16 d, f16 s, 32 x i8 since 2024"),
    ("bool byte 2", "Err gguf.bool.invalid", "True", "only 0 and 1 are bools; 2 is corruption"),
    ("unknown tensor type id", "Ok, id kept", "ValueError", "the parser judges types, with hints"),
    ("data past the end of file", "Err gguf.tensor.out_of_bounds", "ValueError (reshape)", "coded"),
)

BLOCK_DIVERGENCES = {GgmlType.Q8_1: ((32, 2 + 2 + 32), (32, 4 + 4 + 32))}


def _theirs(path: Path) -> gguf.GGUFReader | str:
    try:
        return gguf.GGUFReader(path)
    except Exception as e:
        return type(e).__name__


def _leaves(value: GgufValue) -> Iterator[GgufValue]:
    if isinstance(value, tuple):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _flatten(value: GgufValue) -> GgufValue:
    return tuple(_leaves(value)) if isinstance(value, tuple) else value


def _their_value(field: gguf.ReaderField) -> GgufValue:
    """A gguf-py field as our value; gguf-py flattens nested arrays, so we compare flat."""
    main = field.types[0]
    value: GgufValue
    if main is gguf.GGUFValueType.STRING:
        value = bytes(field.parts[field.data[0]]).decode()
    elif main is gguf.GGUFValueType.ARRAY and field.types[-1] is gguf.GGUFValueType.STRING:
        value = tuple(bytes(field.parts[i]).decode() for i in field.data)
    elif main is gguf.GGUFValueType.ARRAY:
        value = tuple(x for i in field.data for x in field.parts[i].tolist())
    else:
        value = field.parts[field.data[0]].tolist()[0]
    return value


def _their_type(field: gguf.ReaderField) -> int:
    # For an array, the element type is the part after key length, key and value type.
    if field.types[0] is gguf.GGUFValueType.ARRAY:
        return int(field.parts[3][0])
    return int(field.types[0])


def _assert_same(ours: GgufHeader, theirs: gguf.GGUFReader) -> None:
    fields = [(k, f) for k, f in theirs.fields.items() if not k.startswith("GGUF.")]
    assert [k for k, _ in ours.metadata] == [k for k, _ in fields]
    for (key, value), (_, vtype), (_, field) in zip(ours.metadata, ours.value_types, fields, strict=False):
        assert _flatten(value) == _their_value(field), f"first differing key: {key!r}"
        assert int(vtype) == _their_type(field), f"first differing type: {key!r}"
    assert len(ours.tensors) == len(theirs.tensors)
    for mine, t in zip(ours.tensors, theirs.tensors, strict=False):
        assert (mine.name, mine.shape) == (t.name, tuple(int(d) for d in t.shape)), mine.name
        assert mine.ggml_type == int(t.tensor_type), mine.name
        assert ours.data_offset + mine.offset == t.data_offset, mine.name
        nbytes = row_bytes(GgmlType(mine.ggml_type), mine.shape[0])
        assert nbytes is not None and nbytes * math.prod(mine.shape[1:]) == t.n_bytes, mine.name
    assert (ours.alignment, ours.data_offset) == (theirs.alignment, theirs.data_offset)
    assert ours.version == int(theirs.fields["GGUF.version"].parts[0][0])
    big = theirs.endianess is gguf.GGUFEndian.BIG
    assert ours.byte_order == ("big" if big else "little")


def _realworld_files() -> list[str]:
    return sorted(p.name for p in REALWORLD.glob("*.gguf")) if REALWORLD.is_dir() else []


def _realworld_params() -> list[Any]:
    """One case per real file, or one visibly skipped case when the corpus is absent."""
    names = _realworld_files()
    if not names:
        return [pytest.param("absent", marks=pytest.mark.skip(reason=f"no real-world corpus at {REALWORLD}"))]
    return names


@pytest.mark.parametrize("name", _realworld_params())
def test_realworld_file_agrees_or_diverges_as_listed(name: str) -> None:
    """Each real file reads the same in both, or differs exactly as FILE_DIVERGENCES says."""
    path = REALWORLD / name
    ours, theirs = read_gguf_header(path), _theirs(path)
    if isinstance(ours, Ok) and not isinstance(theirs, str):
        assert name not in FILE_DIVERGENCES
        _assert_same(ours.value, theirs)
        return
    mine = "Ok" if isinstance(ours, Ok) else ours.error[0].code
    their = theirs if isinstance(theirs, str) else "Ok"
    assert (mine, their) == FILE_DIVERGENCES[name][:2]


def test_the_divergence_table_names_real_files() -> None:
    """Every file in FILE_DIVERGENCES exists in the corpus (no stale rows)."""
    if not REALWORLD.is_dir():
        pytest.skip(f"the real-world corpus is not at {REALWORLD}")
    assert set(FILE_DIVERGENCES) <= set(_realworld_files())
    assert len(KNOWN_DIVERGENCES) == len({case for case, *_ in KNOWN_DIVERGENCES})


def _write(path: Path, endian: gguf.GGUFEndian, alignment: int | None, vocab: int) -> None:
    writer = gguf.GGUFWriter(path, arch="llama", endianess=endian)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_uint64("n", 2**64 - 1)
    writer.add_float64("eps", 1e-300)
    writer.add_bool("yes", True)
    writer.add_array("nested", [[1, 2], [3]])
    writer.add_key_value("f", [0.5, -2.0], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    writer.add_token_list([f"tok{i}✓" for i in range(vocab)])
    writer.add_token_scores([float(-i) for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    for i, qtype in enumerate(gguf.GGMLQuantizationType):
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        if qtype is gguf.GGMLQuantizationType.Q8_1:
            continue  # its block size differs (BLOCK_DIVERGENCES); tested on its own
        raw = np.zeros((2, size * (256 // block)), dtype=np.uint8)
        writer.add_tensor(f"t{i}.{qtype.name}", raw, raw_shape=raw.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize(
    ("endian", "alignment", "vocab"),
    [
        (gguf.GGUFEndian.LITTLE, None, 3),
        (gguf.GGUFEndian.BIG, None, 3),
        (gguf.GGUFEndian.LITTLE, 64, 1000),
        (gguf.GGUFEndian.BIG, 128, 1000),
    ],
)
def test_generated_file_agrees(
    tmp_path: Path, endian: gguf.GGUFEndian, alignment: int | None, vocab: int
) -> None:
    """A file with a tensor of every type, a vocabulary and nested arrays reads the same."""
    path = tmp_path / "g.gguf"
    _write(path, endian, alignment, vocab)
    ours = read_gguf_header(path)
    assert isinstance(ours, Ok), ours.error
    _assert_same(ours.value, gguf.GGUFReader(path))
    assert ours.value.get("nested") == ((1, 2), (3,))  # gguf-py: [1, 2, 3]
    assert len(ours.value.tensors) == len(GgmlType) - 1


def test_bool_byte_two(tmp_path: Path) -> None:
    """A bool stored as 2 is our Err and gguf-py's True."""
    path = tmp_path / "b.gguf"
    writer = gguf.GGUFWriter(path, arch="x")
    writer.add_bool("flag", True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    data = path.read_bytes()
    at = data.index(b"flag") + 4 + 4  # the key, then the value type
    path.write_bytes(data[:at] + b"\x02" + data[at + 1 :])
    ours = read_gguf_header(path)
    assert isinstance(ours, Err) and ours.error[0].code == "gguf.bool.invalid"
    assert gguf.GGUFReader(path).fields["flag"].contents() is True


def test_unknown_tensor_type_id(tmp_path: Path) -> None:
    """A removed type id (31, Q4_0_4_4) is kept by us and refused by gguf-py."""
    path = tmp_path / "u.gguf"
    writer = gguf.GGUFWriter(path, arch="x")
    writer.add_tensor("weight", np.zeros(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    at = data.index(b"weight") + 6 + 4 + 8  # the name, n_dims, one dimension
    path.write_bytes(data[:at] + (31).to_bytes(4, "little") + data[at + 4 :])
    ours = read_gguf_header(path)
    assert isinstance(ours, Ok) and ours.value.tensors[0].ggml_type == 31
    assert _theirs(path) == "ValueError"


def test_ggml_type_ids_match() -> None:
    """GgmlType has exactly gguf-py's names and ids."""
    assert {t.name: int(t) for t in GgmlType} == {t.name: int(t) for t in gguf.GGMLQuantizationType}


def test_block_table_matches() -> None:
    """BLOCK equals GGML_QUANT_SIZES for every type, except the listed divergences."""
    for t in GgmlType:
        theirs = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(t))]
        assert (BLOCK[t], theirs) == BLOCK_DIVERGENCES.get(t, (theirs, theirs)), t.name


def test_file_and_value_types_match() -> None:
    """LlamaFileType and GgufValueType have exactly gguf-py's names and values."""
    assert {t.name: int(t) for t in LlamaFileType} == {t.name: int(t) for t in gguf.LlamaFileType}
    assert {t.name: int(t) for t in GgufValueType} == {t.name: int(t) for t in gguf.GGUFValueType}
