"""``load``: read → parse → validate → plan → execute, for a checkpoint directory or a Hub id.

The shell: it reads files, probes the environment and imports torch, Transformers and the
chosen backend's loader (``Backend.loader``, imported only now). Everything before the execute
step is the pure core's; the execute step is all-or-nothing.

>>> import quantdispatch as qd                                   # doctest: +SKIP
>>> model = qd.load("path/to/quantized-model").unwrap().model     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..configs.base import AbstractQuantConfig
from ..dtypes import DType
from ..plan import LoadOptions, LoadPlan, plan
from ..quiet import quiet_transformers
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from ..validate import validate
from .checkpoint import find_weights, resolve_source
from .gguf import gguf_nbytes, gguf_source
from .guard import one_load_at_a_time
from .request import Loader, LoadRequest

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Loaded", "LoadStats", "load", "parameter_count", "privatize"]


@attrs.frozen(kw_only=True)
class LoadStats:
    """What a load cost.

    Attributes:
        seconds: Wall time of the whole load.
        bytes_read: Bytes of weights read from disk.
        bytes_on_disk: Bytes of weights in the checkpoint's files.
        bytes_in_memory: Bytes of the loaded model's parameters and buffers.
        parameters: Number of parameters as the unquantized model has them (``parameter_count``):
            a packed layer counts its dense weight, not its packed words.
    """

    seconds: float
    bytes_read: int
    bytes_on_disk: int
    bytes_in_memory: int
    parameters: int


@attrs.frozen(kw_only=True)
class Loaded:
    """A loaded model: an ordinary Transformers ``PreTrainedModel`` in eval mode, the plan it
    followed and what the load cost."""

    model: nn.Module
    plan: LoadPlan
    stats: LoadStats
    directory: Path


def _dtype(value: object) -> DType | None | Issue:
    if value == "auto" or value is None:
        return None
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        found = DType.from_json(value)
        if found is not None and found.is_floating_point:
            return found
    return Issue("load.dtype.invalid", "$.dtype", f"{quote(value)} is not a floating-point dtype", "use 'auto', 'float32', 'bfloat16' or 'float16'")


def _resolve_loader(reference: str) -> Loader | Issue:
    module, _, function = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        return Issue("load.loader.unavailable", "$", f"the loader {quote(reference)} cannot be imported: {quote(str(e), 160)}",
                     "install the backend's extra, or choose another backend")
    loader: Loader = found
    return loader


def _config_dtype(directory: Path) -> DType | None:
    """Transformers 5's ``dtype="auto"``: the checkpoint's ``dtype`` / ``torch_dtype``."""
    import json

    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = raw.get("dtype", raw.get("torch_dtype")) if isinstance(raw, dict) else None
    found = DType.from_json(value) if isinstance(value, str) else None
    return found if found is not None and found.is_floating_point else None


def load(source: str | os.PathLike[str], *, device: str = "auto", dtype: str | DType = "auto",
         quantization: AbstractQuantConfig | None = None, backend: str | None = None,
         device_map: str | Mapping[str, str | int] | None = None, max_memory: Mapping[str | int, int | str] | None = None,
         offload_folder: str | os.PathLike[str] | None = None, trust_remote_code: bool = False, allow_pickle: bool = False,
         dequantize_at_load: bool = False, mmap: bool = True, progress: Callable[[int, int], None] | None = None) -> Result[Loaded, Issues]:
    """Load a quantized checkpoint into a Transformers model, as its plan says. Never raises on
    bad input: every problem is an issue, and no model comes back with them.

    Args:
        source: A checkpoint directory, a Hub repository id (offline: the local cache), or a
            ``.gguf`` file (any shard of a split one), or a directory holding one GGUF model and
            no ``config.json``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: The compute dtype, or ``"auto"``: as Transformers 5, the checkpoint's own
            (``config.json``'s ``dtype`` / ``torch_dtype``), else the plan's choice for the method
            and device.
        quantization: A typed config, reconciled with the checkpoint's as ``plan`` does; on a
            full-precision checkpoint a config of a method that quantizes while loading does so.
        backend: Force a backend by name.
        device_map: Where each module goes, as in Transformers (``"auto"``, ``"cpu"``, a dict of
            module names to devices, ``"cpu"`` or ``"disk"``), through accelerate. Modules on
            ``"disk"`` stay on the meta device between forwards (accelerate's hooks read them).
        max_memory: Budgets per device for ``device_map="auto"``.
        offload_folder: Where ``"disk"`` modules are written.
        trust_remote_code: Allow architectures defined by code inside the checkpoint.
        allow_pickle: Accept pickled ``.bin`` weights (refused otherwise).
        dequantize_at_load: Keep a dense copy of each packed weight (bigger, faster forward); for a
            GGUF file, dequantize every weight at load instead of keeping it packed.
        mmap: Let weights that stay as the file stores them (GGUF blocks kept packed, tensors
            read in their stored dtype) read the file's memory-mapped pages, as Transformers and
            ``safetensors`` do: less memory, but the file must not change while the model lives
            (truncating it kills the process with SIGBUS; rewriting it changes the weights).
            ``False`` copies them into private memory at load: the model never reads the file again.
        progress: Called with (weight files done, weight files in all). An exception it raises
            is the caller's: it propagates, the load stops and the process state is put back.

    Every argument is checked before any file is read: a wrong type is an issue
    (``load.argument.type``), not an exception.
    """
    from ..probing import probe
    from ..reading import read_config

    started = time.perf_counter()
    wrong = _argument_issues(source=source, device=device, dtype=dtype, quantization=quantization, backend=backend,
                             device_map=device_map, max_memory=max_memory, offload_folder=offload_folder,
                             trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                             dequantize_at_load=dequantize_at_load, mmap=mmap, progress=progress)
    if wrong:
        return Err(wrong)
    wanted = _dtype(dtype)
    if isinstance(wanted, Issue):
        return Err((wanted,))
    if quantization is not None:
        checked = validate(quantization)
        if isinstance(checked, Err):
            return checked
    try:  # the path itself may be unusable: too long, a loop of links, a component that is a file
        gguf = gguf_source(source)
        directory = resolve_source(source) if gguf is None else None
    except (OSError, ValueError) as e:
        return Err((Issue("file.unreadable", "$.source", f"{quote(os.fspath(source), 120)}: {quote(str(getattr(e, 'strerror', None) or e), 120)}",
                          "name an existing checkpoint directory, .gguf file or Hub repository id"),))
    if gguf is not None:  # a .gguf file (or one shard of one): its own reading and loaders
        from .gguf import load_gguf

        return load_gguf(gguf, device=device, dtype=wanted, quantization=quantization, backend=backend,
                         dequantize_at_load=dequantize_at_load, mmap=mmap, started=started)
    assert directory is not None
    if isinstance(directory, Err):
        return directory
    config = read_config(directory.value)
    if isinstance(config, Err):
        return config
    if config.value is None and quantization is None:
        return Err((Issue("load.not_quantized", "$", "the checkpoint is not quantized and no quantization config was given",
                          "load it with Transformers, or pass quantization= a config of a method that quantizes while loading"),))
    weights = find_weights(directory.value, allow_pickle=allow_pickle)
    if isinstance(weights, Err):
        return weights
    from_checkpoint = _config_dtype(directory.value) if wanted is None else None
    options = LoadOptions(device=device, dtype=wanted or from_checkpoint, backend=backend, user_config=quantization, executable=True)
    made = plan(config.value, probe(), options)
    if isinstance(made, Err):
        return made
    p = made.value
    if from_checkpoint is not None:
        why = f"dtype {from_checkpoint.value}: the checkpoint's (dtype='auto', as Transformers 5 reads it)"
        p = attrs.evolve(p, notes=tuple(why if n.startswith(f"dtype {from_checkpoint.value}: requested") else n for n in p.notes))
    if device_map is not None:
        p = attrs.evolve(p, notes=(*p.notes, f"device map {quote(device_map, 120)} (accelerate), offload folder {quote(offload_folder)}"))
    request = LoadRequest(directory=directory.value, checkpoint=weights.value, plan=p, trust_remote_code=trust_remote_code,
                          dequantize_at_load=dequantize_at_load, mmap=mmap, progress=progress, device_map=device_map, max_memory=max_memory,
                          offload_folder=Path(offload_folder) if offload_folder is not None else None)
    return _execute(request, started)


def parameter_count(model: nn.Module) -> int:
    """The model's parameters as its unquantized architecture has them, each shared tensor once.

    ``model.parameters()`` undercounts a quantized model: packed weights are buffers, or hold two
    codes per byte (a 4-bit ``Params4bit``). So a module that says how
    many it stands for (``logical_parameters()``) counts that; one with integer ``in_features``
    and ``out_features`` (or ``num_embeddings`` and ``embedding_dim``) whose ``weight`` is not a
    dense parameter of that size counts the dense weight and its bias; any other its own parameters.
    """
    import torch

    seen: set[int] = set()
    total = 0
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        first = next(iter((*own.values(), *module.buffers(recurse=False))), None)
        key = id(module) if first is None else first.data_ptr() or id(first)
        stated = getattr(module, "logical_parameters", None)
        shape = _dense_shape(module)
        weight = own.get("weight")
        if callable(stated) or shape is not None and (weight is None or weight.numel() != shape[0] * shape[1]):
            if key in seen:  # a packed layer tied to another (GGUF's output layer reading the embedding's blocks)
                continue
            seen.add(key)
            if callable(stated):
                total += int(stated())
                continue
            assert shape is not None
            bias = getattr(module, "bias", None)
            total += shape[0] * shape[1] + (bias.numel() if isinstance(bias, torch.Tensor) else 0)
            continue
        for p in own.values():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _dense_shape(module: nn.Module) -> tuple[int, int] | None:
    for rows, cols in (("out_features", "in_features"), ("num_embeddings", "embedding_dim")):
        r, c = getattr(module, rows, None), getattr(module, cols, None)
        if isinstance(r, int) and isinstance(c, int):
            return r, c
    return None


def _execute(request: LoadRequest, started: float) -> Result[Loaded, Issues]:
    p, checkpoint, directory = request.plan, request.checkpoint, request.directory
    assert p.backend.loader is not None  # plan(executable=True) chose a backend with a loader
    loader = _resolve_loader(p.backend.loader)
    if isinstance(loader, Issue):
        return Err((loader,))
    with one_load_at_a_time():  # process-wide state is touched while a model is built: see guard.py
        quiet_transformers()  # what third-party imports print goes to a logger (quiet.py)
        done = loader(request)
    if isinstance(done, Err):
        return done
    model, read = done.value
    if not request.mmap:
        privatize(model)
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    stats = LoadStats(seconds=time.perf_counter() - started, bytes_read=read, bytes_on_disk=checkpoint.nbytes + gguf_nbytes(request),
                      bytes_in_memory=sum(t.numel() * t.element_size() for t in tensors),
                      parameters=parameter_count(model))
    return Ok(Loaded(model=model, plan=p, stats=stats, directory=directory))




def privatize(model: nn.Module) -> int:
    """Copy every CPU parameter and buffer whose memory torch did not allocate (a memory-mapped
    file's pages, a NumPy array's) into memory of its own; tensors that shared such memory
    share the copy. Returns the bytes copied. The model then never reads its files again."""
    import torch
    from torch import nn

    copies: dict[tuple[object, ...], torch.Tensor] = {}
    copied = 0
    def own(t: torch.Tensor) -> torch.Tensor:
        nonlocal copied
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        copy = copies.get(key)
        if copy is None:
            copy = copies[key] = t.detach().clone()
            copied += copy.numel() * copy.element_size()
        return copy

    def foreign(t: torch.Tensor | None) -> bool:  # memory torch did not allocate (not resizable), on the CPU
        return t is not None and t.device.type == "cpu" and not t.untyped_storage().resizable()

    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and foreign(p):
                module._parameters[name] = nn.Parameter(own(p), requires_grad=p.requires_grad)
        for name, b in module._buffers.items():
            if b is not None and foreign(b):
                module._buffers[name] = own(b)
    return copied


_FLAGS = ("trust_remote_code", "allow_pickle", "dequantize_at_load", "mmap")


def _argument_issues(**given: object) -> Issues:
    """Each argument of ``load`` whose type is wrong, as an issue naming it (every one at once)."""
    from ..configs.base import AbstractQuantConfig

    def wrong(name: str, expected: str) -> Issue:
        value = given[name]
        return Issue("load.argument.type", f"$.{name}", f"{name} must be {expected}, got {type(value).__name__} {quote(value, 60)}")

    issues: list[Issue] = []
    source = given["source"]
    if not isinstance(source, (str, os.PathLike)):
        issues.append(wrong("source", "a path or a Hub repository id"))
    if not isinstance(given["device"], str):
        issues.append(wrong("device", "a device string ('auto', 'cpu', 'cuda:0', 'mps')"))
    if not isinstance(given["dtype"], (str, DType)):
        issues.append(wrong("dtype", "'auto', a dtype name or a quantdispatch.DType"))
    if given["quantization"] is not None and not isinstance(given["quantization"], AbstractQuantConfig):
        issues.append(wrong("quantization", "a quantization config or None"))
    if given["backend"] is not None and not isinstance(given["backend"], str):
        issues.append(wrong("backend", "a backend name or None"))
    device_map = given["device_map"]
    if device_map is not None and not isinstance(device_map, str) and not (
            isinstance(device_map, Mapping) and all(isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
                                                    for k, v in device_map.items())):
        issues.append(wrong("device_map", "'auto', a device, or a mapping of module names to devices"))
    max_memory = given["max_memory"]
    if max_memory is not None and not (isinstance(max_memory, Mapping) and all(
            isinstance(k, (str, int)) and not isinstance(k, bool) and isinstance(v, (str, int)) and not isinstance(v, bool)
            and (not isinstance(v, int) or v >= 0) for k, v in max_memory.items())):
        issues.append(wrong("max_memory", "a mapping of devices to byte budgets (non-negative ints or '2GiB')"))
    if given["offload_folder"] is not None and not isinstance(given["offload_folder"], (str, os.PathLike)):
        issues.append(wrong("offload_folder", "a directory path or None"))
    issues.extend(wrong(flag, "True or False") for flag in _FLAGS if not isinstance(given[flag], bool))
    if given["progress"] is not None and not callable(given["progress"]):
        issues.append(wrong("progress", "a callable (done, total) or None"))
    return tuple(issues)
