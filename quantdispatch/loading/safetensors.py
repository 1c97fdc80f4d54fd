"""A bounded, never-raising reader of safetensors headers, and memory-mapped tensor access.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data after the
header), then the data. Everything in the header is checked against the file before any tensor
is touched: lengths, dtypes, shapes whose byte size matches the offsets, offsets inside the file,
no two tensors sharing bytes. A truncated or hostile file is an ``Err`` naming the file and the
tensor, never a crash and never an allocation sized by an untrusted number.

The check is at least as strict as the ``safetensors`` library's own (0.6 to 0.8), so a file it
accepts is one ``safe_open`` reads, and a file that library refuses is refused here with the
reason: the tensors must cover the data exactly, in offset order, from its first byte to its
last (no gap, no trailing bytes); ``__metadata__`` is null or an object of strings; every name
is valid Unicode (no lone surrogate escapes); the element count times the element size fits 64
bits, multiplied in the shape's order; the header is at most 100,000,000 bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from ..fileio import display, open_regular
from ..jsontext import decode_json
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

__all__ = ["TensorEntry", "SafetensorsFile", "read_safetensors", "DTYPE_BYTES", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES: Final = 100_000_000
"""The largest header accepted: the bound of the format's own reader (``MAX_HEADER_SIZE``, decimal)."""

_U64: Final = 1 << 64

DTYPE_BYTES: Final[Mapping[str, int]] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
"""Bytes per element of each safetensors dtype."""


@attrs.frozen
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """The size of its data in bytes."""
        return self.end - self.begin


@attrs.frozen
class SafetensorsFile:
    """A checked safetensors header: its tensors by name and where the data starts."""

    path: str
    data_offset: int
    size: int
    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]


def _issue(path: Path, code: str, message: str, hint: str | None = None) -> Issue:
    return Issue(code, f"$[{quote(path.name, 60)}]", f"{display(path)}: {message}", hint)


def read_safetensors(path: Path) -> Result[SafetensorsFile, Issues]:
    """Read and check the header of one safetensors file."""
    opened = open_regular(path)
    if isinstance(opened, Issue):
        return Err((opened,))
    file, size = opened
    with file:
        try:
            head = file.read(8)
            if len(head) < 8:
                return Err((_issue(path, "safetensors.truncated", f"{size} bytes: too short for a safetensors file"),))
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES or n > size - 8:
                return Err((_issue(path, "safetensors.header.size", f"the header claims {n} bytes; the file has {size}",
                                   "the file is truncated, or not a safetensors file"),))
            raw = file.read(n)
        except OSError as e:
            return Err((_issue(path, "file.unreadable", e.strerror or type(e).__name__),))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Err((_issue(path, "safetensors.header.encoding", "the header is not UTF-8 JSON"),))
    decoded = decode_json(text.rstrip(" "))
    if isinstance(decoded, Err):
        return Err(tuple(_issue(path, "safetensors.header.json", f"{i.code} {i.path}: {i.message}") for i in decoded.error))
    if not isinstance(decoded.value, dict):
        return Err((_issue(path, "safetensors.header.json", "the header is not a JSON object"),))
    try:
        unicode = _unicode(json.dumps(decoded.value, ensure_ascii=False))
    except (RecursionError, ValueError):  # nested as deep as the decoder allowed, deeper than the encoder does
        return Err((_issue(path, "safetensors.header.json", "the header is nested too deeply"),))
    if not unicode:
        return Err((_issue(path, "safetensors.header.encoding", "the header escapes a lone surrogate (\\ud800-\\udfff), "
                           "which is not Unicode", "the safetensors library refuses such a header"),))
    return _check(path, decoded.value, 8 + n, size)


def _entry(path: Path, name: str, value: object, data_size: int) -> TensorEntry | Issue:
    if not isinstance(value, dict):
        return _issue(path, "safetensors.tensor.invalid", f"tensor {quote(name)}: not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return _issue(path, "safetensors.tensor.dtype", f"tensor {quote(name)}: unknown dtype {quote(dtype)}")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**62 for d in shape) or len(shape) > 8:
        return _issue(path, "safetensors.tensor.shape", f"tensor {quote(name)}: invalid shape {quote(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        return _issue(path, "safetensors.tensor.offsets", f"tensor {quote(name)}: invalid data_offsets {quote(offsets)}")
    begin, end = offsets
    if _overflows(shape, DTYPE_BYTES[dtype]):
        return _issue(path, "safetensors.tensor.shape", f"tensor {quote(name)}: the byte size of shape {quote(shape)} overflows 64 bits")
    need = math.prod(shape) * DTYPE_BYTES[dtype]
    if not 0 <= begin <= end <= data_size:
        return _issue(path, "safetensors.tensor.out_of_bounds", f"tensor {quote(name)}: bytes {begin}-{end} are outside the "
                      f"{data_size} bytes of data", "the file is truncated")
    if end - begin != need:
        return _issue(path, "safetensors.tensor.size", f"tensor {quote(name)}: {dtype}{shape} needs {need} bytes, the offsets give {end - begin}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _overflows(shape: list[int], element_bytes: int) -> bool:
    """Whether the reference reader's byte count overflows: the dimensions multiplied in order,
    then the element size in bits, each product checked against 64 bits (so ``[2**40, 2**40, 0]``
    overflows before it reaches the zero)."""
    count = 1
    for d in shape:
        count *= d
        if count >= _U64:
            return True
    return count * element_bytes * 8 >= _U64


def _unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON escapes can spell lone surrogates; Rust's strings cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metadata(path: Path, value: object) -> dict[str, str] | Issue:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return _issue(path, "safetensors.metadata.invalid", f"__metadata__ is {quote(value)}, not an object of strings")
    bad = next(((k, v) for k, v in value.items() if not isinstance(v, str)), None)
    if bad is not None:
        return _issue(path, "safetensors.metadata.invalid", f"__metadata__[{quote(bad[0])}] is {quote(bad[1])}, not a string")
    return dict(value)


def _coverage(path: Path, tensors: Mapping[str, TensorEntry], data_size: int) -> list[Issue]:
    """The tensors, in offset order, must cover the data exactly: each starts where the one before
    ends, the first at 0 and the last ending at the end of the file (the reference reader's rule)."""
    issues: list[Issue] = []
    at, last = 0, None
    for e in sorted(tensors.values(), key=lambda e: (e.begin, e.end, e.name)):
        if e.begin > at:
            after = f"after tensor {quote(last)}" if last is not None else "at the start of the data"
            issues.append(_issue(path, "safetensors.data.gap", f"bytes {at}-{e.begin} {after} belong to no tensor",
                                 "a file the safetensors library writes has none; this one was edited or is not one"))
        elif e.begin < at:
            issues.append(_issue(path, "safetensors.tensor.overlap", f"tensors {quote(last)} and {quote(e.name)} share bytes"
                                 if e.nbytes else f"tensor {quote(e.name)} starts inside tensor {quote(last)}"))
        if e.end >= at:
            at, last = e.end, e.name
    if not issues and at != data_size:
        issues.append(_issue(path, "safetensors.data.trailing", f"{data_size - at} bytes after the last tensor belong to none",
                             "the file was appended to, or a tensor was removed from its header"))
    return issues


def _check(path: Path, header: dict[str, object], data_offset: int, size: int) -> Result[SafetensorsFile, Issues]:
    issues: list[Issue] = []
    tensors: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    for name, value in header.items():
        if name == "__metadata__":
            checked = _metadata(path, value)
            if isinstance(checked, Issue):
                issues.append(checked)
            else:
                metadata = checked
            continue
        entry = _entry(path, name, value, size - data_offset)
        if isinstance(entry, Issue):
            issues.append(entry)
        else:
            tensors[name] = entry
    if not issues:
        issues = _coverage(path, tensors, size - data_offset)
    if issues:
        return Err(tuple(issues[:100]))
    return Ok(SafetensorsFile(str(path), data_offset, size, tensors, metadata))
