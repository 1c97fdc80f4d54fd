"""Read the header of a GGUF file, metadata and tensor infos, without reading tensor data.

The layout (GGUF v2/v3; v1 stores every count, length and dimension marked ``len`` as uint32)::

    magic "GGUF" | version: u32 | n_tensors: len | n_kv: len
    n_kv x       | key: string | value_type: u32 | value
    n_tensors x  | name: string | n_dims: u32 | ne: len x n_dims | ggml_type: u32 | offset: u64
    padding to general.alignment (default 32) | tensor data ...

    string = | n: len | n bytes of UTF-8 |      array = | element_type: u32 | n: len | n values |

Numbers are little-endian unless the version reads as a byte-swapped 1, 2 or 3 (big-endian file).

``read_gguf_header`` never raises on bad input and never allocates more than the file holds or
``GgufLimits`` allows. Problems are ``Issue`` values; ``ISSUE_CODES`` lists their codes. Paths are
``$[offset N]`` for a byte position, ``$.metadata["key"]`` (``$.metadata[#i]`` when the key itself
is unreadable) and ``$.tensors[i]``; positions count from 0.

Unknown tensor type ids are not an issue here: the reader records them and the parser judges.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import BinaryIO, Final, Literal

import attrs

from quantdispatch.fileio import open_regular
from quantdispatch.result import Err, Issue, Issues, Ok, Result

from ._cursor import Cursor, Fatal, at, short
from ._layout import check_alignment, check_tensors, magic_issue
from .header import GgufHeader, GgufValue, TensorInfo
from .types import GgufValueType

__all__ = ["GgufLimits", "DEFAULT_LIMITS", "ISSUE_CODES", "MAX_ISSUES", "read_gguf_header", "read_gguf_file"]

ISSUE_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "gguf.file.unreadable": "missing, a directory, not permitted, or an I/O error",
        "gguf.magic.mismatch": "does not start with GGUF (hints: git-lfs pointer, GGML, HTML …)",
        "gguf.version.unsupported": "a version other than 1, 2 or 3 in either byte order",
        "gguf.truncated": "the file ends inside an item, or a count needs more bytes than remain",
        "gguf.header.too_large": "more values or header bytes than GgufLimits allows",
        "gguf.string.too_long": "a string longer than GgufLimits.max_string_bytes",
        "gguf.array.too_deep": "arrays nested deeper than GgufLimits.max_array_depth",
        "gguf.value_type.unknown": "a value or array element type outside 0-12",
        "gguf.string.invalid_utf8": "a key, string value or tensor name that is not UTF-8",
        "gguf.bool.invalid": "a bool stored as a byte other than 0 or 1",
        "gguf.metadata.duplicate_key": "a key stored twice",
        "gguf.alignment.invalid": "general.alignment is not a UINT32 power of two",
        "gguf.tensor.duplicate_name": "two tensor infos with one name",
        "gguf.tensors.too_many": "more tensors than GgufLimits.max_tensors",
        "gguf.tensor.shape_misaligned": "rows that are not whole blocks of the tensor's type",
        "gguf.tensor.shape_invalid": "over 4 dims, or a size past int64",
        "gguf.tensor.offset_misaligned": "a tensor offset that is not a multiple of the alignment",
        "gguf.tensor.out_of_bounds": "tensor data past the end of the file",
        "gguf.tensor.overlap": "two tensors whose data overlap",
        "gguf.issues.too_many": "reading stopped after MAX_ISSUES issues",
    }
)
"""Every code that ``read_gguf_header`` can return, with what it means."""

MAX_ISSUES: Final = 100
"""Reading stops with ``gguf.issues.too_many`` once this many issues are found."""

_DEFAULT_ALIGNMENT: Final = 32
_VERSIONS: Final = (1, 2, 3)
_SCALAR: Final[dict[GgufValueType, str]] = {  # struct codes of the fixed-width value types
    GgufValueType.UINT8: "B",
    GgufValueType.INT8: "b",
    GgufValueType.UINT16: "H",
    GgufValueType.INT16: "h",
    GgufValueType.UINT32: "I",
    GgufValueType.INT32: "i",
    GgufValueType.FLOAT32: "f",
    GgufValueType.BOOL: "B",
    GgufValueType.UINT64: "Q",
    GgufValueType.INT64: "q",
    GgufValueType.FLOAT64: "d",
}
_WIDTH: Final = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4, "f": 4, "Q": 8, "q": 8, "d": 8}
_VALUE_TYPES: Final = {int(t): t for t in GgufValueType}


@attrs.frozen(kw_only=True)
class GgufLimits:
    """Bounds that keep a corrupt or hostile header from exhausting memory.

    The defaults accept every real model header (the largest, vocabularies of ~260k tokens and an
    embedded ``tokenizer.json`` of tens of MB, stay far below them).

    Attributes:
        max_string_bytes: The longest single string (key, value, tensor name).
        max_values: Metadata values in all (each array element counts) plus tensor dimensions.
        max_array_depth: How deeply arrays may nest (1: arrays of scalars only).
        max_header_bytes: The largest offset the metadata and tensor infos may reach.
        max_tensors: The most tensor infos a header may declare; checked before any is read.
    """

    max_string_bytes: int = 1 << 26
    max_values: int = 1 << 24
    max_array_depth: int = 8
    max_header_bytes: int = 1 << 28
    max_tensors: int = 1 << 16


DEFAULT_LIMITS: Final = GgufLimits()
"""The limits ``read_gguf_header`` applies unless told otherwise."""


def read_gguf_header(
    path: str | os.PathLike[str], *, limits: GgufLimits = DEFAULT_LIMITS
) -> Result[GgufHeader, Issues]:
    """Read the metadata and tensor infos of the GGUF file at ``path``.

    Only the header is read, in chunks, however large the file. Every issue found is returned,
    except that a structural one (truncation, an unknown value type) ends the reading.

    Args:
        path: The file.
        limits: Bounds on what the header may hold.

    Returns:
        ``Ok(GgufHeader)``, or ``Err(issues)`` with codes from ``ISSUE_CODES``.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "empty.gguf")
    ...     _ = p.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    ...     r = read_gguf_header(p)
    >>> r.value.version, r.value.tensors, r.value.data_offset
    (3, (), 32)
    >>> read_gguf_header("/nonexistent.gguf").error[0].code
    'gguf.file.unreadable'
    """
    found = read_gguf_file(path, limits=limits)
    return found if isinstance(found, Err) else Ok(found.value[0])


def read_gguf_file(
    path: str | os.PathLike[str], *, limits: GgufLimits = DEFAULT_LIMITS
) -> Result[tuple[GgufHeader, os.stat_result], Issues]:
    """``read_gguf_header``, with the status (``fstat``) of the very file the header was read
    from: its device, inode, size and modification time let a later reader of the tensor data
    check that it maps the file whose header this is, without parsing the header again.

    Every header ``quantdispatch`` parses is parsed here, once per call.
    """
    opened = open_regular(path, "gguf.file")
    if isinstance(opened, Issue):
        return Err((Issue("gguf.file.unreadable", opened.path, opened.message, opened.hint),))
    file, size = opened
    try:
        with file:
            status = os.fstat(file.fileno())
            found = _Reader(file, size, limits).read()
    except OSError as e:
        return Err((_unreadable(path, e),))
    return found if isinstance(found, Err) else Ok((found.value, status))


def _unreadable(path: str | os.PathLike[str], why: BaseException | str) -> Issue:
    reason = why if isinstance(why, str) else (getattr(why, "strerror", None) or str(why))
    return Issue("gguf.file.unreadable", "$", f"cannot read {os.fsdecode(path)!r}: {reason}")


def _key_path(key: str) -> str:
    return f"$.metadata[{json.dumps(short(key), ensure_ascii=False)}]"


class _Reader:
    """One pass over one file; collects the issues that do not stop the reading."""

    def __init__(self, file: BinaryIO, size: int, limits: GgufLimits) -> None:
        self._file = file
        self._cur = Cursor(file, size, limits.max_header_bytes)
        self._limits = limits
        self._budget = limits.max_values
        self._issues: list[Issue] = []

    def read(self) -> Result[GgufHeader, Issues]:
        try:
            header = self._header()
        except Fatal as e:
            return Err((*self._issues, e.issue))
        return Err(tuple(self._issues)) if self._issues else Ok(header)

    def _report(self, issue: Issue) -> None:
        self._issues.append(issue)
        if len(self._issues) >= MAX_ISSUES:
            msg = f"stopped reading after {MAX_ISSUES} issues"
            raise Fatal(Issue("gguf.issues.too_many", at(self._cur.tell()), msg))

    def _header(self) -> GgufHeader:
        version, order = self._preamble()
        n_tensors, n_kv = self._counts()
        metadata, value_types = self._metadata(n_kv)
        tensors = tuple(self._tensor_info(i) for i in range(n_tensors))
        alignment = check_alignment(metadata, value_types, _DEFAULT_ALIGNMENT)
        end = self._cur.tell()
        if isinstance(alignment, Issue):
            self._report(alignment)
            alignment, data_offset = _DEFAULT_ALIGNMENT, end
        else:
            data_offset = -(-end // alignment) * alignment
            for issue in check_tensors(tensors, alignment, data_offset, self._cur.size):
                self._report(issue)
        return GgufHeader(
            version=version,
            byte_order=order,
            metadata=tuple(metadata),
            value_types=tuple(value_types),
            tensors=tensors,
            alignment=alignment,
            data_offset=data_offset,
            file_size=self._cur.size,
        )

    def _preamble(self) -> tuple[int, Literal["little", "big"]]:
        head = self._file.read(64)
        self._file.seek(0)
        issue = magic_issue(head, self._cur.size)
        if issue is not None:
            raise Fatal(issue)
        self._cur.raw(4, "the magic")
        little = self._cur.u32("the version")
        big = int.from_bytes(little.to_bytes(4, "little"), "big")
        if little in _VERSIONS:
            version, order = little, "<"
        elif big in _VERSIONS:  # a big-endian file: the version reads byte-swapped
            version, order = big, ">"
        else:
            msg = f"version {little} (bytes {head[4:8].hex(' ')}) is not 1, 2 or 3"
            hint = "a newer GGUF version; upgrade quantdispatch" if 3 < little < 256 else None
            raise Fatal(Issue("gguf.version.unsupported", at(4), msg, hint))
        self._cur.set_layout(order, 4 if version == 1 else 8)
        return version, "little" if order == "<" else "big"

    def _counts(self) -> tuple[int, int]:
        cur = self._cur
        n_tensors = cur.length("the tensor count")
        n_kv = cur.length("the metadata key count")
        if n_tensors > self._limits.max_tensors:
            msg = f"the header declares {n_tensors} tensors; this reader's limit is {self._limits.max_tensors}"
            hint = "real models have a few thousand; raise GgufLimits.max_tensors if this one is real"
            raise Fatal(Issue("gguf.tensors.too_many", at(8), msg, hint))
        w = cur.length_width
        need = n_kv * (w + 4 + 1) + n_tensors * (w + 4 + 4 + 8)  # the smallest possible items
        if need > cur.left():
            msg = (
                f"the header declares {n_tensors} tensors and {n_kv} metadata keys, which take at "
                f"least {need} bytes, but the file has {cur.left()} bytes after the counts"
            )
            raise Fatal(Issue("gguf.truncated", at(8), msg, "a truncated file or corrupt counts"))
        return n_tensors, n_kv

    def _metadata(
        self, n_kv: int
    ) -> tuple[list[tuple[str, GgufValue]], list[tuple[str, GgufValueType]]]:
        metadata: list[tuple[str, GgufValue]] = []
        value_types: list[tuple[str, GgufValueType]] = []
        first: dict[str, int] = {}
        for i in range(n_kv):
            key = self._string(f"metadata key #{i} name", f"$.metadata[#{i}]")
            path = _key_path(key)
            if key in first:
                msg = f"key {short(key)!r} is stored again as key #{i} (first as #{first[key]})"
                self._report(Issue("gguf.metadata.duplicate_key", path, msg))
            first.setdefault(key, i)
            what = f"metadata key #{i} {short(key)!r} value"
            self._charge(1, what)
            vtype = self._value_type(self._cur.u32(what + " type"), path, what)
            value: GgufValue
            if vtype is GgufValueType.ARRAY:
                value, vtype = self._array(0, path, what)
            else:
                value = self._value(vtype, 0, path, what)
            metadata.append((key, value))
            value_types.append((key, vtype))
        return metadata, value_types

    def _charge(self, n: int, what: str) -> None:
        self._budget -= n
        if self._budget < 0:
            msg = f"{what} takes the header past {self._limits.max_values} values"
            hint = "raise GgufLimits.max_values if this file is trusted"
            raise Fatal(Issue("gguf.header.too_large", at(self._cur.tell()), msg, hint))

    def _value_type(self, raw: int, path: str, what: str) -> GgufValueType:
        vtype = _VALUE_TYPES.get(raw)
        if vtype is None:
            offset = self._cur.tell() - 4
            msg = f"{what} has type {raw} (at offset {offset}), which is not a GGUF type (0-12)"
            raise Fatal(Issue("gguf.value_type.unknown", path, msg, "the file is corrupt"))
        return vtype

    def _value(self, vtype: GgufValueType, depth: int, path: str, what: str) -> GgufValue:
        if vtype is GgufValueType.STRING:
            return self._string(what, path)
        if vtype is GgufValueType.ARRAY:
            return self._array(depth, path, what)[0]
        (value,) = self._cur.scalars(_SCALAR[vtype], 1, what)
        return self._bools((value,), path, array=False)[0] if vtype is GgufValueType.BOOL else value

    def _array(
        self, depth: int, path: str, what: str
    ) -> tuple[tuple[GgufValue, ...], GgufValueType]:
        cur = self._cur
        start = cur.tell()
        etype = self._value_type(cur.u32(what + " element type"), path, what + " element")
        count = cur.length(what + " length")
        if depth >= self._limits.max_array_depth:
            msg = f"{what} nests arrays deeper than {self._limits.max_array_depth} levels"
            raise Fatal(Issue("gguf.array.too_deep", at(start), msg))
        w = cur.length_width
        smallest = {GgufValueType.STRING: w, GgufValueType.ARRAY: 4 + w}.get(etype)
        width = smallest or _WIDTH[_SCALAR[etype]]
        self._expect(count, width, start, what, f"{etype.name} elements")
        return self._elements(etype, count, depth, path, what), etype

    def _expect(self, count: int, width: int, start: int, what: str, items: str) -> None:
        """Check ``count`` items of at least ``width`` bytes against the file, then the budget."""
        need, left = count * width, self._cur.left()
        if need > left:
            msg = (
                f"{what} declares {count} {items}, which take at least {need} bytes, "
                f"but the file ends {left} bytes later"
            )
            hint = "a truncated file or a corrupt count"
            raise Fatal(Issue("gguf.truncated", at(start), msg, hint))
        self._charge(count, what)

    def _elements(
        self, etype: GgufValueType, count: int, depth: int, path: str, what: str
    ) -> tuple[GgufValue, ...]:
        if etype is GgufValueType.STRING:
            return tuple(self._cur.strings(count, self._limits.max_string_bytes, what, self._bad_utf8(path, array=True)))
        if etype is GgufValueType.ARRAY:
            return tuple(self._array(depth + 1, f"{path}[{j}]", what)[0] for j in range(count))
        values = self._cur.scalars(_SCALAR[etype], count, what)
        return self._bools(values, path, array=True) if etype is GgufValueType.BOOL else values

    def _bools(self, raw: Sequence[int | float], path: str, array: bool) -> tuple[bool, ...]:
        if any(b > 1 for b in raw):
            j = next(j for j, b in enumerate(raw) if b > 1)
            where = f"{path}[{j}]" if array else path
            msg = f"a bool is stored as the byte {int(raw[j])}; only 0 and 1 are valid"
            self._report(Issue("gguf.bool.invalid", where, msg))
        return tuple(b != 0 for b in raw)

    def _string(self, what: str, path: str) -> str:
        return self._cur.strings(1, self._limits.max_string_bytes, what, self._bad_utf8(path, array=False))[0]

    def _bad_utf8(self, path: str, array: bool) -> Callable[[int, bytes, UnicodeDecodeError], str]:
        def report(j: int, raw: bytes, e: UnicodeDecodeError) -> str:
            where = f"{path}[{j}]" if array else path
            self._report(Issue("gguf.string.invalid_utf8", where, f"{raw[:40]!r} is not UTF-8 ({e.reason} at byte {e.start})"))
            return raw.decode("utf-8", errors="replace")

        return report

    def _tensor_info(self, i: int) -> TensorInfo:
        cur = self._cur
        path = f"$.tensors[{i}]"
        name = self._string(f"tensor info #{i} name", path)
        what = f"tensor info #{i} {short(name)!r}"
        n_dims = cur.u32(what + " rank")
        self._charge(1, what)  # the TensorInfo itself
        self._expect(n_dims, cur.length_width, cur.tell() - 4, what, "dimensions")
        dims = cur.scalars("I" if cur.length_width == 4 else "Q", n_dims, what + " shape")
        ggml_type = cur.u32(what + " type")
        offset = cur.u64(what + " offset")
        return TensorInfo(name, tuple(int(d) for d in dims), ggml_type, offset)
