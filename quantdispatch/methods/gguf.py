"""GGUF: its backend and rules."""

from __future__ import annotations

from typing import Final

from ..backend import Backend, Candidate
from ..codec.gguf import tensor_issues
from ..configs.gguf import Gguf
from ..dtypes import DType
from ..environment import AbstractDevice
from ..gguf.blocks import DEQUANTIZABLE_TYPES
from ..gguf.types import GgmlType
from ..result import Issues
from ..rules import Selection, compute_dtype, cross_field_issues, declare_backend, select_backend
from ..text import quote
from ._common import TORCH

__all__ = ["TORCH_GGUF", "TORCH_GGUF_PACKED", "GGUF_DEQUANT_TYPES"]

TORCH_GGUF = declare_backend(Backend(
    name="torch-gguf", summary="every GGML block dequantized once at load to the dtype (torch), then dense layers",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), loader="quantdispatch.backends.gguf:load_dequantized",
))
TORCH_GGUF_PACKED = declare_backend(Backend(
    name="torch-gguf-packed", summary="GGML blocks kept packed (memory near the file's size), dequantized per call (fused path)",
    requires=(TORCH,), devices=("cpu", "cuda", "mps"), loader="quantdispatch.backends.gguf:load_packed",
))

GGUF_DEQUANT_TYPES: Final[frozenset[GgmlType]] = DEQUANTIZABLE_TYPES
"""GGML types the torch GGUF backend dequantizes (``quantdispatch.gguf.blocks``; the kernels
implement exactly these, a test keeps them equal)."""


@select_backend.register(Gguf, AbstractDevice)
def _gguf_backends(config: Gguf, device: AbstractDevice, /) -> Selection:
    # Refused at plan time, naming the tensors, before a byte of tensor data is read.
    odd = [t for t in config.tensors if t.ggml_type not in DEQUANTIZABLE_TYPES]
    reasons = tuple(f"cannot dequantize tensor {quote(t.name, 60)} of type {t.ggml_type.name}" for t in odd[:5])
    more = (f"… and {len(odd) - 5} more such tensors",) if len(odd) > 5 else ()
    # The mode is the config's loading attribute ``dequantize`` (Transformers' GgufConfig key):
    # both backends are candidates, the one it asks for first.
    modes = (TORCH_GGUF, TORCH_GGUF_PACKED) if config.dequantize else (TORCH_GGUF_PACKED, TORCH_GGUF)
    return tuple(Candidate(b, reasons + more) for b in modes)


@compute_dtype.register(Gguf, AbstractDevice)
def _gguf_dtype(config: Gguf, device: AbstractDevice, /) -> tuple[DType, str]:
    return DType.FLOAT32, "float32, the dtype GGUF weights dequantize to"


@cross_field_issues.register(Gguf)
def _gguf_rules(config: Gguf, /) -> Issues:
    return tensor_issues(config)
