"""The header of a GGUF file as plain frozen values: metadata, tensor infos, layout.

``read_gguf_header`` (in ``quantdispatch.gguf.reader``) builds these; they hold no file handle and
no numpy array, so they hash, compare and print like any other value.

>>> h = GgufHeader(version=3, byte_order="little", metadata=(("general.architecture", "llama"),),
...                value_types=(("general.architecture", GgufValueType.STRING),), tensors=(),
...                alignment=32, data_offset=64, file_size=64)
>>> h.get("general.architecture"), h.get("general.name")
('llama', None)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal, TypeAlias

import attrs

from .types import GgufValueType

__all__ = ["GgufScalar", "GgufValue", "TensorInfo", "GgufHeader"]

GgufScalar: TypeAlias = int | float | bool | str
"""A metadata scalar: integers of every width are ``int``, FLOAT32/FLOAT64 are ``float``."""

GgufValue: TypeAlias = GgufScalar | tuple["GgufValue", ...]
"""A metadata value; an array is a tuple (of tuples, for nested arrays), so values hash."""


@attrs.frozen
class TensorInfo:
    """One entry of the tensor-info table: where a tensor's bytes are and how to read them.

    Attributes:
        name: The tensor name, e.g. ``"blk.0.attn_q.weight"``.
        shape: The dimensions as stored, in ggml order: ``shape[0]`` (ne0) is the row length,
            the fastest-varying index. A PyTorch shape is ``shape[::-1]``.
        ggml_type: The raw type id as stored. ``GgmlType(ggml_type)`` may not exist: the reader
            accepts unknown ids and leaves the judgement to the parser.
        offset: The byte offset of the data, relative to ``GgufHeader.data_offset``.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@attrs.frozen
class GgufHeader:
    """Everything in a GGUF file before the tensor data.

    Attributes:
        version: The format version, 1, 2 or 3 (v1 stored counts and lengths as 32-bit).
        byte_order: The byte order of every number in the file.
        metadata: The key/value pairs in file order; keys are unique in a header that
            ``read_gguf_header`` returned.
        value_types: The declared type of each key, in the same order; for an array the
            element type of the outermost array (``ARRAY`` for an array of arrays).
        tensors: The tensor infos in file order.
        alignment: ``general.alignment``, or 32 when absent; every tensor offset is a multiple.
        data_offset: The absolute byte offset of the tensor-data section (the end of the
            header, rounded up to ``alignment``). It may exceed ``file_size`` when the file
            holds no tensor data.
        file_size: The size of the file in bytes when it was read.
    """

    version: int
    byte_order: Literal["little", "big"]
    metadata: tuple[tuple[str, GgufValue], ...]
    value_types: tuple[tuple[str, GgufValueType], ...]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    file_size: int

    @functools.cached_property
    def _index(self) -> Mapping[str, int]:
        # key -> position, built on the first get(); it holds positions, never the values
        index: dict[str, int] = {}
        for i, (key, _) in enumerate(self.metadata):
            index.setdefault(key, i)  # the first occurrence wins, as in a scan
        return index

    def get(self, key: str) -> GgufValue | None:
        """Return the value of metadata ``key``, or ``None`` when the file does not have it."""
        i = self._index.get(key)
        return None if i is None else self.metadata[i][1]

    def value_type(self, key: str) -> GgufValueType | None:
        """Return the declared type of metadata ``key`` (the element type for an array)."""
        for k, t in self.value_types:
            if k == key:
                return t
        return None
