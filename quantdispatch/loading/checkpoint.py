"""Finding a checkpoint's files: the directory (or Hub repository) and the weight files that
Transformers would read, each header checked before any weight is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..fileio import display, read_bounded
from ..jsontext import decode_json
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from .safetensors import SafetensorsFile, TensorEntry, read_safetensors

__all__ = ["Checkpoint", "resolve_source", "find_weights"]

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@attrs.frozen
class Checkpoint:
    """The weight files of a checkpoint and where each tensor lives.

    Attributes:
        directory: The checkpoint's directory.
        files: The checked safetensors files, by path.
        where: Each tensor name and the file that holds it.
        unpickled: For a pickled ``.bin`` checkpoint the caller allowed: its tensors, read with
            ``torch.load(weights_only=True)``; ``None`` for safetensors (read memory-mapped later).
    """

    directory: Path
    files: Mapping[str, SafetensorsFile]
    where: Mapping[str, str]
    unpickled: Mapping[str, Any] | None = None

    def entry(self, name: str) -> TensorEntry:
        """The header entry of one tensor."""
        return self.files[self.where[name]].tensors[name]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in all files."""
        return sum(e.nbytes for f in self.files.values() for e in f.tensors.values())


def _issue(code: str, message: str, hint: str | None = None) -> Err[Issues]:
    return Err((Issue(code, "$", message, hint),))


def resolve_source(source: str | os.PathLike[str]) -> Result[Path, Issues]:
    """A local directory as it is; otherwise a Hub repository id resolved through
    ``huggingface_hub`` (offline, the local cache only)."""
    given: object = source
    if not isinstance(given, (str, os.PathLike)) or os.fspath(given) in ("", b""):
        return _issue("load.source.invalid", f"expected a directory or a Hub repository id, got {quote(given)}")
    path = Path(source)
    if path.is_dir():
        return Ok(path)
    if path.exists() and not path.is_file():
        return _issue("file.not_regular", f"{quote(display(path))} is neither a directory nor a regular file (a FIFO, socket or device)",
                      "name a checkpoint directory or a .gguf file")
    if path.exists():
        return _issue("load.source.not_directory", f"{quote(display(path))} is a file; name the checkpoint's directory",
                      "a .gguf file loads by its name; for safetensors, name the directory that holds config.json")
    text = os.fspath(source)
    if text.count("/") == 1 and not text.startswith(("/", ".")):
        return _from_hub(text)
    return _issue("file.missing", f"{quote(display(path))}: no such directory")


def _from_hub(repo_id: str) -> Result[Path, Issues]:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        return _issue("load.hub.unavailable", f"{quote(repo_id)} is not a directory, and huggingface_hub is not installed")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        found = snapshot_download(repo_id, local_files_only=offline,
                                  allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
    except (LocalEntryNotFoundError, FileNotFoundError):
        return _issue("load.hub.not_cached", f"{quote(repo_id)} is not in the local Hugging Face cache and the Hub is offline",
                      "download it first (huggingface-cli download), or pass a local directory")
    except HFValidationError as e:
        return _issue("load.source.invalid", f"{quote(repo_id)} is neither a directory nor a repository id: {quote(str(e), 120)}")
    except OSError as e:
        return _issue("load.hub.failed", f"could not fetch {quote(repo_id)}: {quote(str(e), 160)}")
    return Ok(Path(found))


def find_weights(directory: Path, *, allow_pickle: bool = False) -> Result[Checkpoint, Issues]:
    """The safetensors files Transformers would read: ``model.safetensors``, or the shards its
    index names. Other ``.safetensors`` files (``consolidated.safetensors``) are not read. A
    pickled ``.bin`` checkpoint is refused unless ``allow_pickle``.

    The index and its shards must agree, as a single file agrees with itself: a tensor the index
    puts in a shard that does not hold it is ``load.tensor.missing``; one a shard holds that the
    index does not list is kept in ``where`` (so the model's check reports it as unexpected, exactly
    as in a single file); one held by two shards is ``load.tensor.duplicate``."""
    if (directory / _INDEX).exists():
        return _sharded(directory)
    if (directory / _SINGLE).exists():  # a FIFO or device of that name is refused by the reader
        checked = read_safetensors(directory / _SINGLE)
        if isinstance(checked, Err):
            return checked
        f = checked.value
        return Ok(Checkpoint(directory, {f.path: f}, {n: f.path for n in f.tensors}))
    if any((directory / p).is_file() for p in _PICKLES):
        hint = "re-save it with safetensors (save_pretrained), or pass allow_pickle=True"
        if allow_pickle:
            return _unpickle(directory)
        return _issue("load.pickle.refused", "the weights are a pickled .bin file, which can run code when loaded", hint)
    return _issue("load.weights.missing", f"no {_SINGLE} or {_INDEX} in {quote(display(directory))}",
                  "a checkpoint saved by Transformers has one of them")


_TORCH_TO_SAFETENSORS = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
                         "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}


def _unpickle(directory: Path) -> Result[Checkpoint, Issues]:
    """A pickled checkpoint the caller allowed: ``torch.load(weights_only=True)`` (no arbitrary
    code; tensors and plain containers only), shard by shard as its index says."""
    import torch

    index = directory / "pytorch_model.bin.index.json"
    if index.is_file():
        raw = read_bounded(index, 64 * 1024 * 1024)
        decoded = decode_json(raw.decode("utf-8", errors="replace")) if not isinstance(raw, Issue) else Err((raw,))
        if isinstance(decoded, Err):
            return decoded
        weight_map = decoded.value.get("weight_map") if isinstance(decoded.value, dict) else None
        if not isinstance(weight_map, dict):
            return _issue("load.index.invalid", "pytorch_model.bin.index.json has no weight_map")
        names = sorted({v for v in weight_map.values() if isinstance(v, str) and "/" not in v and v not in ("", ".", "..")})
    else:
        names = ["pytorch_model.bin"]
    tensors: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name in names:
        try:
            loaded = torch.load(directory / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # unpickling refuses anything but tensors; any failure is this file's
            return _issue("load.pickle.invalid", f"{name}: {quote(str(e), 200)}", "the file is corrupt, or holds more than tensors")
        if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
            return _issue("load.pickle.invalid", f"{name} does not hold a state dict of named tensors")
        for key, t in loaded.items():
            dtype = _TORCH_TO_SAFETENSORS.get(str(t.dtype).removeprefix("torch."))
            if dtype is None:
                return _issue("load.pickle.invalid", f"{name}: tensor {quote(key)} has dtype {t.dtype}")
            tensors[key] = t
            where[key] = str(directory / name)
    files = {path: SafetensorsFile(path, 0, 0, {k: TensorEntry(k, _TORCH_TO_SAFETENSORS[str(t.dtype).removeprefix("torch.")],
                                                               tuple(t.shape), 0, t.numel() * t.element_size())
                                                for k, t in tensors.items() if where[k] == path}, {})
             for path in set(where.values())}
    return Ok(Checkpoint(directory, files, where, unpickled=tensors))


def _sharded(directory: Path) -> Result[Checkpoint, Issues]:
    raw = read_bounded(directory / _INDEX, 64 * 1024 * 1024)
    if isinstance(raw, Issue):
        return Err((raw,))
    decoded = decode_json(raw.decode("utf-8", errors="replace"))
    if isinstance(decoded, Err):
        return decoded
    index = decoded.value
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return _issue("load.index.invalid", f"{_INDEX} has no weight_map of tensor names to file names")
    files: dict[str, SafetensorsFile] = {}
    issues: list[Issue] = []
    for name in sorted(set(weight_map.values())):
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            issues.append(Issue("load.index.invalid", "$.weight_map", f"{quote(name)} is not a file name in the checkpoint"))
            continue
        checked = read_safetensors(directory / name)
        if isinstance(checked, Err):
            issues.extend(checked.error)
        else:
            files[name] = checked.value
    where: dict[str, str] = {}
    for tensor, name in weight_map.items():
        f = files.get(name)
        if f is None:
            continue
        if tensor not in f.tensors:
            issues.append(Issue("load.tensor.missing", f"$.weight_map[{quote(tensor)}]",
                                f"{_INDEX} puts {quote(tensor)} in {quote(name)}, which does not hold it"))
        else:
            where[tensor] = f.path
    for name, f in files.items():
        for tensor in f.tensors:
            listed = weight_map.get(tensor)
            if listed is None and tensor not in where:  # as in a single file: the model's check reports it (load.tensor.unexpected)
                where[tensor] = f.path
            elif listed != name:
                other = quote(listed) if listed is not None else f"{quote(Path(where[tensor]).name)} too"
                issues.append(Issue("load.tensor.duplicate", f"$.tensors[{quote(tensor)}]",
                                    f"{quote(name)} holds {quote(tensor)}, which is in {other}",
                                    "the index and its shards disagree: the checkpoint was edited or mixes two saves"))
    if issues:
        return Err(tuple(issues[:100]))
    return Ok(Checkpoint(directory, {f.path: f for f in files.values()}, where))
