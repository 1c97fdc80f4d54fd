"""Facts shared by several built-in methods' backends."""

from __future__ import annotations

from typing import Final

from ..backend import Requirement
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda, Mps

__all__ = ["TORCH", "GPTQMODEL", "ACCELERATE", "MARLIN_GROUPS", "marlin_unfit", "gpu_or_cpu_dtype", "bf16_or_cpu_dtype"]

TORCH: Final = Requirement("torch", "2.4")
GPTQMODEL: Final = Requirement("gptqmodel", "1.4.3")

MARLIN_GROUPS: Final = (-1, 32, 64, 128)
"""Group sizes the Marlin kernels tile (gptqmodel's and vLLM's Marlin both)."""


def marlin_unfit(bits: int, sym: bool, group_size: int) -> tuple[str, ...]:
    """Why Marlin cannot take weights of this width, symmetry and group size (empty: it can)."""
    reasons = []
    if bits not in (4, 8):
        reasons.append(f"Marlin takes 4- or 8-bit weights, not {bits}-bit")
    if not sym:
        reasons.append("Marlin takes symmetric GPTQ weights only (sym=false here)")
    if group_size not in MARLIN_GROUPS:
        shown = group_size if abs(group_size) < 10**12 else "a huge number"
        reasons.append(f"Marlin takes group_size in {list(MARLIN_GROUPS)}, not {shown}")
    return tuple(reasons)


def gpu_or_cpu_dtype(device: AbstractDevice) -> tuple[DType, str]:
    """Weight-only integer kernels: float16 on GPUs, float32 on the CPU."""
    if isinstance(device, (Cuda, Mps)):
        return DType.FLOAT16, "GPU kernels compute in float16"
    return DType.FLOAT32, "float32 on the CPU: the portable kernels dequantize to it"


ACCELERATE: Final = Requirement("accelerate", "1.1")


def bf16_or_cpu_dtype(device: AbstractDevice) -> tuple[DType, str]:
    """Floating-point formats with scales (FP8, FP4, codebooks): bfloat16 on GPUs, as their
    kernels and Transformers compute; float32 on the CPU."""
    if isinstance(device, (Cuda, Mps)):
        return DType.BFLOAT16, "the method's GPU kernels compute in bfloat16"
    return DType.FLOAT32, "float32 on the CPU: weights are dequantized to it"
