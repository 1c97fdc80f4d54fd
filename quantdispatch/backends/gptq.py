"""Loader of the ``torch-gptq`` backend: quantdispatch's portable GPTQ module in every packed layer."""

from __future__ import annotations

from torch import nn

from ..configs.gptq import AbstractGptq
from ..kernels.modules import GptqLinear
from ..loading.request import LoadRequest
from ..loading.stream import load_streamed
from ..result import Err, Issue, Issues, Result

__all__ = ["load"]


def load(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Build the model with a ``GptqLinear`` for every layer the checkpoint stores packed."""
    config = request.plan.config
    if not isinstance(config, AbstractGptq):
        return Err((Issue("load.backend.mismatch", "$", f"torch-gptq cannot load {type(config).__name__}"),))

    def make(name: str, linear: nn.Linear) -> nn.Module:
        return GptqLinear(config, linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                          dequantize_at_load=request.dequantize_at_load)

    return load_streamed(request, make)
