"""Facts shared by several built-in methods' backends."""

from __future__ import annotations

from typing import Final

from ..backend import Requirement
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda, Mps
from ..kernel import ATEN_INT4_GROUPS as ATEN_INT4_GROUPS
from ..kernel import TORCH as TORCH
from ..kernel import TORCH_INT4_CPU as TORCH_INT4_CPU
from ..kernel import cpu_int4_unfit as cpu_int4_unfit
from ..kernel import cpu_q4_unfit as cpu_q4_unfit

__all__ = ["TORCH", "TORCH_INT4_CPU", "GPTQMODEL", "GPTQMODEL_TORCH_LINEAR", "ACCELERATE", "MARLIN_GROUPS", "ATEN_INT4_GROUPS", "marlin_unfit",
           "cpu_int4_unfit", "cpu_q4_unfit", "gpu_or_cpu_dtype", "bf16_or_cpu_dtype"]

GPTQMODEL: Final = Requirement("gptqmodel", "1.4.3")
GPTQMODEL_TORCH_LINEAR: Final = Requirement("gptqmodel", "7.6")
"""GPTQModel whose ``TorchLinear`` (``gptqmodel/nn_modules/qlinear/torch.py``) our loader drives:
its constructor, ``validate``, ``qzero_format`` and ``post_init`` as read in 7.6.0."""

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
    """Floating-point formats with scales (FP8, FP4, codebooks, compressed-tensors): bfloat16 on
    GPUs, as their kernels and Transformers compute; on the CPU bfloat16 where it is native
    (AVX512-BF16 or AMX), else float32.

    On a CPU with native bfloat16 the dense parts of the model (embeddings, head, norms) stay in the
    checkpoint's bfloat16 instead of doubling to float32, which keeps a kept-packed load within
    ~1.15x of the checkpoint's bytes, and the kernels read bfloat16 activations (measured faster on
    an AVX512-BF16 EPYC, ``benchmarks/bench_formats.py``); without it bfloat16 would be emulated."""
    if isinstance(device, (Cuda, Mps)):
        return DType.BFLOAT16, "the method's GPU kernels compute in bfloat16"
    if isinstance(device, Cpu) and device.features.native_bf16:
        return DType.BFLOAT16, ("bfloat16: this CPU computes it natively (AVX512-BF16/AMX); the dense embeddings and head stay in "
                                "the checkpoint's bfloat16 and the kernels read bfloat16 activations; pass dtype=float32 for float32")
    return DType.FLOAT32, "float32 on the CPU: it has no native bfloat16 (no AVX512-BF16 or AMX), where bfloat16 would be emulated"
