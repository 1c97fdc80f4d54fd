"""GPTQ: its backends and rules.

Marlin (gptqmodel's kernel) needs Ampere (sm_80), symmetric 4/8-bit weights and a group size it
tiles; the portable torch kernel runs everywhere. GPTQModel's own torch module (``gptqmodel-torch``)
is offered where GPTQModel is installed, ranked by measured speed: below the portable kernel
(``benchmarks/bench_gptq_forward.py``: several times slower per call on a CPU).
"""

from __future__ import annotations

from typing import Final

from ..backend import Backend, Candidate
from ..configs.gptq import AbstractGptq
from ..dtypes import DType
from ..environment import AbstractDevice, Cpu, Cuda
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend
from ..text import quote
from ._common import (
    GPTQMODEL,
    GPTQMODEL_TORCH_LINEAR,
    TORCH,
    TORCH_INT4_CPU,
    cpu_4bit_ranked,
    cpu_int4_unfit,
    cpu_q4_unfit,
    gpu_or_cpu_dtype,
    marlin_unfit,
)

__all__ = ["TORCH_GPTQ", "GPTQMODEL_MARLIN", "GPTQMODEL_TORCH", "CPU_INT4_GPTQ", "CPU_Q4_GPTQ", "CPU_DENSE_GPTQ",
           "TORCH_LINEAR_BITS", "TORCH_LINEAR_GROUPS", "gptqmodel_torch_unfit"]

TORCH_GPTQ = declare_backend(Backend(
    name="torch-gptq", summary="quantdispatch's portable torch kernel: unpack int32 words, dequantize per group, matmul",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0), loader="quantdispatch.backends.gptq:load",
))
GPTQMODEL_MARLIN = declare_backend(Backend(
    name="gptqmodel-marlin", summary="gptqmodel's Marlin kernel (fp16 activations, int4/int8 weights)",
    requires=(TORCH, GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16, DType.BFLOAT16),
))
# GPTQModel's TorchLinear declares what it takes as class attributes (gptqmodel 7.6.0,
# gptqmodel/nn_modules/qlinear/torch.py) and checks them in GroupedQuantLinear._validate and
# BaseQuantLinear._validate_shared (gptqmodel/nn_modules/qlinear/__init__.py):
#   SUPPORTS_BITS = [2, 3, 4, 5, 6, 7, 8] (5-7 only in its planar gptq_p format, which no config here is)
#   SUPPORTS_GROUP_SIZE = [-1, 16, 32, 64, 128, 256, 512, 1024] (or a layer's whole in_features)
#   SUPPORTS_DESC_ACT = [True, False], SUPPORTS_SYM = [True, False]: act-order and asymmetric weights are fine
#   SUPPORTS_DTYPES = [float16, bfloat16]: the compute dtypes below; it refuses float32
#   SUPPORTS_PACK_DTYPES = [int8, int16, int32]: GPTQ checkpoints read here pack int32
#   REQUIRES_FORMAT_V2 = True: the loader converts v1 zero points (kernels.gptq.gptq_v2_qzeros)
#   SUPPORTS_DEVICES = [DEVICE.ALL]: any torch device (no compiled extension); we offer CPU and CUDA
TORCH_LINEAR_BITS: Final = (2, 3, 4, 8)
"""The GPTQ widths GPTQModel's ``TorchLinear`` takes that a GPTQ config can have."""
TORCH_LINEAR_GROUPS: Final = (-1, 16, 32, 64, 128, 256, 512, 1024)
"""``TorchLinear.SUPPORTS_GROUP_SIZE``."""

GPTQMODEL_TORCH = declare_backend(Backend(
    name="gptqmodel-torch", summary="GPTQModel's own torch module (TorchLinear, eager): the whole weight dequantized "
    "in the scales' dtype per call, then a float16/bfloat16 matmul",
    requires=(TORCH, GPTQMODEL_TORCH_LINEAR), devices=("cpu", "cuda"), dtypes=(DType.FLOAT16, DType.BFLOAT16),
    loader="quantdispatch.backends.gptqmodel:load_torch",
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


def gptqmodel_torch_unfit(config: AbstractGptq) -> tuple[str, ...]:
    """Why GPTQModel's ``TorchLinear`` cannot take this config (empty: it can). A layer it still
    refuses (its ``validate`` is asked per layer at load) keeps the portable module.

    >>> from quantdispatch.configs import Gptq
    >>> gptqmodel_torch_unfit(Gptq(bits=4, group_size=48))
    ("GPTQModel's TorchLinear takes group_size in [-1, 16, 32, 64, 128, 256, 512, 1024], not 48",)
    """
    reasons = []
    if config.bits not in TORCH_LINEAR_BITS:
        reasons.append(f"GPTQModel's TorchLinear takes {list(TORCH_LINEAR_BITS)}-bit GPTQ weights, not {config.bits}-bit")
    if config.group_size not in TORCH_LINEAR_GROUPS:
        shown = config.group_size if abs(config.group_size) < 10**12 else "a huge number"
        reasons.append(f"GPTQModel's TorchLinear takes group_size in {list(TORCH_LINEAR_GROUPS)}, not {shown}")
    return tuple(reasons)


@select_backend.register(AbstractGptq, Cpu)
def _gptq_cpu(config: AbstractGptq, device: Cpu, /) -> Selection:
    dense_unfit = () if config.bits == 8 else (f"keeps 8-bit weights dense; {config.bits}-bit ones stay packed",)
    fast = cpu_4bit_ranked(Candidate(CPU_INT4_GPTQ, cpu_int4_unfit(config.bits, config.group_size, device)),
                           Candidate(CPU_Q4_GPTQ, cpu_q4_unfit(config.bits, config.group_size, device)), device)
    # GPTQModel's module after the portable one: measured slower at every width, batch and dtype it takes.
    return (*fast, Candidate(CPU_DENSE_GPTQ, dense_unfit), Candidate(TORCH_GPTQ), Candidate(GPTQMODEL_TORCH, gptqmodel_torch_unfit(config)))


@select_backend.register(AbstractGptq, Cuda)
def _gptq_cuda(config: AbstractGptq, device: Cuda, /) -> Selection:
    # gptqmodel-torch unmeasured on a GPU: after the portable kernel, for users who ask for it by name.
    return (Candidate(GPTQMODEL_MARLIN, marlin_unfit(config.bits, config.sym, config.group_size)), Candidate(TORCH_GPTQ),
            Candidate(GPTQMODEL_TORCH, gptqmodel_torch_unfit(config)))


@select_backend.register(AbstractGptq, AbstractDevice)
def _gptq_any(config: AbstractGptq, device: AbstractDevice, /) -> Selection:
    return (Candidate(TORCH_GPTQ),)


@compute_dtype.register(AbstractGptq, AbstractDevice)
def _gptq_dtype(config: AbstractGptq, device: AbstractDevice, /) -> tuple[DType, str]:
    return gpu_or_cpu_dtype(device, config.bits)


@cross_field_issues.register(AbstractGptq)
def _gptq_rules(config: AbstractGptq, /) -> Issues:
    # GPTQModel's ``pack_dtype`` (kept in extras): the word its codes are packed into. It writes
    # "int32" for GPTQ (gptqmodel/quantization/config.py), the layout AutoGPTQ and Transformers
    # use; int8/int16/int64 words store the same bit stream at another tensor width, which no
    # loader here reads. Refused once, at the config, rather than as a dtype issue per tensor.
    value = config.extras.get("pack_dtype")
    if value is None or value in ("int32", "torch.int32"):
        return ()
    return (Issue("gptq.pack_dtype.not_allowed", "$.pack_dtype", f"pack_dtype {quote(value)}: only int32 words are read",
                  "re-export the checkpoint with GPTQModel's default pack_dtype int32"),)
