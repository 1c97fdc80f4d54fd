"""What every packing shares: the shape and dtype a checkpoint tensor must have."""

from __future__ import annotations

from typing import Final, NamedTuple

import torch

__all__ = ["TensorSpec", "FLOATS", "ceil_div"]


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
