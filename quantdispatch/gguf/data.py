"""Read GGUF tensor data, memory-mapped, within the bounds the header and the file set.

``open_gguf_data`` reads the header with ``read_gguf_header`` (which checks every tensor's shape,
whole-block rows, alignment, extent and overlap against the file size), opens the file without
blocking (a FIFO or device never hangs us), checks the extents again against the size of what it
maps (the one rule, ``check_tensors``, reused: the file may have changed since the header was
read), and maps it read-only. ``map_gguf_data`` is that second half alone, for a header read
already: a load reads each header once, to plan, and maps the data afterwards. Nothing is
allocated from a count in the file: a tensor is a ``memoryview`` slice of the map.

A mapped file that another process truncates later can still fault on access (SIGBUS); that is
the price of ``mmap``, as for safetensors and llama.cpp.

Issue codes are the header reader's (``ISSUE_CODES``) plus ``DATA_ISSUE_CODES``.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Final

import attrs

from quantdispatch.result import Err, Issue, Issues, Ok, Result

from ._layout import check_tensors, tensor_nbytes
from .header import GgufHeader, TensorInfo
from .reader import read_gguf_header
from .types import GgmlType

__all__ = ["DATA_ISSUE_CODES", "Expect", "GgufData", "TensorData", "open_gguf_data", "map_gguf_data"]

DATA_ISSUE_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "gguf.byte_order.unsupported": "tensor data of a big-endian file (not read yet)",
        "gguf.tensor.not_found": "no tensor of that name in the file",
        "gguf.tensor.type_unsupported": "a tensor type that quantdispatch cannot dequantize",
    }
)
"""Codes that tensor-data reading adds to the header reader's ``ISSUE_CODES``."""


@attrs.frozen
class TensorData:
    """One tensor's bytes, as a read-only view into the mapped file.

    Attributes:
        info: Its entry in the header.
        ggml_type: Its type (a live ``GgmlType``).
        data: Exactly its bytes, ``row_bytes`` times the rows; valid while the file is open.
    """

    info: TensorInfo
    ggml_type: GgmlType
    data: memoryview = attrs.field(eq=False, repr=False)

    @property
    def torch_shape(self) -> tuple[int, ...]:
        """The PyTorch shape, ``[out, in]``: the ggml shape reversed."""
        return self.info.shape[::-1]


class GgufData:
    """An open GGUF file: its header and its memory-mapped tensor data. Use it as a context manager.

    ``close`` unmaps at once when no view handed out by ``tensor`` (or tensor built on one) is
    alive; otherwise the map goes with the last of them.
    """

    def __init__(self, header: GgufHeader, mapped: mmap.mmap | None) -> None:
        self.header: Final = header
        self._map = mapped
        self._view = memoryview(mapped) if mapped is not None else memoryview(b"")
        self._by_name = {t.name: t for t in header.tensors}

    def tensor(self, name: str) -> Result[TensorData, Issues]:
        """Return the bytes of tensor ``name``, or ``gguf.tensor.not_found``."""
        info = self._by_name.get(name)
        if info is None:
            return Err((Issue("gguf.tensor.not_found", "$.tensors", f"no tensor named {name!r}"),))
        nbytes = tensor_nbytes(info)
        if not isinstance(nbytes, int) or info.ggml_type not in GgmlType._value2member_map_:
            msg = f"tensor {name!r} has type id {info.ggml_type}, whose size is unknown"
            return Err((Issue("gguf.tensor.type_unsupported", "$.tensors", msg),))
        return Ok(TensorData(info, GgmlType(info.ggml_type), self.span(self.header.data_offset + info.offset, nbytes)))

    def span(self, start: int, nbytes: int) -> memoryview:
        """The ``nbytes`` bytes at absolute offset ``start``, a read-only view of the map (shorter
        where the map ends first: ``map_gguf_data`` checked every tensor's extent against it)."""
        return self._view[start : start + nbytes]

    def close(self) -> None:
        """Unmap the file, or leave that to the last live view of it."""
        self._view.release()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still alive: the map closes when they are freed
                pass

    def __enter__(self) -> GgufData:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_gguf_data(path: str | os.PathLike[str]) -> Result[GgufData, Issues]:
    """Open the GGUF file at ``path`` for reading tensor data: its header read, then its data mapped.

    Returns:
        ``Ok(GgufData)``, or ``Err(issues)``: the header's issues, each naming its tensor
        (``gguf.tensor.out_of_bounds``, ``gguf.tensor.overlap``, ``gguf.tensor.shape_invalid``
        for rows that are not whole blocks …), or ``gguf.file.unreadable``.

    >>> open_gguf_data("/nonexistent.gguf").error[0].code
    'gguf.file.unreadable'
    """
    found = read_gguf_header(path)
    if isinstance(found, Err):
        return found
    return map_gguf_data(path, found.value)


Expect = Callable[[os.stat_result], "Issue | None"]
"""Judges the status of the file about to be mapped: ``None`` to map it, or the issue that refuses it."""


def map_gguf_data(path: str | os.PathLike[str], header: GgufHeader, *, expect: Expect | None = None) -> Result[GgufData, Issues]:
    """Map the tensor data of the GGUF file at ``path`` whose ``header`` was read already
    (``read_gguf_file``): the header is not parsed again.

    The file is opened without blocking and must still be a regular file; ``expect`` then judges
    its status (``fstat`` of what is mapped: the caller compares it with the status the header
    was read from), and the tensors' extents are checked again against its size.

    >>> from quantdispatch.gguf.header import GgufHeader
    >>> empty = GgufHeader(version=3, byte_order="little", metadata=(), value_types=(), tensors=(),
    ...                    alignment=32, data_offset=32, file_size=0)
    >>> map_gguf_data("/nonexistent.gguf", empty).error[0].code
    'gguf.file.unreadable'
    """
    if header.byte_order != "little":
        msg = "the file is big-endian; reading its tensor data is not supported"
        return Err((Issue("gguf.byte_order.unsupported", "$", msg, "convert it with gguf-py's gguf_convert_endian"),))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return Err((_unreadable(path, e.strerror or str(e)),))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced since the header was read
            return Err((_unreadable(path, "is not a regular file"),))
        refused = expect(info) if expect is not None else None
        if refused is not None:
            return Err((refused,))
        issues = check_tensors(header.tensors, header.alignment, header.data_offset, info.st_size)
        if issues:
            return Err(tuple(issues))
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if info.st_size else None
    except OSError as e:
        return Err((_unreadable(path, e.strerror or str(e)),))
    finally:
        os.close(fd)
    return Ok(GgufData(header, mapped))


def _unreadable(path: str | os.PathLike[str], reason: str) -> Issue:
    return Issue("gguf.file.unreadable", "$", f"cannot read {os.fsdecode(path)!r}: {reason}")
