"""Building a small C kernel at first use, and exposing it as a torch custom op: one place for the
compiler, the cache, the key and the op registration.

The native kernels (GGUF block dequantization, the GGUF matrix-vector products, the AVX2 int4
matmul) are C sources shipped as package data beside their Python module (``int4_native.c``,
``gguf/native.c``, ``gguf/matvec.c`` and the header they share, ``gguf/half.h``). They are compiled
on the user's machine with the system compiler, cached per user under
``$XDG_CACHE_HOME/quantdispatch`` and keyed by the source and header texts, the ``-D`` defines, the
flags, the compiler and the CPU's flags (``-march=native`` makes a build good for this CPU only), so
an edit to any of them rebuilds. Any failure means "no native kernel": callers fall back to torch.

Each kernel entry point is a ``torch.library`` operator in the ``quantdispatch`` namespace
(``custom_op``): the ``ctypes`` call sits inside the op's CPU implementation, and a fake
implementation gives the output's shape, so ``torch.compile`` sees one opaque node. The ops are
registered when the kernel module that defines them is imported, never at ``import quantdispatch``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import torch

__all__ = ["NAMESPACE", "Isa", "cache_dir", "cpu_flags", "isa_level", "isa_flags", "threads", "read_source", "native_library", "build_library",
           "custom_op", "scratch", "fused_or_blocked"]

Isa = Literal["avx2", "avx512", "avx512-vnni"]
"""The SIMD level a native kernel is built for: AVX2 + FMA + F16C; AVX-512 F/BW/VL/DQ besides;
and AVX512-VNNI besides (8-bit dot products)."""

_SCRATCH: Final = threading.local()


def scratch(rows: int, cols: int) -> torch.Tensor:
    """A float32 ``[rows, cols]`` work buffer, this thread's own, reused across calls (grown when a
    call needs more). The prefill paths dequantize blocks of a few MiB into it: a fresh tensor per
    call is freed into glibc's heap, which (its mmap threshold raised after the first large free)
    keeps the pages, so each layer left a few MiB of resident memory behind (34 MiB over a 134M
    llama's prefill, measured in benchmarks/bench_formats.py's children)."""
    need = rows * cols
    buffer: torch.Tensor | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.numel() < need:
        buffer = torch.empty(need, dtype=torch.float32)
        _SCRATCH.buffer = buffer
    return buffer[:need].view(rows, cols)


def fused_or_blocked(x: torch.Tensor, n: int, fused_rows: int, block_weights: int, fused: Callable[[torch.Tensor], None],
                     dequant: Callable[[torch.Tensor, int, int], None]) -> torch.Tensor:
    """``x @ W.T`` in float32 (``x`` float32 ``[M, K]``, contiguous; ``W`` ``[n, K]`` in a kernel's
    format), the way the native FP8 and FP4 kernels compute it: up to ``fused_rows`` input rows,
    ``fused(y)`` writes the whole product into ``y`` (the fused kernel, which reads each weight once);
    above it, for each block of about ``block_weights`` weights (whole output rows ``n0:n1``),
    ``dequant(block, n0, n1)`` writes those rows of ``W`` in float32 into ``block`` (this thread's
    ``scratch``) and torch's GEMM multiplies them."""
    m, k = x.shape
    y = torch.empty(m, n, dtype=torch.float32)
    if m <= fused_rows:
        fused(y)
        return y
    step = max(1, block_weights // k) if k else n
    block = scratch(min(step, n), k)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        dequant(block, n0, n1)
        torch.mm(x, block[:n1 - n0].t(), out=y[:, n0:n1])
    return y


NAMESPACE: Final = "quantdispatch"
"""The ``torch.library`` namespace of the native kernels' ops (``torch.ops.quantdispatch.*``)."""


def cache_dir() -> Path:
    """Where built kernels are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quantdispatch"


def cpu_flags() -> str:
    """The CPU's feature line from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm), or ``""``."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def isa_level() -> Isa | None:
    """The SIMD level native kernels are built for in this process, or ``None`` where none of
    ours runs (not x86-64, or no AVX2/FMA/F16C).

    It is the host CPU's level less what ``QUANTDISPATCH_CPU_FEATURES`` masks (``probing.cpu_features``),
    so a test that masks ``avx2,fma`` on an AVX-512 machine builds and runs the AVX2 code of
    every kernel: each branch is testable on one machine. Read at each call (cheap); libraries
    are built and cached per level.
    """
    from ..probing import cpu_features

    host = set(cpu_flags().split())
    features = cpu_features()
    if platform.machine() not in ("x86_64", "AMD64") or not (features.avx2 and features.fma and {"avx2", "fma", "f16c"} <= host):
        return None
    if features.avx512 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= host:
        return "avx512-vnni" if features.avx512_vnni and "avx512_vnni" in host else "avx512"
    return "avx2"


def isa_flags(level: Isa) -> tuple[str, ...]:
    """Compiler flags for ``level``: ``-march=native`` less the extensions above the level (so a
    masked build holds no instruction the mask hides), and OpenMP for the kernels' threads.

    The C code selects its paths with the compiler's macros (``__AVX512F__``, ``__AVX512VNNI__``).
    OpenMP links ``libgomp.so.1``; in a process that imported torch that is torch's own copy
    (same soname), so our parallel regions share torch's thread pool instead of adding one.
    """
    cut = {"avx2": ("-mno-avx512f",), "avx512": ("-mno-avx512vnni",), "avx512-vnni": ()}[level]
    return ("-O3", "-march=native", *cut, "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC", "-std=gnu99")


def threads() -> int:
    """The thread count native kernels use: torch's intra-op count (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def read_source(package: str, name: str) -> str:
    """The text of the C file ``name`` shipped in ``package`` (package data, read through
    ``importlib.resources`` so that it works from a wheel, a zip or a source tree)."""
    return importlib.resources.files(package).joinpath(name).read_text(encoding="utf-8")


def native_library(package: str, name: str, flags: tuple[str, ...], functions: Mapping[str, tuple[int, int]]) -> ctypes.CDLL | None:
    """The C file ``name.c`` of ``package`` built (``build_library``) with its functions declared,
    or ``None`` where it cannot be built or ``QUANTDISPATCH_NATIVE=0``. ``functions`` maps each
    function to ``(pointers, ints)``: it returns nothing and takes that many pointer arguments,
    then that many int64 ones."""
    if os.environ.get("QUANTDISPATCH_NATIVE") == "0" or not sys.platform.startswith("linux"):
        return None
    lib = build_library(name, read_source(package, f"{name}.c"), flags)
    if lib is None:
        return None
    for function, (pointers, ints) in functions.items():
        entry = getattr(lib, function)
        entry.restype = None
        entry.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_int64] * ints
    return lib


def build_library(name: str, source: str, flags: tuple[str, ...], *, headers: Mapping[str, str] | None = None,
                  defines: Mapping[str, int] | None = None) -> ctypes.CDLL | None:
    """Compile ``source`` into a shared library (once; cached on disk) and load it, or ``None``
    where there is no compiler, the platform is not Linux, or the build fails.

    Args:
        name: The library's name (the cache file's stem).
        source: The C text.
        flags: Compiler flags.
        headers: Header files the source includes with ``#include "…"``, by file name: written
            beside it in the build directory.
        defines: ``-D`` macros (``NAME=value``), e.g. block sizes from the one GGUF block table.
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    included = dict(sorted((headers or {}).items()))
    macros = tuple(f"-D{key}={value}" for key, value in sorted((defines or {}).items()))
    parts = [source, *(f"{file}\0{text}" for file, text in included.items()), *flags, *macros, compiler, cpu_flags()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src, built = Path(tmp, f"{name}.c"), Path(tmp, f"{name}.so")
                src.write_text(source)
                for file, text in included.items():
                    Path(tmp, file).write_text(text)
                command = [compiler, *flags, *macros, "-I", tmp, "-o", str(built), str(src)]
                try:
                    subprocess.run(command, check=True, capture_output=True, timeout=120)
                except subprocess.CalledProcessError:
                    if "-fopenmp" not in flags:
                        raise
                    # A compiler without OpenMP (clang without libomp): the same kernels, one thread.
                    single = [part for part in command if part != "-fopenmp"]
                    subprocess.run(single, check=True, capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: a concurrent build leaves one complete file
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        return None


_LIBRARY: Final[torch.library.Library] = torch.library.Library(NAMESPACE, "FRAGMENT")  # type: ignore[no-untyped-call]
"""The ops' registrations live as long as this object (the process)."""


def custom_op(name: str, schema: str, impl: Callable[..., Any], fake: Callable[..., Any], *,
              dispatch_key: str = "CPU") -> torch._ops.OpOverload:
    """Define ``quantdispatch::name`` with ``schema`` (the argument list and return, e.g.
    ``"(Tensor x, int n) -> Tensor"``), ``impl`` its kernel for ``dispatch_key`` (the CPU, or
    ``CompositeExplicitAutograd`` for an op written in torch that runs on any device) and ``fake``
    its fake implementation (registered as the Meta kernel, which fake tensors run); return the op's default overload, the handle callers keep
    (calling it skips the attribute lookups of ``torch.ops.quantdispatch.name``).

    Registered on ``torch.library.Library`` directly rather than with ``torch.library.custom_op``:
    the latter wraps every call in Python-side autograd and argument handling, ~8 µs a call against
    ~2-3 µs here (measured on torch 2.13), which a decode step pays once per layer. None of these
    ops has a gradient (their weights are integer codes): the GGUF modules take their torch path
    when one is needed, and ``Q4Linear`` never had one.
    """
    qualname = f"{NAMESPACE}::{name}"
    _LIBRARY.define(name + schema)  # type: ignore[no-untyped-call]
    torch.library.impl(qualname, dispatch_key, impl, lib=_LIBRARY)
    # The fake implementation is the op's Meta kernel: FakeTensorMode (torch.compile, opcheck)
    # runs an op's Meta kernel when it has no registered fake, and registering one that way costs
    # ~0.1 ms, where torch.library.register_fake imports the fake-tensor machinery (~30-50 ms) into
    # every process that loads a model, compiled or not.
    _LIBRARY.impl(name, fake, "Meta")  # type: ignore[no-untyped-call]
    op: torch._ops.OpOverload = getattr(getattr(torch.ops, NAMESPACE), name).default
    return op
