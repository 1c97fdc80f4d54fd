"""Checks on a GGUF header once it is read: the magic, the alignment, where tensor data lies.

Pure functions from values to issues; ``reader`` calls them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from quantdispatch.result import Issue

from ._cursor import at, short
from .header import GgufValue, TensorInfo
from .types import BLOCK, DUPLICATE_NAME, ROW_MISALIGNED, GgmlType, GgufValueType, duplicate_names, misaligned_row

_MAGIC: Final = b"GGUF"
_MAX_DIMS: Final = 4  # GGML_MAX_DIMS
_INT64_MAX: Final = 2**63 - 1  # ggml reads dimensions and element counts as int64_t
_GGML_TYPES: Final = {int(t): t for t in GgmlType}
# Magics of the formats that GGUF replaced, as they appear on disk (a little-endian uint32).
_OLD_MAGICS: Final = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT", b"algg": "GGLA (LoRA)"}
_ALIGNMENT_PATH: Final = '$.metadata["general.alignment"]'


def magic_issue(head: bytes, size: int) -> Issue | None:
    """Return the issue with the first bytes ``head`` of a file of ``size`` bytes, if any."""
    if head[:4] == _MAGIC:
        return None
    if _MAGIC.startswith(head):  # nothing but a prefix of the magic: a cut-off file
        msg = "the file is empty" if size == 0 else f"the file is only {size} bytes long"
        return Issue("gguf.truncated", at(0), f"{msg}; a GGUF file starts with b'GGUF'")
    msg = f"the file starts with {head[:4]!r}, not b'GGUF'"
    return Issue("gguf.magic.mismatch", at(0), msg, _magic_hint(head))


def _magic_hint(head: bytes) -> str:
    if head.startswith(b"version https://git-lfs"):
        return "this is a git-lfs pointer, not the file; run git lfs pull"
    if head[:4] in _OLD_MAGICS:
        name = _OLD_MAGICS[head[:4]]
        return f"a pre-GGUF {name} file; convert it with llama.cpp's convert_llama_ggml_to_gguf.py"
    if head[8:10] == b'{"':
        return "this looks like a safetensors file (a length, then JSON); it is not GGUF"
    if head[:4] == b"PK\x03\x04":
        return "this is a zip archive (a PyTorch .bin/.pt checkpoint?), not GGUF"
    if head.lstrip()[:1] == b"<":
        return "this looks like an HTML or XML page (a failed download?), not GGUF"
    return "not a GGUF file, or its first bytes are damaged"


def check_alignment(
    metadata: Sequence[tuple[str, GgufValue]],
    value_types: Sequence[tuple[str, GgufValueType]],
    default: int,
) -> int | Issue:
    """Return ``general.alignment`` (or ``default``), or the issue with it."""
    for (key, value), (_, vtype) in zip(metadata, value_types, strict=False):
        if key != "general.alignment":
            continue
        if vtype is not GgufValueType.UINT32 or not isinstance(value, int):
            seen = f"an array of {vtype.name}" if isinstance(value, tuple) else vtype.name
            msg = f"general.alignment is stored as {seen}; the format requires UINT32"
            return Issue("gguf.alignment.invalid", _ALIGNMENT_PATH, msg)
        if value <= 0 or value & (value - 1):
            msg = f"general.alignment is {value}, which is not a power of two"
            return Issue("gguf.alignment.invalid", _ALIGNMENT_PATH, msg, "32 is the default")
        return value
    return default


def tensor_nbytes(t: TensorInfo) -> int | tuple[str, str] | None:
    """Return the data size of tensor ``t`` in bytes, ``(code, message)`` when its shape is
    wrong, or ``None`` when the type id is not a live ``GgmlType`` (the size is unknown)."""
    name = short(t.name)
    if len(t.shape) > _MAX_DIMS:
        return "gguf.tensor.shape_invalid", f"tensor {name!r} has {len(t.shape)} dimensions; ggml allows at most {_MAX_DIMS}"
    if any(d > _INT64_MAX for d in t.shape) or math.prod(t.shape) > _INT64_MAX:
        return "gguf.tensor.shape_invalid", f"tensor {name!r} has shape {list(t.shape)}, whose size does not fit in int64"
    gtype = _GGML_TYPES.get(t.ggml_type)
    if gtype is None:
        return None
    per_block, size = BLOCK[gtype]
    ne0 = t.shape[0] if t.shape else 1
    why = misaligned_row(gtype, ne0)
    if why is not None:
        return ROW_MISALIGNED, f"tensor {name!r}: {why}"
    return math.prod(t.shape) // per_block * size


def check_tensors(
    tensors: Sequence[TensorInfo], alignment: int, data_offset: int, file_size: int
) -> list[Issue]:
    """Return every issue with the names, shapes and data placement of ``tensors``."""
    issues = [duplicate_issue(i, j, tensors[i].name) for i, j in duplicate_names(t.name for t in tensors)]
    spans: list[tuple[int, int, int]] = []  # (start, end, index) of the data of sized tensors
    for i, t in enumerate(tensors):
        path = f"$.tensors[{i}]"
        if t.offset % alignment:
            msg = f"tensor {short(t.name)!r} has offset {t.offset}, not a multiple of {alignment}"
            issues.append(Issue("gguf.tensor.offset_misaligned", path, msg))
        nbytes = tensor_nbytes(t)
        if isinstance(nbytes, tuple):
            issues.append(Issue(nbytes[0], path, nbytes[1]))
            continue
        start = data_offset + t.offset
        end = start + (nbytes or 0)  # an unknown type: at least its start must be in the file
        if end > file_size:
            issues.append(_out_of_bounds(t, path, start, end, file_size))
        elif nbytes:
            spans.append((start, end, i))
    issues.extend(_overlaps(spans, tensors))
    return issues


def duplicate_issue(i: int, first: int, name: str) -> Issue:
    """The issue for tensor ``i`` reusing the name of tensor ``first``."""
    msg = f"tensor name {short(name)!r} is used again (first by tensor #{first})"
    return Issue(DUPLICATE_NAME, f"$.tensors[{i}]", msg)


def _out_of_bounds(t: TensorInfo, path: str, start: int, end: int, file_size: int) -> Issue:
    gtype = _GGML_TYPES.get(t.ggml_type)
    kind = gtype.name if gtype is not None else f"type {t.ggml_type}"
    msg = (
        f"tensor {short(t.name)!r} ({kind}, shape {list(t.shape)}) occupies bytes {start}-{end}, "
        f"but the file has {file_size} bytes"
    )
    hint = "the file is truncated or the offset is corrupt"
    return Issue("gguf.tensor.out_of_bounds", path, msg, hint)


def _overlaps(spans: list[tuple[int, int, int]], tensors: Sequence[TensorInfo]) -> list[Issue]:
    issues: list[Issue] = []
    reach, last = -1, -1  # the furthest end so far, and whose it is
    for start, end, i in sorted(spans):
        if start < reach:
            msg = (
                f"tensor {short(tensors[i].name)!r} (bytes {start}-{end}) overlaps tensor "
                f"{short(tensors[last].name)!r}, which ends at byte {reach}"
            )
            hint = "the writer reused an offset; ggml (llama.cpp) refuses such files"
            issues.append(Issue("gguf.tensor.overlap", f"$.tensors[{i}]", msg, hint))
        if end > reach:
            reach, last = end, i
    return issues
