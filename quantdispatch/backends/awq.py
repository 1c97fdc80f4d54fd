"""Loader of the ``torch-awq`` backend: quantdispatch's portable AWQ module (GEMM, GEMV, GEMV_FAST)."""

from __future__ import annotations

from torch import nn

from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from ..kernels.modules import AwqLinear
from ..loading.request import LoadRequest
from ..loading.stream import load_streamed
from ..result import Err, Issue, Issues, Result

__all__ = ["load"]


def load(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Build the model with an ``AwqLinear`` for every layer the checkpoint stores packed."""
    config = request.plan.config
    if not isinstance(config, (AwqGemm, AwqGemv, AwqGemvFast)):
        what = type(config).__name__
        return Err((Issue("load.awq.packing", "$", f"the portable AWQ module reads GEMM, GEMV and GEMV_FAST packings, not {what}"),))
    awq: AbstractAwq = config

    def make(name: str, linear: nn.Linear) -> nn.Module:
        return AwqLinear(awq, linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                         dequantize_at_load=request.dequantize_at_load)

    return load_streamed(request, make)
