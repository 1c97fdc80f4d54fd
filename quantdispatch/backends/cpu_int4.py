"""Loaders of the CPU backends: ``cpu-int4-gptq``, ``cpu-int4-awq`` (torch's int4 kernel) and
``cpu-dense-gptq`` (8-bit GPTQ as a dense weight).

Each streams the checkpoint into the portable modules as ``torch-gptq``/``torch-awq`` do, then
(``post_load``) replaces them one layer at a time: the portable layer's packed buffers become the
kernel's, and are dropped before the next layer is repacked, so memory never holds more than one
layer twice. A layer whose shape the int4 kernel cannot take (``kernels.int4.int4_unfit``) keeps
its portable module, which computes the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from ..configs.gptq import AbstractGptq
from ..kernels.int4 import Int4Linear, int4_from_awq, int4_from_gptq, int4_unfit
from ..kernels.modules import AwqLinear, GptqLinear
from ..loading.request import LoadRequest
from ..loading.stream import load_streamed
from ..result import Err, Issue, Issues, Result

__all__ = ["load_gptq", "load_awq", "load_gptq_dense", "repack_int4", "densify"]


def _replace_each(model: nn.Module, kind: type[nn.Module], build: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace every module of type ``kind`` by ``build(module)`` (``None``: keep it); returns how
    many were replaced. Only names are held across the loop, so each old module is freed at once."""
    names = [n for n, m in model.named_modules() if isinstance(m, kind)]
    done = 0
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        built = build(parent.get_submodule(child))
        if built is not None:
            setattr(parent, child, built)
            done += 1
    return done


def repack_int4(model: nn.Module, dtype: torch.dtype) -> int:
    """Swap each loaded ``GptqLinear`` (4-bit) and ``AwqLinear`` that the int4 kernel can take for an
    ``Int4Linear`` (its bias in ``dtype``, the model's); returns the number swapped."""
    def gptq(module: nn.Module) -> nn.Module | None:
        assert isinstance(module, GptqLinear)
        if module.bits != 4 or int4_unfit(module.in_features, module.out_features, module.group_size) is not None:
            return None
        weights = int4_from_gptq(module)
        return None if isinstance(weights, str) else Int4Linear(weights, module.bias, dtype)

    def awq(module: nn.Module) -> nn.Module | None:
        assert isinstance(module, AwqLinear)
        if int4_unfit(module.in_features, module.out_features, module.group_size) is not None:
            return None
        return Int4Linear(int4_from_awq(module), module.bias, dtype)

    with torch.no_grad():
        return _replace_each(model, GptqLinear, gptq) + _replace_each(model, AwqLinear, awq)


def densify(model: nn.Module, dtype: torch.dtype) -> int:
    """Swap each loaded ``GptqLinear`` for an ``nn.Linear`` holding its dequantized weight in ``dtype``."""
    def dense(module: nn.Module) -> nn.Module:
        assert isinstance(module, GptqLinear)
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta", dtype=dtype)
        linear.weight = nn.Parameter(module.dequantize(dtype), requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.to(dtype), requires_grad=False)
        return linear

    with torch.no_grad():
        return _replace_each(model, GptqLinear, dense)


def _gptq_factory(config: AbstractGptq) -> Callable[[str, nn.Linear], nn.Module]:
    def make(name: str, linear: nn.Linear) -> nn.Module:
        return GptqLinear(config, linear.in_features, linear.out_features, linear.bias is not None, device="meta")
    return make


def load_gptq(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a 4-bit GPTQ checkpoint onto torch's CPU int4 kernel."""
    config = request.plan.config
    if not isinstance(config, AbstractGptq) or config.bits != 4:
        return Err((Issue("load.backend.mismatch", "$", f"cpu-int4-gptq loads 4-bit GPTQ, not {type(config).__name__}"),))
    dtype = getattr(torch, request.plan.dtype.value)
    return load_streamed(request, _gptq_factory(config), lambda model: repack_int4(model, dtype))


def load_gptq_dense(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GPTQ checkpoint with every layer dequantized once into a dense weight."""
    config = request.plan.config
    if not isinstance(config, AbstractGptq):
        return Err((Issue("load.backend.mismatch", "$", f"cpu-dense-gptq loads GPTQ, not {type(config).__name__}"),))
    dtype = getattr(torch, request.plan.dtype.value)
    return load_streamed(request, _gptq_factory(config), lambda model: densify(model, dtype))


def load_awq(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load a GEMM, GEMV or GEMV_FAST AWQ checkpoint onto torch's CPU int4 kernel."""
    config = request.plan.config
    if not isinstance(config, (AwqGemm, AwqGemv, AwqGemvFast)):
        return Err((Issue("load.awq.packing", "$", f"cpu-int4-awq reads GEMM, GEMV and GEMV_FAST packings, not {type(config).__name__}"),))
    awq: AbstractAwq = config
    dtype = getattr(torch, request.plan.dtype.value)

    def make(name: str, linear: nn.Linear) -> nn.Module:
        return AwqLinear(awq, linear.in_features, linear.out_features, linear.bias is not None, device="meta")

    return load_streamed(request, make, lambda model: repack_int4(model, dtype))
