"""Swapping loaded layers one at a time, memory returned as each goes (the side effects of a
kernel's ``prepare`` step, named as such).

A kernel that repacks (``cpu-int4``, ``cpu-q4``, ``cpu-dense``) builds its module from a loaded
portable layer whose buffers are views of the memory-mapped weight file. Replacing layer by layer,
dropping each replaced layer's file pages and handing freed heap back, keeps memory at about one
layer above the repacked model; without it the repacked copy and the file's pages add up.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from collections.abc import Callable, Iterable
from typing import Final

import torch
from torch import nn

__all__ = ["replace_each"]


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


def replace_each(model: nn.Module, names: Iterable[str], build: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace each named module by ``build(module)`` (``None``: keep it); returns how many were
    replaced. Only names are held across the loop, so each old module is freed at once, and the
    replaced module's file pages are released before the next is built."""
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
