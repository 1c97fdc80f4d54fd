"""GGUF: its backend and rules."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

from ..backend import Backend, Candidate
from ..codec.gguf import tensor_issues
from ..configs.gguf import Gguf
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu
from ..gguf.blocks import DEQUANTIZABLE_TYPES
from ..gguf.native import FUSED_MATVEC_TYPES
from ..gguf.types import GgmlType
from ..result import Issues
from ..rules import Selection, backend_notes, compute_dtype, cross_field_issues, declare_backend, select_backend
from ..text import quote
from ._common import TORCH

__all__ = ["TORCH_GGUF", "TORCH_GGUF_PACKED", "CPU_GGUF_MATVEC", "CPU_GGUF_Q8DOT", "FUSED_GGUF_TYPES", "GGUF_DEQUANT_TYPES"]

TORCH_GGUF = declare_backend(Backend(
    name="torch-gguf", summary="every GGML block dequantized once at load to the dtype (torch), then dense layers",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), loader="quantdispatch.backends.gguf:load_dequantized",
))
TORCH_GGUF_PACKED = declare_backend(Backend(
    name="torch-gguf-packed", summary="GGML blocks kept packed (memory near the file's size), dequantized per call (fused path)",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), loader="quantdispatch.backends.gguf:load_packed",
))

CPU_GGUF_MATVEC = declare_backend(Backend(
    name="cpu-gguf-matvec", summary="GGML blocks kept packed; decode steps of Q4_0, Q4_1, Q4_K, Q8_0 and Q6_K weights run "
    "quantdispatch's fused C matrix-vector kernel on the blocks in place (AVX2+FMA, float32); prefill and other types "
    "dequantize per call",
    requires=(TORCH,), devices=("cpu",), loader="quantdispatch.backends.gguf:load_packed_matvec",
))
CPU_GGUF_Q8DOT = declare_backend(Backend(
    name="cpu-gguf-q8dot", summary="as cpu-gguf-matvec, with llama.cpp's arithmetic: activations quantized to 8 bits per "
    "block of 32 and integer dot products (AVX2, AVX-512, AVX-512 VNNI) on Q4_0, Q8_0, Q4_K and Q6_K rows repacked at load "
    "into groups of 16 (one copy); prefill an int8 GEMM on AVX-512 VNNI, the same fused kernel elsewhere; faster, "
    "logits within activation-rounding error, not float32's",
    requires=(TORCH,), devices=("cpu",), loader="quantdispatch.backends.gguf:load_packed_q8dot",
))

FUSED_GGUF_TYPES: Final[frozenset[GgmlType]] = FUSED_MATVEC_TYPES
"""The block types ``cpu-gguf-matvec`` and ``cpu-gguf-q8dot`` run on fused kernels: the one table,
``quantdispatch.gguf.native.FUSED_MATVEC_TYPES``."""

GGUF_DEQUANT_TYPES: Final[frozenset[GgmlType]] = DEQUANTIZABLE_TYPES
"""GGML types the torch GGUF backend dequantizes (``quantdispatch.gguf.blocks``; the kernels
implement exactly these, a test keeps them equal)."""


def _odd_tensors(config: Gguf) -> tuple[str, ...]:
    """Refused at plan time, naming the tensors, before a byte of tensor data is read."""
    odd = [t for t in config.tensors if t.ggml_type not in DEQUANTIZABLE_TYPES]
    reasons = tuple(f"cannot dequantize tensor {quote(t.name, 60)} of type {t.ggml_type.name}" for t in odd[:5])
    return reasons + ((f"… and {len(odd) - 5} more such tensors",) if len(odd) > 5 else ())


@select_backend.register(Gguf, AbstractDevice)
def _gguf_backends(config: Gguf, device: AbstractDevice, /) -> Selection:
    # The mode is the config's loading attribute ``dequantize`` (Transformers' GgufConfig key):
    # both backends are candidates, the one it asks for first.
    reasons = _odd_tensors(config)
    modes = (TORCH_GGUF, TORCH_GGUF_PACKED) if config.dequantize else (TORCH_GGUF_PACKED, TORCH_GGUF)
    return tuple(Candidate(b, reasons) for b in modes)


@select_backend.register(Gguf, Cpu)
def _gguf_cpu(config: Gguf, device: Cpu, /) -> Selection:
    # Kept packed on a CPU with AVX2 and FMA, the fused kernels take decode. First the 8-bit
    # activation kernels (llama.cpp's own arithmetic: activations quantized to 8 bits per block
    # of 32, integer dot products): measured 1.6-2x faster at decode than the float32 ones
    # (benchmarks/bench_kernels_bandwidth.py), and they have the prefill GEMM (AVX-512 VNNI).
    # Then the float32 kernels (the float32 numbers, by name or where the first cannot load),
    # then the plain packed module (the same function; the kernels also need F16C, which every
    # AVX2 CPU has, and fall back per type where it is missing or they cannot be built).
    reasons = _odd_tensors(config)
    cpu = () if device.features.avx2 and device.features.fma else (
        "the fused GGUF kernels need AVX2 and FMA, and this CPU does not report both",)
    packed = (Candidate(CPU_GGUF_Q8DOT, reasons + cpu), Candidate(CPU_GGUF_MATVEC, reasons + cpu),
              Candidate(TORCH_GGUF_PACKED, reasons))
    dense = Candidate(TORCH_GGUF, reasons)
    return (dense, *packed) if config.dequantize else (*packed, dense)


@compute_dtype.register(Gguf, AbstractDevice)
def _gguf_dtype(config: Gguf, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.FLOAT32, "float32, the dtype GGUF weights dequantize to"


@cross_field_issues.register(Gguf)
def _gguf_rules(config: Gguf, /) -> Issues:
    return tensor_issues(config)


@backend_notes.register(Gguf)
def _gguf_notes(config: Gguf, /) -> Mapping[str, tuple[str, ...]]:
    # What each kept-packed backend does with this file's tensors, by type: known from the header
    # alone, before a byte of tensor data is read. F32 tensors are dense in every mode.
    counts: Counter[GgmlType] = Counter(t.ggml_type for t in config.tensors if t.ggml_type != GgmlType.F32)
    if not counts:
        return {}

    def listed(types: list[GgmlType]) -> str:
        return ", ".join(f"{t.name} ({counts[t]})" for t in sorted(types, key=lambda t: t.value))

    fused = [t for t in counts if t in FUSED_GGUF_TYPES]
    per_call = [t for t in counts if t not in FUSED_GGUF_TYPES]
    packed = f"kept packed (tensors by type): {listed(list(counts))}; each linear dequantizes per call"
    lines, q8 = [], []
    if fused:
        lines.append(f"fused kernels at decode (up to 8 rows) for {listed(fused)}; prefill dequantizes per call")
        q8.append(f"fused kernels at decode (up to 8 rows) for {listed(fused)}, activations quantized to 8 bits per block "
                  "of 32 as llama.cpp does (integer dot products); prefill: an int8 GEMM for Q4_0, Q8_0, Q4_K and Q6_K "
                  "where the CPU has AVX-512 VNNI, else dequantizes per call")
    if per_call:
        lines.append(f"dequantized per call: {listed(per_call)}")
        q8.append(lines[-1])
    return {TORCH_GGUF_PACKED.name: (packed,), CPU_GGUF_MATVEC.name: tuple(lines), CPU_GGUF_Q8DOT.name: tuple(q8)}
