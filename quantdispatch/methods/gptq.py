"""GPTQ: its backends and rules.

Marlin (gptqmodel's kernel) needs Ampere (sm_80), symmetric 4/8-bit weights and a group size it
tiles; the portable torch kernel runs everywhere.
"""

from __future__ import annotations

from ..backend import Backend, Candidate
from ..configs.gptq import AbstractGptq
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda
from ..rules import Selection, compute_dtype, declare_backend, select_backend
from ._common import GPTQMODEL, TORCH, gpu_or_cpu_dtype, marlin_unfit

__all__ = ["TORCH_GPTQ", "GPTQMODEL_MARLIN"]

TORCH_GPTQ = declare_backend(Backend(
    name="torch-gptq", summary="quantdispatch's portable torch kernel: unpack int32 words, dequantize per group, matmul",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0), loader="quantdispatch.backends.gptq:load",
))
GPTQMODEL_MARLIN = declare_backend(Backend(
    name="gptqmodel-marlin", summary="gptqmodel's Marlin kernel (fp16 activations, int4/int8 weights)",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16, DType.BFLOAT16),
))


@select_backend.register(AbstractGptq, Cuda)
def _gptq_cuda(config: AbstractGptq, device: Cuda, /) -> Selection:
    return (Candidate(GPTQMODEL_MARLIN, marlin_unfit(config.bits, config.sym, config.group_size)), Candidate(TORCH_GPTQ))


@select_backend.register(AbstractGptq, AbstractDevice)
def _gptq_any(config: AbstractGptq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_GPTQ),)


@compute_dtype.register(AbstractGptq, AbstractDevice)
def _gptq_dtype(config: AbstractGptq, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device)
