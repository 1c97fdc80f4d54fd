"""Build small GGUF files byte by byte for tests (v3, little-endian, no metadata unless given)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import attrs

ALIGNMENT = 32


@attrs.frozen
class Tensor:
    """One tensor to write: ``shape`` in ggml order (row length first), raw ``data`` bytes.

    ``offset`` overrides the running offset (to build overlapping or out-of-range files).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data: bytes
    offset: int | None = None


def _string(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(tensors: Sequence[Tensor], *, truncate: int = 0) -> bytes:
    """The bytes of a GGUF file holding ``tensors``, with ``truncate`` bytes cut from the end."""
    infos, data = b"", b""
    for t in tensors:
        offset = len(data) if t.offset is None else t.offset
        infos += _string(t.name.encode()) + struct.pack("<I", len(t.shape))
        infos += struct.pack(f"<{len(t.shape)}Q", *t.shape) + struct.pack("<IQ", t.ggml_type, offset)
        data += t.data + bytes(-len(t.data) % ALIGNMENT)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0) + infos
    whole = head + bytes(-len(head) % ALIGNMENT) + data
    return whole[: len(whole) - truncate]
