"""What every packing shares: the shape and dtype a checkpoint tensor must have."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

import torch

from ..layouts.base import TensorDecl, Unpackable

__all__ = ["TensorSpec", "FLOATS", "ceil_div", "TORCH_DTYPES", "specs_of"]


FLOATS: Final = (torch.float16, torch.bfloat16, torch.float32)
"""Dtypes accepted for scales and biases: the kernels read any of them exactly (via float32)."""


class TensorSpec(NamedTuple):
    """Shape and dtype one checkpoint tensor of a quantized linear layer must have.

    ``dtype`` is what the reference tools write and what a module allocates; ``accepted`` lists
    every dtype a checkpoint may use instead (GPTQModel writes AWQ scales and biases in the
    model's dtype, bf16 on a CPU). Empty ``accepted`` means ``dtype`` only.

    >>> spec = TensorSpec((8, 4), torch.float16, FLOATS)
    >>> spec.accepts(torch.bfloat16), TensorSpec((8, 4), torch.int32).accepts(torch.int64)
    (True, False)
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    accepted: tuple[torch.dtype, ...] = ()

    def accepts(self, dtype: torch.dtype) -> bool:
        """Whether a checkpoint tensor of this dtype can be read."""
        return dtype == self.dtype or dtype in self.accepted


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers, without floats."""
    return -(-a // b)


TORCH_DTYPES: Final[Mapping[str, torch.dtype]] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu,
}
"""Each safetensors dtype code as a torch dtype."""


def specs_of(declared: Mapping[str, TensorDecl] | Unpackable) -> dict[str, TensorSpec]:
    """A layout's tensor declarations as ``TensorSpec``s.

    Raises:
        ValueError: The layout cannot store this shape (the ``Unpackable``'s message).
    """
    if isinstance(declared, Unpackable):
        raise ValueError(declared.message)
    return {name: TensorSpec(d.shape, TORCH_DTYPES[d.dtype], tuple(TORCH_DTYPES[a] for a in d.accepted)) for name, d in declared.items()}
