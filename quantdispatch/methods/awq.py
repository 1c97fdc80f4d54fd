"""AWQ: its backends and rules.

gptqmodel's AWQ CUDA kernels need Turing (sm_75), as vLLM also states for AWQ; its Marlin kernel
needs Ampere (sm_80). Marlin-packed checkpoints are tiled for that kernel alone.
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Refusal
from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast, AwqLlm, AwqMarlin
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend, skip_modules
from ._common import GPTQMODEL, TORCH, TORCH_INT4_CPU, cpu_4bit_ranked, cpu_int4_unfit, cpu_q4_unfit, gpu_or_cpu_dtype, marlin_unfit

__all__ = ["TORCH_AWQ", "AWQ_CUDA", "AWQ_MARLIN", "CPU_INT4_AWQ", "CPU_Q4_AWQ"]

TORCH_AWQ = declare_backend(Backend(
    name="torch-awq", summary="quantdispatch's portable torch kernel for AWQ packings",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0), loader="quantdispatch.backends.awq:load",
))
AWQ_CUDA = declare_backend(Backend(
    name="gptqmodel-awq", summary="gptqmodel's AWQ GEMM/GEMV CUDA kernels",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(7, 5), dtypes=(DType.FLOAT16,),
))
AWQ_MARLIN = declare_backend(Backend(
    name="gptqmodel-awq-marlin", summary="gptqmodel's Marlin kernel for AWQ weights",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16,),
))

CPU_INT4_AWQ = declare_backend(Backend(
    name="cpu-int4-awq", summary="torch's CPU int4 kernel on bf16 activations: GEMM/GEMV/GEMV_FAST weights repacked once "
    "at load (layers it cannot take keep the portable kernel)",
    requires=(TORCH_INT4_CPU,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32),
    loader="quantdispatch.backends.cpu_int4:load_awq",
))
CPU_Q4_AWQ = declare_backend(Backend(
    name="cpu-q4-awq", summary="quantdispatch's native int4 kernel (C, AVX2+FMA, float32 accumulation) for "
    "GEMM/GEMV/GEMV_FAST weights, repacked once at load",
    requires=(TORCH,), devices=("cpu",), dtypes=(DType.BFLOAT16, DType.FLOAT32),
    loader="quantdispatch.backends.cpu_int4:load_awq_native",
))


@select_backend.register(AwqMarlin, Cuda)
def _marlin_cuda(config: AwqMarlin, device: Cuda, /) -> Selection:
    return (Candidate(AWQ_MARLIN, marlin_unfit(config.bits, True, config.group_size)),)


@select_backend.register(AwqMarlin, AbstractDevice)
def _marlin_elsewhere(config: AwqMarlin, device: AbstractDevice, /) -> Selection:
    return Refusal("awq.marlin.needs_cuda", "Marlin-packed AWQ weights are tiled for the Marlin CUDA kernel; no portable kernel reads them",
                   "load on a CUDA GPU with compute capability 8.0+, or use a GEMM-packed copy of the model")


@select_backend.register(AbstractAwq, Cuda)
def _awq_cuda(config: AbstractAwq, device: Cuda, /) -> Selection:
    if isinstance(config, AwqLlm):
        return (Candidate(TORCH_AWQ),)
    # AWQ Marlin handles zero points itself, so only the width and group size matter.
    return (Candidate(AWQ_MARLIN, marlin_unfit(config.bits, True, config.group_size)), Candidate(AWQ_CUDA), Candidate(TORCH_AWQ))


@select_backend.register(AwqMarlin, Cpu)
def _marlin_cpu(config: AwqMarlin, device: Cpu, /) -> Selection:
    return _marlin_elsewhere(config, device)


@select_backend.register(AbstractAwq, Cpu)
def _awq_cpu(config: AbstractAwq, device: Cpu, /) -> Selection:
    readable = isinstance(config, (AwqGemm, AwqGemv, AwqGemvFast))
    packing = () if readable else (f"reads GEMM, GEMV and GEMV_FAST packings, not {type(config).__name__}",)
    fast = cpu_4bit_ranked(Candidate(CPU_INT4_AWQ, packing + cpu_int4_unfit(config.bits, config.group_size, device)),
                           Candidate(CPU_Q4_AWQ, packing + cpu_q4_unfit(config.bits, config.group_size, device)), device)
    return (*fast, Candidate(TORCH_AWQ))


@select_backend.register(AbstractAwq, AbstractDevice)
def _awq_any(config: AbstractAwq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_AWQ),)


@compute_dtype.register(AbstractAwq, AbstractDevice)
def _awq_dtype(config: AbstractAwq, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device, config.bits)


@cross_field_issues.register(AbstractAwq)
def _awq_rules(config: AbstractAwq, /) -> Issues:
    # Transformers 4's legacy spelling: backend "llm-awq" names the llm-awq packing itself.
    if isinstance(config.backend, str) and config.backend.lower() == "llm-awq" and not isinstance(config, AwqLlm):
        return (Issue("awq.backend.conflict", "$.backend", f"backend 'llm-awq' means the llm-awq packing, but this is {type(config).__name__}",
                      "use AwqLlm for llm-awq checkpoints, or another backend name"),)
    return ()


@skip_modules.register(AbstractAwq)
def _awq_skips(config: AbstractAwq, /) -> tuple[str, ...] | None:
    return config.modules_to_not_convert
