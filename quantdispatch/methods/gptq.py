"""GPTQ: its backends and rules.

Marlin (gptqmodel's kernel) needs Ampere (sm_80), symmetric 4/8-bit weights and a group size it
tiles; the portable torch kernel runs everywhere.
"""

from __future__ import annotations

from ..backend import Backend, Candidate
from ..configs.gptq import AbstractGptq
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda
from ..rules import Selection, compute_dtype, declare_backend, select_backend
from ._common import GPTQMODEL, TORCH, TORCH_INT4_CPU, cpu_4bit_ranked, cpu_int4_unfit, cpu_q4_unfit, gpu_or_cpu_dtype, marlin_unfit

__all__ = ["TORCH_GPTQ", "GPTQMODEL_MARLIN", "CPU_INT4_GPTQ", "CPU_Q4_GPTQ", "CPU_DENSE_GPTQ"]

TORCH_GPTQ = declare_backend(Backend(
    name="torch-gptq", summary="quantdispatch's portable torch kernel: unpack int32 words, dequantize per group, matmul",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0), loader="quantdispatch.backends.gptq:load",
))
GPTQMODEL_MARLIN = declare_backend(Backend(
    name="gptqmodel-marlin", summary="gptqmodel's Marlin kernel (fp16 activations, int4/int8 weights)",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16, DType.BFLOAT16),
))

CPU_INT4_GPTQ = declare_backend(Backend(
    name="cpu-int4-gptq", summary="torch's CPU int4 kernel on bf16 activations: weights repacked once at load, act-order "
    "folded into the packing (layers it cannot take keep the portable kernel)",
    requires=(TORCH_INT4_CPU,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32),
    loader="quantdispatch.backends.cpu_int4:load_gptq",
))
CPU_Q4_GPTQ = declare_backend(Backend(
    name="cpu-q4-gptq", summary="quantdispatch's native int4 kernel (C, AVX2+FMA, float32 accumulation): codes read once "
    "per decode step, blocks dequantized in cache for prefill; repacked once at load",
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32),
    loader="quantdispatch.backends.cpu_int4:load_gptq_native",
))
CPU_DENSE_GPTQ = declare_backend(Backend(
    name="cpu-dense-gptq", summary="8-bit GPTQ dequantized once at load from its group scales into a dense weight "
    "(one rounding to the compute dtype); a bfloat16 matmul per call",
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32),
    loader="quantdispatch.backends.cpu_int4:load_gptq_dense",
))


@select_backend.register(AbstractGptq, Cpu)
def _gptq_cpu(config: AbstractGptq, device: Cpu, /) -> Selection:
    dense_unfit = () if config.bits == 8 else (f"keeps 8-bit weights dense; {config.bits}-bit ones stay packed",)
    fast = cpu_4bit_ranked(Candidate(CPU_INT4_GPTQ, cpu_int4_unfit(config.bits, config.group_size, device)),
                           Candidate(CPU_Q4_GPTQ, cpu_q4_unfit(config.bits, config.group_size, device)), device)
    return (*fast, Candidate(CPU_DENSE_GPTQ, dense_unfit), Candidate(TORCH_GPTQ))


@select_backend.register(AbstractGptq, Cuda)
def _gptq_cuda(config: AbstractGptq, device: Cuda, /) -> Selection:
    return (Candidate(GPTQMODEL_MARLIN, marlin_unfit(config.bits, config.sym, config.group_size)), Candidate(TORCH_GPTQ))


@select_backend.register(AbstractGptq, AbstractDevice)
def _gptq_any(config: AbstractGptq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_GPTQ),)


@compute_dtype.register(AbstractGptq, AbstractDevice)
def _gptq_dtype(config: AbstractGptq, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device, config.bits)
