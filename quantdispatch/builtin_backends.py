"""Descriptors of the built-in backends: the one place that says what each needs.

Capabilities come from the backends' own documentation: bitsandbytes' LLM.int8 matmul needs
Turing (sm_75) while its 4-bit kernels run from Maxwell (sm_50); Marlin kernels need Ampere
(sm_80); gptqmodel's AWQ CUDA kernels need Turing, as vLLM also states for AWQ.
"""

from __future__ import annotations

from typing import Final

from .backend import Backend, Requirement
from .dtypes import DType

__all__ = [
    "BNB_4BIT", "BNB_8BIT", "TORCH_GPTQ", "GPTQMODEL_MARLIN", "TORCH_AWQ", "AWQ_CUDA", "AWQ_MARLIN",
    "TORCH_GGUF", "BUILTIN_BACKENDS",
]

_TORCH = Requirement("torch", "2.4")
_BNB = Requirement("bitsandbytes", "0.46.1")
_GPTQMODEL = Requirement("gptqmodel", "1.4.3")
_HALF: Final = (DType.FLOAT16, DType.FLOAT32)

BNB_4BIT = Backend(
    name="bitsandbytes-4bit", summary="bitsandbytes Linear4bit (NF4/FP4) kernels",
    requires=(_TORCH, _BNB), devices=("cpu", "cuda", "mps"), min_capability=(5, 0),
)
BNB_8BIT = Backend(
    name="bitsandbytes-8bit", summary="bitsandbytes Linear8bitLt (LLM.int8) kernels",
    requires=(_TORCH, _BNB), devices=("cpu", "cuda", "mps"), min_capability=(7, 5),
)
TORCH_GPTQ = Backend(
    name="torch-gptq", summary="quantdispatch's portable torch kernel: unpack int32 words, dequantize per group, matmul",
    requires=(_TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0),
)
GPTQMODEL_MARLIN = Backend(
    name="gptqmodel-marlin", summary="gptqmodel's Marlin kernel (fp16 activations, int4/int8 weights)",
    requires=(_TORCH, _GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=(DType.FLOAT16, DType.BFLOAT16),
)
TORCH_AWQ = Backend(
    name="torch-awq", summary="quantdispatch's portable torch kernel for AWQ packings",
    requires=(_TORCH,), devices=("cpu", "cuda", "mps"), min_capability=(6, 0),
)
AWQ_CUDA = Backend(
    name="gptqmodel-awq", summary="gptqmodel's AWQ GEMM/GEMV CUDA kernels",
    requires=(_TORCH, _GPTQMODEL), devices=("cuda",), min_capability=(7, 5), dtypes=(DType.FLOAT16,),
)
AWQ_MARLIN = Backend(
    name="gptqmodel-awq-marlin", summary="gptqmodel's Marlin kernel for AWQ weights",
    requires=(_TORCH, _GPTQMODEL), devices=("cuda",), min_capability=(8, 0), dtypes=_HALF[:1],
)
TORCH_GGUF = Backend(
    name="torch-gguf", summary="quantdispatch's GGML block dequantization (torch), then a dense matmul",
    requires=(_TORCH,), devices=("cpu", "cuda", "mps"),
)

BUILTIN_BACKENDS: Final = (BNB_4BIT, BNB_8BIT, TORCH_GPTQ, GPTQMODEL_MARLIN, TORCH_AWQ, AWQ_CUDA, AWQ_MARLIN, TORCH_GGUF)
