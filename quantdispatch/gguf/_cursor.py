"""A bounds-checked, forward-only reader of numbers and strings from a binary file.

The cursor keeps a window of the file in memory and refills it in growing chunks, so a header is
read with a few system calls however many values it holds, and nothing past the header is read.
Before any read it checks the bytes it needs against the bytes left in the file, so a corrupt
length can never make it allocate more than the file (or ``limit``) holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO, Final

from quantdispatch.result import Issue

_FIRST_CHUNK: Final = 1 << 16
_MAX_CHUNK: Final = 1 << 22


class Fatal(Exception):
    """Stops the reading of a header; carries the issue that ``read_gguf_header`` returns."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.render())
        self.issue = issue


def at(offset: int) -> str:
    """Return the path of a byte position: ``$[offset 24]``."""
    return f"$[offset {offset}]"


def short(text: str, limit: int = 64) -> str:
    """Cut a name for a message: a corrupt key or tensor name can be megabytes of garbage."""
    return text if len(text) <= limit else text[:limit] + "…"


class Cursor:
    """Reads little- or big-endian values from ``file``, which must be positioned at byte 0.

    Args:
        file: An open binary file.
        size: The file size; reads past it are ``gguf.truncated``.
        limit: The largest header size accepted; reads past it are ``gguf.header.too_large``.
    """

    def __init__(self, file: BinaryIO, size: int, limit: int) -> None:
        self.size = size
        self._file = file
        self._limit = limit
        self._end = min(size, limit)
        self._buf = b""
        self._base = 0  # absolute offset of _buf[0]
        self._pos = 0  # index into _buf
        self._chunk = _FIRST_CHUNK
        self.set_layout("<", 8)

    def set_layout(self, order: str, length_width: int) -> None:
        """Set the byte order (``"<"``/``">"``) and the width of counts and lengths (4 or 8)."""
        self.order = order
        self._u32 = struct.Struct(order + "I")
        self._u64 = struct.Struct(order + "Q")
        self._len = self._u64 if length_width == 8 else self._u32

    @property
    def length_width(self) -> int:
        """The width in bytes of a count or a string length: 4 in GGUF v1, else 8."""
        return self._len.size

    def tell(self) -> int:
        """Return the absolute offset of the next byte to read."""
        return self._base + self._pos

    def left(self) -> int:
        """Return how many bytes of the file remain after the cursor."""
        return self.size - self.tell()

    def _fill(self, n: int, what: str) -> None:
        offset = self.tell()
        if offset + n > self._end:
            raise Fatal(self._short(offset, n, what))
        have = len(self._buf) - self._pos
        want = min(max(n - have, self._chunk), self._end - (self._base + len(self._buf)))
        self._chunk = min(2 * self._chunk, _MAX_CHUNK)
        data = self._file.read(want)
        self._buf = self._buf[self._pos :] + data
        self._base, self._pos = offset, 0
        if len(self._buf) < n:  # the file shrank while we read it
            raise Fatal(self._short(offset, n, what))

    def _short(self, offset: int, n: int, what: str) -> Issue:
        if offset + n > self.size:
            left = max(self.size - offset, 0)
            return Issue(
                "gguf.truncated",
                at(offset),
                f"the file ends at byte {self.size} while reading {what}: "
                f"{n} bytes needed at offset {offset}, {left} left",
                "the file is truncated (an interrupted download?) or a count or length is corrupt",
            )
        return Issue(
            "gguf.header.too_large",
            at(offset),
            f"reading {what} would take the header past byte {self._limit}",
            "raise GgufLimits.max_header_bytes if this file is trusted",
        )

    def u32(self, what: str) -> int:
        """Read an unsigned 32-bit integer."""
        if len(self._buf) - self._pos < 4:
            self._fill(4, what)
        (v,) = self._u32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return int(v)

    def u64(self, what: str) -> int:
        """Read an unsigned 64-bit integer."""
        if len(self._buf) - self._pos < 8:
            self._fill(8, what)
        (v,) = self._u64.unpack_from(self._buf, self._pos)
        self._pos += 8
        return int(v)

    def length(self, what: str) -> int:
        """Read a count or a string length (uint32 in GGUF v1, uint64 after)."""
        width = self._len.size
        if len(self._buf) - self._pos < width:
            self._fill(width, what)
        (v,) = self._len.unpack_from(self._buf, self._pos)
        self._pos += width
        return int(v)

    def raw(self, n: int, what: str) -> bytes:
        """Read ``n`` bytes; ``n`` is checked against the file before anything is read."""
        if len(self._buf) - self._pos < n:
            self._fill(n, what)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def scalars(self, code: str, count: int, what: str) -> tuple[int | float, ...]:
        """Read ``count`` numbers of ``struct`` format ``code`` (``"I"``, ``"f"``, ``"q"`` …)."""
        layout = struct.Struct(f"{self.order}{count}{code}")
        if len(self._buf) - self._pos < layout.size:
            self._fill(layout.size, what)
        values: tuple[int | float, ...] = layout.unpack_from(self._buf, self._pos)
        self._pos += layout.size
        return values

    def strings(self, count: int, max_bytes: int, what: str, bad: Callable[[int, bytes, UnicodeDecodeError], str]) -> list[str]:
        """Read ``count`` length-prefixed UTF-8 strings, each at most ``max_bytes`` long.

        This is the hot loop of a header (vocabularies of 150k tokens), so the window is
        held in locals and handed back to ``_fill`` only when it runs dry. Each string is decoded
        as it is read, so memory holds the strings alone, never their bytes too; ``bad(j, raw,
        error)`` reports an undecodable one and returns its replacement.
        """
        out: list[str] = []
        width, unpack = self._len.size, self._len.unpack_from
        buf, pos = self._buf, self._pos
        for _ in range(count):
            if len(buf) - pos < width:
                self._pos = pos
                self._fill(width, what)
                buf, pos = self._buf, self._pos
            (n,) = unpack(buf, pos)
            if n > max_bytes:
                self._pos = pos
                raise Fatal(self.too_long(n, max_bytes, what))
            pos += width
            if len(buf) - pos < n:
                self._pos = pos
                self._fill(n, what)
                buf, pos = self._buf, self._pos
            raw = buf[pos : pos + n]
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                out.append(bad(len(out), bytes(raw), e))
            pos += n
        self._pos = pos
        return out

    def too_long(self, n: int, max_bytes: int, what: str) -> Issue:
        """Return the issue for a string of ``n`` bytes that exceeds ``max_bytes``."""
        return Issue(
            "gguf.string.too_long",
            at(self.tell()),
            f"{what} declares a string of {n} bytes, more than the limit of {max_bytes}",
            "a length this large is usually corruption; raise GgufLimits.max_string_bytes "
            "if this file is trusted",
        )
