"""What every packing shares: the shape and dtype a checkpoint tensor must have."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TensorSpec", "ceil_div"]


class TensorSpec(NamedTuple):
    """Shape and dtype one checkpoint tensor of a quantized linear layer must have.

    >>> TensorSpec((8, 4), torch.int32).shape
    (8, 4)
    """

    shape: tuple[int, ...]
    dtype: torch.dtype


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers, without floats."""
    return -(-a // b)
