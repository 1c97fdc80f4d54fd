"""AWQ: its backends and rules.

gptqmodel's AWQ CUDA kernels need Turing (sm_75), as vLLM also states for AWQ; its Marlin kernel
needs Ampere (sm_80). Marlin-packed checkpoints are tiled for that kernel alone.
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Refusal
from ..configs.awq import AbstractAwq, AwqLlm, AwqMarlin
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda
from ..kernel import TORCH_PACKED, declare_renamed, kernel_candidates
from ..layouts.awq import awq_layout
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend, skip_modules
from ._common import GPTQMODEL, TORCH, gpu_or_cpu_dtype, marlin_unfit

__all__ = ["AWQ_CUDA", "AWQ_MARLIN"]

# The names AWQ's kernels had while each carried its method; they keep working (the plan notes the new name).
for _old, _new in (("torch-awq", "torch-packed"), ("cpu-int4-awq", "cpu-int4"), ("cpu-q4-awq", "cpu-q4")):
    declare_renamed(_old, _new, AbstractAwq)

AWQ_CUDA = declare_backend(Backend(
    name="gptqmodel-awq", summary="gptqmodel's AWQ GEMM/GEMV CUDA kernels",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(7, 5), dtypes=(DType.FLOAT16,),
))
AWQ_MARLIN = declare_backend(Backend(
    name="gptqmodel-awq-marlin", summary="gptqmodel's Marlin kernel for AWQ weights",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16,),
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
        return _portable(config, device)
    # AWQ Marlin handles zero points itself, so only the width and group size matter.
    return (Candidate(AWQ_MARLIN, marlin_unfit(config.bits, True, config.group_size)), Candidate(AWQ_CUDA), *_portable(config, device))


@select_backend.register(AwqMarlin, Cpu)
def _marlin_cpu(config: AwqMarlin, device: Cpu, /) -> Selection:
    return _marlin_elsewhere(config, device)


@select_backend.register(AbstractAwq, AbstractDevice)
def _awq_any(config: AbstractAwq, device: AbstractDevice, /) -> Selection:
    return _portable(config, device)


def _portable(config: AbstractAwq, device: AbstractDevice) -> tuple[Candidate, ...]:
    """The kernels serving the config's packing on this device; for a packing no portable module
    reads (llm-awq), the portable kernel with the reason."""
    layout = awq_layout(config)
    if layout is None:
        return (Candidate(TORCH_PACKED.backend, (f"reads GEMM, GEMV and GEMV_FAST packings, not {type(config).__name__}",)),)
    return kernel_candidates(layout, device)


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
