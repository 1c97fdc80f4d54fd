"""GGUF: its backend and rules."""

from __future__ import annotations

from typing import Final

from ..backend import Backend, Candidate
from ..codec.gguf import tensor_issues
from ..configs.gguf import Gguf
from ..dtypes import DType
from ..environment import AbstractDevice
from ..gguf.types import GgmlType
from ..result import Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend
from ._common import TORCH

__all__ = ["TORCH_GGUF", "GGUF_DEQUANT_TYPES"]

TORCH_GGUF = declare_backend(Backend(
    name="torch-gguf", summary="quantdispatch's GGML block dequantization (torch), then a dense matmul",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"),
))

GGUF_DEQUANT_TYPES: Final = frozenset(GgmlType) - {GgmlType.Q8_1, GgmlType.Q8_K, GgmlType.I8, GgmlType.I16,
                                                    GgmlType.I32, GgmlType.I64, GgmlType.F64}
"""GGML types the torch GGUF backend dequantizes (every stored block type; not the integer and
dot-product-only types, which model weights never use)."""


@select_backend.register(Gguf, AbstractDevice)
def _gguf_backends(config: Gguf, device: AbstractDevice, /) -> Selection:
    odd = sorted({t.ggml_type.name for t in config.tensors if t.ggml_type not in GGUF_DEQUANT_TYPES})
    return (Candidate(TORCH_GGUF, tuple(f"cannot dequantize {name} tensors" for name in odd)),)


@compute_dtype.register(Gguf, AbstractDevice)
def _gguf_dtype(config: Gguf, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.FLOAT32, "float32, the dtype GGUF weights dequantize to"


@cross_field_issues.register(Gguf)
def _gguf_rules(config: Gguf, /) -> Issues:
    return tensor_issues(config)
