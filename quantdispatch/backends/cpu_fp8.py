"""The ``prepare`` step of ``cpu-e4m3``: one loaded portable FP8 layer to an ``Fp8Linear`` on the
native kernel, or ``None`` to keep the portable module (no compiler here, or a layer whose weights
the fused float32 sum cannot reproduce: compressed-tensors' weights rounded to bfloat16 scales).
The kernel reads ``Fp8Blocks``, which the layout makes (``layout.forms["fp8"]``)."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.fp8_native import Fp8Blocks, Fp8Linear, native_fp8
from ..layouts.base import AbstractLayout

__all__ = ["prepare_fp8"]


def prepare_fp8(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``Fp8Linear`` for one loaded FP8 layer, or ``None``."""
    convert = type(layout).forms.get("fp8")
    if convert is None or native_fp8() is None:
        return None
    with torch.no_grad():
        weights = convert.resolve()(module)
        if not isinstance(weights, Fp8Blocks):
            return None  # the layout's reason this layer does not convert
        bias: object = getattr(module, "bias", None)
        return Fp8Linear(weights, bias if isinstance(bias, torch.Tensor) else None, dtype)
