"""``load``: read → parse → validate → plan → execute, for a checkpoint directory or a Hub id.

The shell: it reads files, probes the environment and imports torch, Transformers and the
chosen backend's loader (``Backend.loader``, imported only now). Everything before the execute
step is the pure core's; the execute step is all-or-nothing.

>>> import quantdispatch as qd                                   # doctest: +SKIP
>>> model = qd.load("path/to/gptq-model").unwrap().model          # doctest: +SKIP
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
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from ..validate import validate
from .checkpoint import find_weights, resolve_source
from .gguf import gguf_nbytes, gguf_source
from .request import Loader, LoadRequest

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Loaded", "LoadStats", "load", "parameter_count"]


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
         dequantize_at_load: bool = False, progress: Callable[[int, int], None] | None = None) -> Result[Loaded, Issues]:
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
            full-precision checkpoint a bitsandbytes config quantizes while loading.
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
        progress: Called with (weight files done, weight files in all).
    """
    from ..probing import probe
    from ..reading import read_config

    started = time.perf_counter()
    wanted = _dtype(dtype)
    if isinstance(wanted, Issue):
        return Err((wanted,))
    if quantization is not None:
        checked = validate(quantization)
        if isinstance(checked, Err):
            return checked
    gguf = gguf_source(source)
    if gguf is not None:  # a .gguf file (or one shard of one): its own reading and loaders
        from .gguf import load_gguf

        return load_gguf(gguf, device=device, dtype=wanted, quantization=quantization, backend=backend,
                         dequantize_at_load=dequantize_at_load, started=started)
    directory = resolve_source(source)
    if isinstance(directory, Err):
        return directory
    config = read_config(directory.value)
    if isinstance(config, Err):
        return config
    if config.value is None and quantization is None:
        return Err((Issue("load.not_quantized", "$", "the checkpoint is not quantized and no quantization config was given",
                          "load it with Transformers, or pass quantization=qd.Bnb4Bit(...) to quantize while loading"),))
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
                          dequantize_at_load=dequantize_at_load, progress=progress, device_map=device_map, max_memory=max_memory,
                          offload_folder=Path(offload_folder) if offload_folder is not None else None)
    return _execute(request, started)


def parameter_count(model: nn.Module) -> int:
    """The model's parameters as its unquantized architecture has them, each shared tensor once.

    ``model.parameters()`` undercounts a quantized model: packed weights are buffers (GPTQ, AWQ,
    GGUF) or hold two codes per byte (bitsandbytes' ``Params4bit``). So a module that says how
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
    done = loader(request)
    if isinstance(done, Err):
        return done
    model, read = done.value
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    stats = LoadStats(seconds=time.perf_counter() - started, bytes_read=read, bytes_on_disk=checkpoint.nbytes + gguf_nbytes(request),
                      bytes_in_memory=sum(t.numel() * t.element_size() for t in tensors),
                      parameters=parameter_count(model))
    return Ok(Loaded(model=model, plan=p, stats=stats, directory=directory))


