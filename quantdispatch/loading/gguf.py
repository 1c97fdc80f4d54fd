"""``load`` for a ``.gguf`` file: its shards found, headers read and planned, then the GGUF loader.

A sharded model (``name-00001-of-00003.gguf``, as llama.cpp's ``gguf-split`` writes it) loads as
one: naming any shard finds the others beside it, and every shard's tensors join the plan.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..configs.base import AbstractQuantConfig
from ..configs.gguf import Gguf
from ..dtypes import DType
from ..fileio import display
from ..plan import LoadOptions, plan
from ..reading import read_config
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from .checkpoint import Checkpoint
from .request import LoadRequest

if TYPE_CHECKING:
    from . import Loaded

__all__ = ["gguf_source", "shard_paths", "load_gguf", "gguf_nbytes"]

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


def _config(shards: tuple[Path, ...]) -> Result[Gguf, Issues]:
    configs: list[Gguf] = []
    for p in shards:
        found = read_config(p)
        if isinstance(found, Err):
            return found
        if not isinstance(found.value, Gguf):
            return Err((Issue("load.gguf.not_gguf", "$", f"{quote(display(p))} is not a GGUF file"),))
        configs.append(found.value)
    tensors = tuple(t for c in configs for t in c.tensors)
    return Ok(attrs.evolve(configs[0], tensors=tensors, gguf_file=shards[0].name))


def load_gguf(path: Path, *, device: str, dtype: DType | None, quantization: AbstractQuantConfig | None, backend: str | None,
              dequantize_at_load: bool, started: float, mmap: bool = True) -> Result[Loaded, Issues]:
    """Plan and load the GGUF model at ``path`` (any of its shards). ``dequantize_at_load`` (or a
    ``Gguf(dequantize=True)``) picks the dequantize-at-load mode; otherwise weights stay packed."""
    from ..probing import probe
    from . import _execute

    shards = shard_paths(path)
    if isinstance(shards, Err):
        return shards
    config = _config(shards.value)
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
    request = LoadRequest(directory=path.parent, checkpoint=empty, plan=made.value, gguf_files=shards.value,
                          dequantize_at_load=dequantize_at_load, mmap=mmap)
    return _execute(request, started if started else time.perf_counter())


def gguf_nbytes(request: LoadRequest) -> int:
    """Bytes of the request's GGUF files."""
    return sum(p.stat().st_size for p in request.gguf_files)

