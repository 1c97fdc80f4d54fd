"""Our safetensors header check against the safetensors library itself: every file the library
refuses is refused here with a coded issue that says why, and every file accepted here is one the
library opens and reads tensor by tensor (a differential property test over generated files)."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantdispatch.loading.safetensors import DTYPE_BYTES, MAX_HEADER_BYTES, read_safetensors
from quantdispatch.result import Err, Ok

safetensors = pytest.importorskip("safetensors")


def _file(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def _entry(begin: int, end: int, shape: list[int] | None = None, dtype: str = "F32") -> dict[str, object]:
    return {"dtype": dtype, "shape": [(end - begin) // DTYPE_BYTES[dtype]] if shape is None else shape, "data_offsets": [begin, end]}


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _theirs(path: Path) -> str | None:
    """``None`` where the library opens the file and reads every tensor, else its error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                f.get_tensor(name)
            f.metadata()
    except Exception as e:  # the library's errors: SafetensorError, and its own exceptions from torch
        return f"{type(e).__name__}: {e}"
    return None


def _ours(path: Path) -> list[str]:
    found = read_safetensors(path)
    return [i.code for i in found.error] if isinstance(found, Err) else []


# Each file the library refuses and our header check used to accept, with the code we give now.
REFUSED = {
    "gap_at_start": (_json({"a": _entry(8, 16)}), bytes(16), "safetensors.data.gap"),
    "gap_between": (_json({"a": _entry(0, 8), "b": _entry(16, 24)}), bytes(24), "safetensors.data.gap"),
    "trailing_bytes": (_json({"a": _entry(0, 8)}), bytes(16), "safetensors.data.trailing"),
    "data_without_tensors": (b"{}", bytes(8), "safetensors.data.trailing"),
    "empty_tensor_inside_another": (_json({"a": _entry(0, 8), "z": _entry(4, 4, [0]), "b": _entry(8, 16)}), bytes(16),
                                    "safetensors.tensor.overlap"),
    "metadata_value_not_string": (_json({"__metadata__": {"format": 1}, "a": _entry(0, 8)}), bytes(8), "safetensors.metadata.invalid"),
    "metadata_a_list": (_json({"__metadata__": ["pt"], "a": _entry(0, 8)}), bytes(8), "safetensors.metadata.invalid"),
    "metadata_a_string": (_json({"__metadata__": "pt", "a": _entry(0, 8)}), bytes(8), "safetensors.metadata.invalid"),
    "size_overflows_64_bits": (_json({"a": _entry(0, 0, [2**40, 2**40, 0])}), b"", "safetensors.tensor.shape"),
    "lone_surrogate_name": (b'{"\\ud800": ' + _json(_entry(0, 8)) + b"}", bytes(8), "safetensors.header.encoding"),
    "lone_surrogate_in_extra_field": (_json({"a": {**_entry(0, 8), "note": "x"}}).replace(b'"x"', b'"\\udfff"'), bytes(8),
                                      "safetensors.header.encoding"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_the_library_refuses_we_refuse_with_the_reason(tmp_path: Path, case: str) -> None:
    header, data, code = REFUSED[case]
    path = tmp_path / "x.safetensors"
    path.write_bytes(_file(header, data))
    assert _theirs(path) is not None, "the library accepts it: the case is wrong"
    assert _ours(path) == [code]


# Files the library accepts and so must we: whitespace around the JSON, null metadata, extra
# fields, empty tensors at the end, tensors listed out of offset order, U16..U64 and F8_E8M0.
ACCEPTED = {
    "padding": _json({"a": _entry(0, 8)}) + b"     ",
    "leading_whitespace": b" \t\n" + _json({"a": _entry(0, 8)}),
    "null_metadata": _json({"__metadata__": None, "a": _entry(0, 8)}),
    "extra_field": _json({"a": {**_entry(0, 8), "note": [1, 2]}}),
    "empty_tensor_at_end": _json({"a": _entry(0, 8), "z": _entry(8, 8, [0, 5])}),
    "out_of_order": _json({"b": _entry(4, 8), "a": _entry(0, 4)}),
    "wide_unsigned": _json({"a": _entry(0, 2, dtype="U16"), "b": _entry(2, 4, dtype="F8_E8M0"), "c": _entry(4, 8, dtype="U32")}),
    "unaligned_header_length": _json({"a": _entry(0, 8)}) + b" " * (3 - len(_json({"a": _entry(0, 8)})) % 8 + 8),
    "empty_tensor_name": _json({"": _entry(0, 8)}),
    "zero_dimension_before_huge_ones": _json({"a": _entry(0, 8), "z": _entry(8, 8, [0, 2**40, 2**40, 2**40])}),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_what_the_library_reads_we_accept(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(_file(ACCEPTED[case], bytes(8)))
    assert _theirs(path) is None
    assert isinstance(read_safetensors(path), Ok)


def test_unaligned_header_length_is_really_unaligned() -> None:
    assert (len(ACCEPTED["unaligned_header_length"]) + 8) % 8 != 0


# Known divergences, where we are stricter than the library (the property allows it: we never
# accept what it refuses): a key repeated with the same value (Python's json would keep the last;
# we refuse every duplicate, as decode_json does for every JSON we read), and more than 8 dimensions.
STRICTER = {
    "duplicate_identical_keys": b'{"a": ' + _json(_entry(0, 8)) + b', "a": ' + _json(_entry(0, 8)) + b"}",
    "nine_dimensions": _json({"a": _entry(0, 8, [2, 1, 1, 1, 1, 1, 1, 1, 1])}),
}


@pytest.mark.parametrize("case", sorted(STRICTER))
def test_known_divergences_we_refuse_and_the_library_reads(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(_file(STRICTER[case], bytes(8)))
    assert _theirs(path) is None
    assert _ours(path)


def test_header_bound_is_the_library_s(tmp_path: Path) -> None:
    """The reference reader's bound is 100,000,000 bytes (decimal); a header one byte longer is
    refused for its size, never read (the file is sparse: no 100 MB is written)."""
    assert MAX_HEADER_BYTES == 100_000_000
    path = tmp_path / "x.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        f.truncate(MAX_HEADER_BYTES + 64)
    assert _ours(path) == ["safetensors.header.size"]
    assert _theirs(path) is not None


# ----------------------------------------------------------------------------- the property
_DTYPES = sorted(DTYPE_BYTES)


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    """A safetensors file, mostly well formed, with one of the perturbations readers disagree on."""
    count = draw(st.integers(0, 4))
    entries: dict[str, Any] = {}
    at = 0
    for i in range(count):
        dtype = draw(st.sampled_from(_DTYPES))
        shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
        size = DTYPE_BYTES[dtype]
        for d in shape:
            size *= d
        begin = at + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 8]))  # mostly contiguous; sometimes a gap or an overlap
        end = begin + size + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        entries[draw(st.sampled_from([f"t{i}", "", "a.weight", "\u00e9", "\x00"])) + str(i)] = \
            {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        at = max(at, end)
    metadata: object = draw(st.sampled_from([None, "absent", {}, {"format": "pt"}, {"n": 1}, [], "pt"]))
    if metadata != "absent":
        entries["__metadata__"] = metadata
    if draw(st.booleans()) and entries:  # a huge dimension: byte sizes that overflow, or offsets past the end
        name = next(iter(entries))
        if isinstance(entries[name], dict) and "shape" in entries[name]:
            entries[name]["shape"] = [*entries[name]["shape"], draw(st.sampled_from([2**31, 2**62 - 1, 2**63]))]
    header = json.dumps(entries).encode()
    header += b" " * draw(st.integers(0, 9))
    trailing = draw(st.sampled_from([0, 0, 0, 1, 8]))
    data = bytes(range(256)) * (max(at, 0) // 256 + 1)
    return _file(header, data[:max(at, 0)] + bytes(trailing))


@given(_files())
def test_differential_accepted_here_means_readable_there(blob: bytes) -> None:
    """Ours accepts ⇒ the library opens the file and reads every tensor; the library refuses ⇒
    ours refuses with a coded ``safetensors.*`` issue."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.safetensors"
        path.write_bytes(blob)
        ours, theirs = read_safetensors(path), _theirs(path)
        if isinstance(ours, Ok):
            assert theirs is None, f"we accepted what safetensors refuses: {theirs}"
        if theirs is not None:
            assert isinstance(ours, Err) and all(i.code.startswith("safetensors.") for i in ours.error)


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deeply_nested_headers_are_issues(tmp_path: Path, depth: int) -> None:
    """A header nested thousands deep is a coded issue, never a RecursionError."""
    path = tmp_path / "x.safetensors"
    path.write_bytes(_file(b'{"a": ' + b"[" * depth + b"]" * depth + b"}", b""))
    assert _ours(path)[0] in ("safetensors.tensor.invalid", "safetensors.header.json")
    assert _theirs(path) is not None
