"""Dequantize GGUF tensor data in torch: the dispatcher over the block kernels.

The work goes in chunks of whole blocks small enough to stay in the CPU cache: each chunk is
dequantized to float32 (into the output itself when it is float32, else into a reused scratch
buffer) and cast once to the output dtype. Casting gguf-py's float32 result once is what the
float16 and bfloat16 outputs equal, bit for bit.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Sequence
from typing import Final, Literal, TypeAlias

import torch

from quantdispatch.gguf.types import BLOCK, GgmlType

from .._native import custom_op
from . import blocks, lattice  # noqa: F401  (they register the kernels)
from ._common import KERNELS
from .native import native_kernels

__all__ = ["dequantize", "kernel_for", "new_output", "KernelPath", "OUTPUT_DTYPES", "CHUNK_WEIGHTS", "HUGE_PAGE_BYTES",
           "GGUF_DEQUANTIZE"]

KernelPath: TypeAlias = Literal["auto", "eager", "native"]
"""Which kernels run: ``"native"`` the fused C ones (``native.py``), ``"eager"`` the torch ones,
``"auto"`` native where built for the type, else eager."""

OUTPUT_DTYPES: Final = (torch.float32, torch.float16, torch.bfloat16)
"""The dtypes ``dequantize`` writes."""

CHUNK_WEIGHTS: Final = 1 << 20
"""Weights per chunk: 4 MiB of float32 and its intermediates stay in a server L3 cache; smaller
chunks pay torch's per-op overhead more often (2^18: 1.3-1.5x slower on Q4_K, measured)."""


HUGE_PAGE_BYTES: Final = 1 << 22
"""Outputs this large or larger get memory advised for transparent huge pages (see ``new_output``)."""

_HUGE: Final = 1 << 21  # the x86-64 huge page


def new_output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized contiguous tensor; large ones backed by anonymous memory in huge pages.

    The first write to a fresh tensor page-faults once per 4 KiB page, and on a VM that costs more
    than dequantizing into it (64 MiB: ~40 ms of faults against ~7 ms with 2 MiB pages, measured in
    benchmarks/bench_gguf_dequant.py). Linux only and only when the kernel allows ``madvise``
    huge pages; otherwise, and for small tensors, this is ``torch.empty``. The memory is freed
    with the tensor.
    """
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_BYTES or advice is None:
        return torch.empty(shape, dtype=dtype)
    region = mmap.mmap(-1, -(-nbytes // _HUGE) * _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(advice)
    except OSError:  # a kernel without transparent huge pages: ordinary pages, still correct
        pass
    return torch.frombuffer(region, dtype=dtype, count=math.prod(shape)).view(shape)


def kernel_for(ggml_type: GgmlType, path: KernelPath = "auto") -> tuple[Callable[[torch.Tensor, torch.Tensor], None], bool]:
    """The kernel that ``dequantize`` runs for ``ggml_type`` on ``path``, and whether it is native.

    Raises:
        ValueError: no kernel for the type, or ``"native"`` asked where there is none.
    """
    eager = KERNELS.get(ggml_type)
    if eager is None:
        raise ValueError(f"no kernel for GGML type {ggml_type!r}")
    native = native_kernels() if path != "eager" else None
    fused = None if native is None else native.get(ggml_type)
    if fused is not None:
        return fused, True
    if path == "native":
        raise ValueError(f"no native kernel for {ggml_type.name} (built: {native is not None})")
    return eager, False


def dequantize(
    raw: torch.Tensor,
    ggml_type: GgmlType,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    path: KernelPath = "auto",
) -> torch.Tensor:
    """Dequantize the data of one GGML tensor.

    Args:
        raw: The tensor's bytes, a contiguous uint8 tensor (any shape) on the CPU.
        ggml_type: Its block type; one of ``quantdispatch.gguf.blocks.DEQUANTIZABLE_TYPES``.
        shape: The PyTorch shape, ``[out, in]`` order: the GGUF (ggml) shape reversed, as numpy
            shapes gguf-py's result. The last dimension must be whole blocks.
        dtype: float32, float16 or bfloat16.
        out: Where to write, contiguous, of ``shape`` and ``dtype``; a new tensor when ``None``.
        path: ``"auto"``, ``"eager"`` or ``"native"`` (see ``KernelPath``); every path gives the same bits.

    Returns:
        ``out``, or the new tensor, bit-equal to ``gguf.quants.dequantize`` cast once to ``dtype``.

    Raises:
        ValueError: a misuse: an unknown type, a size or shape that does not match, a wrong dtype.
        (Untrusted files are checked by ``quantdispatch.gguf.data`` before any call.)

    >>> import torch
    >>> from quantdispatch.gguf import GgmlType
    >>> block = torch.tensor([0x00, 0x3C] + [0x98] * 16, dtype=torch.uint8)  # d = 1.0, codes 8 / 9
    >>> dequantize(block, GgmlType.Q4_0, (32,))[[0, 16]].tolist()
    [0.0, 1.0]
    """
    kernel, _ = kernel_for(ggml_type, path)
    per_block, size = BLOCK[ggml_type]
    n = math.prod(shape)
    if shape and shape[-1] % per_block:
        raise ValueError(f"rows of {shape[-1]} weights are not whole {ggml_type.name} blocks of {per_block}")
    n_blocks = n // per_block
    if raw.dtype != torch.uint8 or not raw.is_contiguous() or raw.numel() != n_blocks * size:
        msg = f"need {n_blocks * size} contiguous uint8 bytes for {ggml_type.name} {list(shape)}, got {raw.dtype} {list(raw.shape)}"
        raise ValueError(msg)
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output dtype {dtype} is not one of {OUTPUT_DTYPES}")
    if out is None:
        out = new_output(tuple(shape), dtype)
    elif out.dtype != dtype or tuple(out.shape) != tuple(shape) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {list(shape)}")
    packed = raw.reshape(n_blocks, size)
    dst = out.view(n_blocks, per_block)
    step = max(1, CHUNK_WEIGHTS // per_block)
    scratch = None if dtype is torch.float32 else torch.empty((min(step, n_blocks), per_block), dtype=torch.float32)
    run = kernel  # native kernels split large tensors over torch's threads themselves (OpenMP)
    for start in range(0, n_blocks, step):
        chunk = packed[start : start + step]
        target = dst[start : start + step]
        if scratch is None:
            run(chunk, target)
        else:
            work = scratch[: chunk.shape[0]]
            run(chunk, work)
            target.copy_(work)
    return out


def _dequantize_op(raw: torch.Tensor, ggml_type: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return dequantize(raw.reshape(-1), GgmlType(ggml_type), tuple(shape), dtype)


def _dequantize_fake(raw: torch.Tensor, ggml_type: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return raw.new_empty(tuple(shape), dtype=dtype)


GGUF_DEQUANTIZE: Final = custom_op("gguf_dequantize", "(Tensor raw, int ggml_type, SymInt[] shape, ScalarType dtype) -> Tensor",
                                   _dequantize_op, _dequantize_fake, dispatch_key="CompositeExplicitAutograd")
"""``torch.ops.quantdispatch.gguf_dequantize(raw, ggml_type, shape, dtype)``: ``dequantize`` (the
native kernels where built, else the eager ones) as one op, what the packed modules call so that
``torch.compile`` sees one node, not the chunk loop."""
