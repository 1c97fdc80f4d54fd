"""``probe()``: capture the running process's environment as an ``Environment`` value.

This is the shell side of ``environment.py``. Package versions come from installed metadata
(nothing is imported). Devices need torch: when it is installed, ``probe`` imports it to ask for
CUDA and MPS devices; ``probe(devices=False)`` skips that and reports the CPU only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from .environment import MASK_VARIABLE, AbstractDevice, Cpu, CpuFeatures, Cuda, Environment, Mps, Package, Version
from .rules import backends

__all__ = ["probe", "RELEVANT_PACKAGES", "relevant_packages", "cpu_features", "host_cpu_features", "features_from_flags"]

RELEVANT_PACKAGES: tuple[str, ...] = (
    "torch", "transformers", "accelerate", "safetensors", "numpy", "bitsandbytes", "gptqmodel", "optimum",
    "gguf", "autoawq", "auto-gptq",
)
"""Distributions whose versions backends may require; ``probe(extra=...)`` adds more."""


def relevant_packages(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The distributions whose versions ``probe`` records: the usual ones, every package a
    declared backend requires (a plugin's included), and ``extra``; each once, in that order."""
    required = (r.package for b in backends() for r in b.requires)
    return tuple(dict.fromkeys((*RELEVANT_PACKAGES, *required, *extra)))


def _packages(names: tuple[str, ...]) -> tuple[Package, ...]:
    found = []
    for name in names:
        try:
            found.append(Package(name, Version.parse(importlib.metadata.version(name))))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found)


def features_from_flags(flags: str) -> CpuFeatures:
    """The features named by a ``/proc/cpuinfo`` ``flags`` line (space-separated names).

    >>> features_from_flags("fpu sse2 avx2 fma avx512f avx512_bf16").names()
    ('avx2', 'fma', 'avx512f', 'avx512_bf16')
    """
    names = set(flags.split())
    return CpuFeatures(avx2="avx2" in names, fma="fma" in names, avx512="avx512f" in names, avx512_bf16="avx512_bf16" in names,
                       amx="amx_bf16" in names, avx512_vnni="avx512_vnni" in names)


def cpu_features() -> CpuFeatures:
    """The host CPU's features (``host_cpu_features``), less those the process's mask hides.

    ``QUANTDISPATCH_CPU_FEATURES`` masks them: ``none`` (the portable kernels everywhere), or the
    features to keep, comma-separated as ``/proc/cpuinfo`` spells them (``avx2,fma``). It can
    only remove features, never add one; ``inspect`` shows an active mask. Read at each call, so
    a test may set it for one load.
    """
    host = host_cpu_features()
    spec = os.environ.get(MASK_VARIABLE)
    return host if spec is None else host.masked(spec)


@functools.cache
def host_cpu_features() -> CpuFeatures:
    """The host CPU's features, read once per process: the first ``flags`` line of
    ``/proc/cpuinfo`` (Linux), else torch's compiled-in view of the CPU (``AVX2``, ``AVX512``;
    it cannot tell bf16 support), else none."""
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return features_from_flags(line.partition(":")[2])
    except OSError:
        pass
    if importlib.util.find_spec("torch") is None:
        return CpuFeatures()
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    vector = capability in ("AVX2", "AVX512")  # torch's AVX2 build level includes FMA
    return CpuFeatures(avx2=vector, fma=vector, avx512=capability == "AVX512")


def _devices() -> tuple[AbstractDevice, ...]:
    devices: list[AbstractDevice] = [Cpu(features=cpu_features())]
    if importlib.util.find_spec("torch") is None:
        return tuple(devices)
    import torch  # the shell may import torch; the core never does

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(Cuda(index=i, capability=(props.major, props.minor), name=props.name, memory=props.total_memory))
    if torch.backends.mps.is_available():
        devices.append(Mps())
    return tuple(devices)


def probe(*, devices: bool = True, extra: tuple[str, ...] = ()) -> Environment:
    """Describe this process's environment.

    Args:
        devices: Ask torch for CUDA/MPS devices (imports torch when it is installed).
        extra: More distribution names to record (declared backends' requirements are recorded
            already).
    """
    v = sys.version_info
    return Environment(
        packages=_packages(relevant_packages(extra)),
        devices=_devices() if devices else (Cpu(features=cpu_features()),),
        python=(v.major, v.minor, v.micro),
    )
