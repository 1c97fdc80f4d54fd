"""``load`` for a ``.gguf`` file: its shards found, each header read once and planned, then the GGUF loader.

A sharded model (``name-00001-of-00003.gguf``, as llama.cpp's ``gguf-split`` writes it) loads as
one: naming any shard finds the others beside it, and every shard's tensors join the plan.

The headers are read here, once, into a ``GgufSource`` that the request carries to the loader.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..codec import parse
from ..configs.base import AbstractQuantConfig
from ..configs.gguf import Gguf
from ..dtypes import DType
from ..fileio import display
from ..gguf.reader import read_gguf_file
from ..plan import LoadOptions, plan
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from .checkpoint import Checkpoint
from .request import LoadRequest
from .source import FileStamp, GgufShard, GgufSource

if TYPE_CHECKING:
    from . import Loaded

__all__ = ["gguf_source", "shard_paths", "read_gguf_source", "load_gguf", "gguf_nbytes"]

_SHARD = re.compile(r"(?P<stem>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf")


def gguf_source(source: object) -> Path | None:
    """The GGUF file ``source`` names: a ``.gguf`` file, or a directory without ``config.json``
    that holds one GGUF model (one file, or the shards of one). ``None`` otherwise."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        stems = {m["stem"] if (m := _SHARD.fullmatch(p.name)) else p.name for p in found}
        return found[0] if len(stems) == 1 else None
    return path if path.suffix == ".gguf" and path.is_file() else None


def shard_paths(path: Path) -> Result[tuple[Path, ...], Issues]:
    """Every shard of the model ``path`` belongs to, in order; ``(path,)`` when it is not split.

    >>> shard_paths(Path("model.gguf")).value
    (PosixPath('model.gguf'),)
    """
    m = _SHARD.fullmatch(path.name)
    if m is None:
        return Ok((path,))
    count = int(m["count"])
    if count < 1 or int(m["no"]) > count:
        return Err((Issue("load.gguf.shard.invalid", "$", f"{quote(path.name)} is not a shard name llama.cpp writes"),))
    shards = tuple(path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1))
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        return Err((Issue("load.gguf.shard.missing", "$", f"the model is split in {count} files; missing: "
                          + ", ".join(quote(n, 60) for n in missing[:5]), "download every shard into one directory"),))
    return Ok(shards)


def read_gguf_source(path: Path) -> Result[GgufSource, Issues]:
    """The GGUF model at ``path`` (any of its shards), opened once: each shard's header read, with
    the stamp of the file it was read from. The loader maps the files and reads no header again."""
    shards = shard_paths(path)
    if isinstance(shards, Err):
        return shards
    read: list[GgufShard] = []
    for p in shards.value:
        found = read_gguf_file(p)
        if isinstance(found, Err):
            return found
        header, status = found.value
        read.append(GgufShard(p, header, FileStamp.of(status)))
    return Ok(GgufSource(tuple(read)))


def _config(source: GgufSource) -> Result[Gguf, Issues]:
    """The quantization config the shards' headers give, as ``read_config`` parses one file's."""
    configs: list[Gguf] = []
    for shard in source.shards:
        found = parse(shard.header)
        if isinstance(found, Err):
            return found
        if not isinstance(found.value, Gguf):
            return Err((Issue("load.gguf.not_gguf", "$", f"{quote(display(shard.path))} is not a GGUF file"),))
        configs.append(found.value)
    tensors = tuple(t for c in configs for t in c.tensors)
    return Ok(attrs.evolve(configs[0], tensors=tensors, gguf_file=source.paths[0].name))


def load_gguf(path: Path, *, device: str, dtype: DType | None, quantization: AbstractQuantConfig | None, backend: str | None,
              dequantize_at_load: bool, started: float, mmap: bool = True) -> Result[Loaded, Issues]:
    """Plan and load the GGUF model at ``path`` (any of its shards). ``dequantize_at_load`` (or a
    ``Gguf(dequantize=True)``) picks the dequantize-at-load mode; otherwise weights stay packed."""
    from ..probing import probe
    from . import _execute

    source = read_gguf_source(path)
    if isinstance(source, Err):
        return source
    config = _config(source.value)
    if isinstance(config, Err):
        return config
    user = quantization
    if dequantize_at_load and user is None:
        user = attrs.evolve(config.value, dequantize=True)  # the loading attribute, and nothing else, differs
    options = LoadOptions(device=device, dtype=dtype, backend=backend, user_config=user, executable=True)
    made = plan(config.value, probe(), options)
    if isinstance(made, Err):
        return made
    empty = Checkpoint(path.parent, {}, {})
    request = LoadRequest(directory=path.parent, checkpoint=empty, plan=made.value, gguf=source.value,
                          dequantize_at_load=dequantize_at_load, mmap=mmap)
    return _execute(request, started if started else time.perf_counter())


def gguf_nbytes(request: LoadRequest) -> int:
    """Bytes of the request's GGUF files, as they were when their headers were read."""
    return request.gguf.nbytes if request.gguf is not None else 0

