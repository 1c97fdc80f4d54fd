"""Loaders of the CPU backends: ``cpu-int4-gptq``, ``cpu-int4-awq`` (torch's int4 kernel),
``cpu-q4-gptq``, ``cpu-q4-awq`` (quantdispatch's native kernel) and ``cpu-dense-gptq`` (8-bit GPTQ
as a dense weight).

Each streams the checkpoint into the portable modules as ``torch-gptq``/``torch-awq`` do, then
(``post_load``) replaces them one layer at a time: the portable layer's packed buffers become the
kernel's, and are dropped before the next layer is repacked, so memory never holds more than one
layer twice. A layer whose shape the kernel cannot take (``kernels.int4.int4_unfit``, ``int4_native.q4_unfit``)
keeps its portable module, which computes the same function. Where the native kernel cannot be
built (no C compiler), its loaders fall back to torch's int4 kernel, layer by layer the same way.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from collections.abc import Callable
from typing import Final

import torch
from torch import nn

from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from ..configs.gptq import AbstractGptq
from ..kernels.int4 import Int4Linear, Int4Weights, int4_from_awq, int4_from_gptq, int4_unfit
from ..kernels.modules import AwqLinear, GptqLinear
from ..loading.request import LoadRequest
from ..loading.stream import load_streamed
from ..result import Err, Issue, Issues, Result

__all__ = ["load_gptq", "load_awq", "load_gptq_native", "load_awq_native", "load_gptq_dense", "repack_int4", "densify"]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, for ``malloc_trim`` and ``madvise``; ``None`` elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_MADV_DONTNEED: Final = 4
_PAGE: Final = mmap.PAGESIZE


def _release_pages(module: nn.Module) -> None:
    """Drop the resident pages of a replaced layer's checkpoint tensors. They are views of the
    memory-mapped weight file (safetensors maps it; the portable module kept views), whose touched
    pages stay resident until the whole file is unmapped: without this the repacked copy and the
    file's pages add up. Only whole pages inside each tensor's own bytes are dropped, and only in
    private mappings of a file (safetensors maps copy-on-write): a dropped page would read back
    as the file's bytes, which are the tensor's, and the tensor is discarded right after."""
    libc = _libc()
    if libc is None:
        return
    for buffer in module.buffers():
        if not _file_backed(buffer):
            continue
        start = -(-buffer.data_ptr() // _PAGE) * _PAGE
        end = (buffer.data_ptr() + buffer.numel() * buffer.element_size()) // _PAGE * _PAGE
        if end > start:
            libc.madvise(start, end - start, _MADV_DONTNEED)


def _file_backed(t: torch.Tensor) -> bool:
    """Whether the tensor's memory lies in a private mapping of a file (``/proc/self/maps``)."""
    address = t.data_ptr()
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:
                span, perms, _offset, _dev, inode = line.split(None, 5)[:5]
                low, _, high = span.partition("-")
                if int(low, 16) <= address < int(high, 16):
                    return perms[0] == "r" and perms[3] == "p" and inode != "0"
    except (OSError, ValueError):
        return False
    return False


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the system. glibc raises its mmap threshold after large frees,
    so a layer's freed temporaries stay in the heap; without this, repacking layer after layer
    grew the resident set by several times the checkpoint's size."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _replace_each(model: nn.Module, kind: type[nn.Module], build: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace every module of type ``kind`` by ``build(module)`` (``None``: keep it); returns how
    many were replaced. Only names are held across the loop, so each old module is freed at once."""
    names = [n for n, m in model.named_modules() if isinstance(m, kind)]
    done = 0
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = parent.get_submodule(child)
        built = build(old)
        if built is not None:
            setattr(parent, child, built)
            _release_pages(old)
            done += 1
        del built, old
        _release_freed_memory()
    return done


def repack_int4(model: nn.Module, dtype: torch.dtype, native: bool = False) -> int:
    """Swap each loaded ``GptqLinear`` (4-bit) and ``AwqLinear`` that the kernel can take for an
    ``Int4Linear`` (torch's kernel) or, with ``native`` and where it was built, a ``Q4Linear``
    (their biases in ``dtype``, the model's); returns the number swapped."""
    from ..kernels.int4_native import Q4Linear, native_int4, q4_unfit

    use_native = native and native_int4() is not None
    unfit = q4_unfit if use_native else int4_unfit
    build: Callable[[Int4Weights, torch.Tensor | None, torch.dtype], nn.Module] = Q4Linear if use_native else Int4Linear

    def gptq(module: nn.Module) -> nn.Module | None:
        assert isinstance(module, GptqLinear)
        if module.bits != 4 or unfit(module.in_features, module.out_features, module.group_size) is not None:
            return None
        weights = int4_from_gptq(module)
        return None if isinstance(weights, str) else build(weights, module.bias, dtype)

    def awq(module: nn.Module) -> nn.Module | None:
        assert isinstance(module, AwqLinear)
        if unfit(module.in_features, module.out_features, module.group_size) is not None:
            return None
        return build(int4_from_awq(module), module.bias, dtype)

    with torch.no_grad():
        return _replace_each(model, GptqLinear, gptq) + _replace_each(model, AwqLinear, awq)


def densify(model: nn.Module, dtype: torch.dtype) -> int:
    """Swap each loaded ``GptqLinear`` for an ``nn.Linear`` holding its dequantized weight in ``dtype``."""
    def dense(module: nn.Module) -> nn.Module:
        assert isinstance(module, GptqLinear)
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta", dtype=dtype)
        linear.weight = nn.Parameter(module.dequantize(dtype), requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.to(dtype), requires_grad=False)
        return linear

    with torch.no_grad():
        return _replace_each(model, GptqLinear, dense)


def _gptq_factory(config: AbstractGptq) -> Callable[[str, nn.Linear], nn.Module]:
    def make(name: str, linear: nn.Linear) -> nn.Module:
        return GptqLinear(config, linear.in_features, linear.out_features, linear.bias is not None, device="meta")
    return make


def _load_gptq_4bit(request: LoadRequest, native: bool) -> Result[tuple[nn.Module, int], Issues]:
    config = request.plan.config
    if not isinstance(config, AbstractGptq) or config.bits != 4:
        return Err((Issue("load.backend.mismatch", "$", f"{request.plan.backend.name} loads 4-bit GPTQ, not {type(config).__name__}"),))
    dtype = getattr(torch, request.plan.dtype.value)
    return load_streamed(request, _gptq_factory(config), lambda model: repack_int4(model, dtype, native))


def load_gptq(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a 4-bit GPTQ checkpoint onto torch's CPU int4 kernel."""
    return _load_gptq_4bit(request, native=False)


def load_gptq_native(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a 4-bit GPTQ checkpoint onto quantdispatch's native int4 kernel."""
    return _load_gptq_4bit(request, native=True)


def load_gptq_dense(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GPTQ checkpoint with every layer dequantized once into a dense weight."""
    config = request.plan.config
    if not isinstance(config, AbstractGptq):
        return Err((Issue("load.backend.mismatch", "$", f"cpu-dense-gptq loads GPTQ, not {type(config).__name__}"),))
    dtype = getattr(torch, request.plan.dtype.value)
    return load_streamed(request, _gptq_factory(config), lambda model: densify(model, dtype))


def load_awq(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GEMM, GEMV or GEMV_FAST AWQ checkpoint onto torch's CPU int4 kernel."""
    return _load_awq(request, native=False)


def load_awq_native(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GEMM, GEMV or GEMV_FAST AWQ checkpoint onto quantdispatch's native int4 kernel."""
    return _load_awq(request, native=True)


def _load_awq(request: LoadRequest, native: bool) -> Result[tuple[nn.Module, int], Issues]:
    config = request.plan.config
    if not isinstance(config, (AwqGemm, AwqGemv, AwqGemvFast)):
        what = type(config).__name__
        return Err((Issue("load.awq.packing", "$", f"{request.plan.backend.name} reads GEMM, GEMV and GEMV_FAST packings, not {what}"),))
    awq: AbstractAwq = config
    dtype = getattr(torch, request.plan.dtype.value)

    def make(name: str, linear: nn.Linear) -> nn.Module:
        return AwqLinear(awq, linear.in_features, linear.out_features, linear.bias is not None, device="meta")

    return load_streamed(request, make, lambda model: repack_int4(model, dtype, native))
