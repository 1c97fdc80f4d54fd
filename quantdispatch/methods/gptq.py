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
from ..kernel import declare_renamed, kernel_candidates
from ..layouts.gptq import gptq_layout
from ..result import Issue, Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend
from ..text import quote
from ._common import GPTQMODEL, GPTQMODEL_TORCH_LINEAR, TORCH, gpu_or_cpu_dtype, marlin_unfit

__all__ = ["GPTQMODEL_MARLIN", "GPTQMODEL_TORCH", "TORCH_LINEAR_BITS", "TORCH_LINEAR_GROUPS", "gptqmodel_torch_unfit"]

# The names GPTQ's kernels had while each carried its method; they keep working (the plan notes the new name).
for _old, _new in (("torch-gptq", "torch-packed"), ("cpu-int4-gptq", "cpu-int4"), ("cpu-q4-gptq", "cpu-q4"), ("cpu-dense-gptq", "cpu-dense")):
    declare_renamed(_old, _new, AbstractGptq)

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
    # GPTQModel's module after the portable one: measured slower at every width, batch and dtype it takes.
    return (*kernel_candidates(gptq_layout(config), device), Candidate(GPTQMODEL_TORCH, gptqmodel_torch_unfit(config)))


@select_backend.register(AbstractGptq, Cuda)
def _gptq_cuda(config: AbstractGptq, device: Cuda, /) -> Selection:
    # gptqmodel-torch unmeasured on a GPU: after the portable kernel, for users who ask for it by name.
    return (Candidate(GPTQMODEL_MARLIN, marlin_unfit(config.bits, config.sym, config.group_size)),
            *kernel_candidates(gptq_layout(config), device), Candidate(GPTQMODEL_TORCH, gptqmodel_torch_unfit(config)))


@select_backend.register(AbstractGptq, AbstractDevice)
def _gptq_any(config: AbstractGptq, device: AbstractDevice, /) -> Selection:
    return kernel_candidates(gptq_layout(config), device)


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
