"""bitsandbytes: its backends and rules.

Capabilities from bitsandbytes' documentation: the LLM.int8 matmul needs Turing (sm_75), the
4-bit kernels run from Maxwell (sm_50); both have CPU and MPS backends.
"""

from __future__ import annotations

from ..backend import Backend, Candidate, Requirement
from ..configs.bnb import AbstractBnb, Bnb4Bit, Bnb8Bit
from ..dtypes import DType
from ..environment import AbstractDevice, Cuda, Mps
from ..result import Issue, Issues
from ..rules import (
    Selection,
    compute_dtype,
    cross_field_issues,
    declare_backend,
    quantizes_on_load,
    select_backend,
    skip_modules,
)
from ._common import TORCH

__all__ = ["BNB_4BIT", "BNB_8BIT"]

_BNB = Requirement("bitsandbytes", "0.46.1")

BNB_4BIT = declare_backend(Backend(
    name="bitsandbytes-4bit", summary="bitsandbytes Linear4bit (NF4/FP4) kernels",
    requires=(TORCH, _BNB), devices=("cpu", "cuda", "mps"), min_capability=(5, 0), loader="quantdispatch.backends.bnb:load",
))
BNB_8BIT = declare_backend(Backend(
    name="bitsandbytes-8bit", summary="bitsandbytes Linear8bitLt (LLM.int8) kernels",
    requires=(TORCH, _BNB), devices=("cpu", "cuda", "mps"), min_capability=(7, 5), loader="quantdispatch.backends.bnb:load",
))


@select_backend.register(Bnb4Bit, AbstractDevice)
def _bnb4_backends(config: Bnb4Bit, device: AbstractDevice, /) -> Selection:
    return (Candidate(BNB_4BIT),)


@select_backend.register(Bnb8Bit, AbstractDevice)
def _bnb8_backends(config: Bnb8Bit, device: AbstractDevice, /) -> Selection:
    return (Candidate(BNB_8BIT),)


@compute_dtype.register(Bnb4Bit, AbstractDevice)
def _bnb4_dtype(config: Bnb4Bit, device: AbstractDevice, /) -> tuple[DType, str]:
    return config.compute_dtype, "the checkpoint's bnb_4bit_compute_dtype"


@compute_dtype.register(Bnb8Bit, AbstractDevice)
def _bnb8_dtype(config: Bnb8Bit, device: AbstractDevice, /) -> tuple[DType, str]:
    if isinstance(device, (Cuda, Mps)):
        return DType.FLOAT16, "LLM.int8 computes in float16 on GPUs"
    return DType.FLOAT32, "float32 on the CPU"


@skip_modules.register(AbstractBnb)
def _bnb_skips(config: AbstractBnb, /) -> tuple[str, ...] | None:
    return config.skip_modules


@quantizes_on_load.register(AbstractBnb)
def _bnb_on_load(config: AbstractBnb, /) -> bool:
    return True


@cross_field_issues.register(Bnb4Bit)
def _bnb4_rules(config: Bnb4Bit, /) -> Issues:
    if not config.compute_dtype.is_floating_point:
        return (Issue("bnb.bnb_4bit_compute_dtype.not_float", "$.bnb_4bit_compute_dtype",
                      f"4-bit layers compute in a floating-point dtype, not {config.compute_dtype.value}",
                      "use float16, bfloat16 or float32"),)
    return ()
