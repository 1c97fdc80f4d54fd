"""Building a small C kernel at first use: one place for the compiler, the cache and the key.

The native kernels (GGUF block dequantization, the AVX2 int4 matmul) are C sources compiled on
the user's machine with the system compiler, cached per user under ``$XDG_CACHE_HOME/quantdispatch``
and keyed by the source, the flags, the compiler and the CPU's flags (``-march=native`` makes a
build good for this CPU only). Any failure means "no native kernel": callers fall back to torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "cpu_flags", "build_library"]


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


def build_library(name: str, source: str, flags: tuple[str, ...]) -> ctypes.CDLL | None:
    """Compile ``source`` into a shared library (once; cached on disk) and load it, or ``None``
    where there is no compiler, the platform is not Linux, or the build fails."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    key = hashlib.sha256((source + " ".join(flags) + compiler + cpu_flags()).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}_{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src, built = Path(tmp, f"{name}.c"), Path(tmp, f"{name}.so")
                src.write_text(source)
                subprocess.run([compiler, *flags, "-o", str(built), str(src)], check=True, capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: a concurrent build leaves one complete file
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        return None
