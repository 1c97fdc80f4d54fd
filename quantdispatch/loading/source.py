"""Sources a load opens once: what was read from their headers, carried from the plan to the loader.

A loader never parses a header again. It maps or streams the data of the files the source names,
and first checks that each is still the file whose header was read (``FileStamp``): a file
rewritten, truncated or replaced in between is ``load.file.changed``, never wrong weights.

Pure values: nothing here opens a file (``loading.gguf.read_gguf_source`` does).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import attrs

from ..gguf._layout import tensor_nbytes
from ..gguf.header import GgufHeader, GgufValue, TensorInfo
from ..result import Issue
from ..text import quote

__all__ = ["FileStamp", "GgufShard", "GgufSource", "GgufTensorEntry", "file_changed"]


@attrs.frozen
class FileStamp:
    """Which file was read, and as it was then: enough to tell that it was changed or replaced since.

    Attributes:
        device: ``st_dev``.
        inode: ``st_ino``: another file under the same name has another inode.
        size: ``st_size`` in bytes.
        mtime_ns: ``st_mtime_ns``: a rewrite in place changes it.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileStamp:
        """The stamp of a file's status (``os.fstat`` of the open file, not of its name)."""
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)

    def change(self, now: FileStamp) -> str | None:
        """How the file ``now`` differs from this one, in words; ``None`` when it does not.

        >>> FileStamp(1, 2, 100, 5).change(FileStamp(1, 2, 90, 6))
        'its size went from 100 to 90 bytes'
        >>> FileStamp(1, 2, 100, 5).change(FileStamp(1, 2, 100, 5)) is None
        True
        """
        if (now.device, now.inode) != (self.device, self.inode):
            return "the name now leads to another file (a new inode)"
        if now.size != self.size:
            return f"its size went from {self.size} to {now.size} bytes"
        if now.mtime_ns != self.mtime_ns:
            return "it was modified (a new modification time)"
        return None


def file_changed(path: Path, what: str, tensor: str | None = None) -> Issue:
    """``load.file.changed``: the file at ``path`` is not as it was when its header was read."""
    return Issue("load.file.changed", f"$.tensors[{quote(tensor)}]" if tensor is not None else "$",
                 f"{path.name}: {what} since its header was read", "the file was rewritten while it was loaded; load it again")


@attrs.frozen
class GgufTensorEntry:
    """One row of a GGUF source's tensor table: where one tensor's bytes are, and what they hold.

    Attributes:
        info: Its header entry: name, GGML type id, shape (ggml order: ``shape[0]`` is the row
            length) and offset within its file's data section.
        file: The shard that holds it.
        start: The absolute byte offset of its data in ``file``.
        nbytes: Its data's length in bytes; ``None`` when its type id has no known size.
    """

    info: TensorInfo
    file: Path
    start: int
    nbytes: int | None

    @property
    def name(self) -> str:
        """The tensor's name in the file (``blk.0.ffn_down.weight``)."""
        return self.info.name


@attrs.frozen
class GgufShard:
    """One file of a GGUF model, its header read once.

    Attributes:
        path: The file.
        header: Its header, as read.
        stamp: The file as it was when the header was read.
    """

    path: Path
    header: GgufHeader
    stamp: FileStamp

    def expect(self, status: os.stat_result) -> Issue | None:
        """``load.file.changed`` when the file about to be mapped (its ``fstat``) is not the one read."""
        what = self.stamp.change(FileStamp.of(status))
        return None if what is None else file_changed(self.path, what)


@attrs.frozen
class GgufSource:
    """A GGUF model opened once: its shards, in order (one for a file that is not split), each
    with its header. The first shard's metadata describes the model.

    >>> from quantdispatch.gguf.header import GgufHeader, TensorInfo
    >>> h = GgufHeader(version=3, byte_order="little", metadata=(("general.architecture", "llama"),), value_types=(),
    ...                tensors=(TensorInfo("a", (32, 2), 0, 0),), alignment=32, data_offset=64, file_size=320)
    >>> s = GgufSource((GgufShard(Path("m.gguf"), h, FileStamp(1, 2, 320, 3)),))
    >>> s.metadata["general.architecture"], [(e.name, e.start, e.nbytes) for e in s.tensors]
    ('llama', [('a', 64, 256)])
    """

    shards: tuple[GgufShard, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        """The shards' files, in order."""
        return tuple(s.path for s in self.shards)

    @functools.cached_property
    def metadata(self) -> Mapping[str, GgufValue]:
        """The metadata of the first (or only) shard: the one that describes the model."""
        return MappingProxyType(dict(self.shards[0].header.metadata) if self.shards else {})

    @functools.cached_property
    def tensors(self) -> tuple[GgufTensorEntry, ...]:
        """The tensor table: every shard's tensors, in file order, shard after shard."""
        out: list[GgufTensorEntry] = []
        for shard in self.shards:
            for info in shard.header.tensors:
                nbytes = tensor_nbytes(info)
                out.append(GgufTensorEntry(info, shard.path, shard.header.data_offset + info.offset,
                                           nbytes if isinstance(nbytes, int) else None))
        return tuple(out)

    @property
    def nbytes(self) -> int:
        """Bytes of the shards' files, as they were when their headers were read."""
        return sum(s.stamp.size for s in self.shards)
