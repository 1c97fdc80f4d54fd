"""Facts shared by several built-in methods' backends."""

from __future__ import annotations

from typing import Final

from ..backend import Candidate, Requirement
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda, Mps

__all__ = ["TORCH", "TORCH_INT4_CPU", "GPTQMODEL", "GPTQMODEL_TORCH_LINEAR", "ACCELERATE", "MARLIN_GROUPS", "ATEN_INT4_GROUPS", "marlin_unfit",
           "cpu_int4_unfit", "cpu_q4_unfit", "cpu_4bit_ranked", "gpu_or_cpu_dtype", "bf16_or_cpu_dtype"]

TORCH: Final = Requirement("torch", "2.4")
GPTQMODEL: Final = Requirement("gptqmodel", "1.4.3")
GPTQMODEL_TORCH_LINEAR: Final = Requirement("gptqmodel", "7.6")
"""GPTQModel whose ``TorchLinear`` (``gptqmodel/nn_modules/qlinear/torch.py``) our loader drives:
its constructor, ``validate``, ``qzero_format`` and ``post_init`` as read in 7.6.0."""
TORCH_INT4_CPU: Final = Requirement("torch", "2.6")
"""``aten._weight_int4pack_mm_for_cpu`` and its packing op (added in torch 2.6)."""

ATEN_INT4_GROUPS: Final = (32, 64, 128, 256)
"""Group sizes torch's CPU int4 kernel takes; a group size that is a multiple of one (or -1)
maps onto it exactly by repeating each scale."""

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


def cpu_int4_unfit(bits: int, group_size: int, device: Cpu) -> tuple[str, ...]:
    """Why torch's CPU int4 kernel cannot take weights of this width and group size on this CPU
    (empty: it can). Per-layer shapes (out_features % 16, in_features a multiple of the group)
    are checked when each layer is built; a layer that does not fit keeps the portable module."""
    reasons = []
    if bits != 4:
        reasons.append(f"the aten int4 kernel takes 4-bit weights, not {bits}-bit")
    if group_size != -1 and (group_size <= 0 or group_size % ATEN_INT4_GROUPS[0]):
        shown = group_size if abs(group_size) < 10**12 else "a huge number"
        reasons.append(f"the aten int4 kernel takes groups of {list(ATEN_INT4_GROUPS)} inputs (or multiples, or -1), not {shown}")
    if not device.features.vector_int4:
        reasons.append("the aten int4 kernel is vectorized for AVX2/AVX-512 only, and this CPU reports neither")
    return tuple(reasons)


def cpu_q4_unfit(bits: int, group_size: int, device: Cpu) -> tuple[str, ...]:
    """Why quantdispatch's native int4 kernel (C, AVX2 + FMA) cannot take these weights here."""
    reasons = [r.replace("the aten int4 kernel", "the native int4 kernel") for r in cpu_int4_unfit(bits, group_size, device)
               if "vectorized" not in r]
    if not (device.features.avx2 and device.features.fma):
        reasons.append("the native int4 kernel needs AVX2 and FMA, and this CPU does not report both")
    return tuple(reasons)


def cpu_4bit_ranked(aten: Candidate, native: Candidate, device: Cpu) -> tuple[Candidate, Candidate]:
    """The two 4-bit CPU kernels, best first for this CPU: torch's int4 kernel where bf16 is native
    (about 9x float32 dense there), the native float32 kernel elsewhere (the aten kernel only
    matches float32 dense on AVX2; the native one reads the codes once and is several times faster)."""
    return (aten, native) if device.features.native_bf16 else (native, aten)


def gpu_or_cpu_dtype(device: AbstractDevice, bits: int = 4) -> tuple[DType, str]:
    """Weight-only integer kernels: float16 on GPUs; on the CPU bfloat16 where it is native and a
    fast kernel takes the width (4 and 8 bits), else float32."""
    if isinstance(device, (Cuda, Mps)):
        return DType.FLOAT16, "GPU kernels compute in float16"
    if isinstance(device, Cpu) and device.features.native_bf16 and bits in (4, 8):
        return DType.BFLOAT16, ("bfloat16: this CPU computes it natively (AVX512-BF16/AMX), and the CPU int4 kernel and "
                                "dense matmuls run fastest with bfloat16 activations; pass dtype=float32 for float32")
    if isinstance(device, Cpu) and device.features.native_bf16:
        return DType.FLOAT32, f"float32 on the CPU: {bits}-bit weights run on the portable kernel, which dequantizes to float32"
    return DType.FLOAT32, "float32 on the CPU: it has no native bfloat16 (no AVX512-BF16 or AMX), where bfloat16 would be emulated"


ACCELERATE: Final = Requirement("accelerate", "1.1")


def bf16_or_cpu_dtype(device: AbstractDevice) -> tuple[DType, str]:
    """Floating-point formats with scales (FP8, FP4, codebooks): bfloat16 on GPUs, as their
    kernels and Transformers compute; float32 on the CPU."""
    if isinstance(device, (Cuda, Mps)):
        return DType.BFLOAT16, "the method's GPU kernels compute in bfloat16"
    return DType.FLOAT32, "float32 on the CPU: weights are dequantized to it"
