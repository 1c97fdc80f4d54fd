"""The ``prepare`` steps of the CPU kernels: ``cpu-int4`` (torch's int4 kernel), ``cpu-q4``
(quantdispatch's native kernel) and ``cpu-dense`` (weights dequantized once).

Each takes one loaded portable layer (``GptqLinear``, ``AwqLinear``, ``PackedLinear``: any module
whose layout converts to the kernel's input) and returns the kernel's module, or ``None`` to keep
the portable one, which computes the same function. The int4 kernels read ``Int4Weights``, which
the layout makes (``layout.forms["int4"]``): GPTQ, AWQ and compressed-tensors reach them through
the same two functions. A layer whose shape the kernel cannot take (``kernels.int4.int4_unfit``,
``int4_native.q4_unfit``) keeps its portable module. Where the native kernel cannot be built (no C
compiler), ``cpu-q4`` falls back to torch's int4 kernel, layer by layer the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..kernels.int4 import Int4Linear, Int4Weights, int4_unfit
from ..kernels.modules import AwqLinear, GptqLinear, dense_linear, features, layout_of_module
from ..layouts.base import AbstractIntLayout, AbstractLayout
from ..loading.replace import replace_each

__all__ = ["prepare_int4", "prepare_q4", "prepare_dense", "repack_int4", "densify"]

_Build = Callable[[Int4Weights, torch.Tensor | None, torch.dtype], nn.Module]


def _int4(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype, native: bool) -> nn.Module | None:
    from ..kernels.int4_native import Q4Linear, native_int4, q4_unfit

    convert = type(layout).forms.get("int4")
    if convert is None or not isinstance(layout, AbstractIntLayout) or layout.bits != 4:
        return None
    use_native = native and native_int4() is not None
    unfit = q4_unfit if use_native else int4_unfit
    in_features, out_features = features(module)
    if unfit(in_features, out_features, layout.group_size) is not None:
        return None
    weights = convert.resolve()(module)
    if not isinstance(weights, Int4Weights):
        return None  # the layout's reason this layer does not convert (a g_idx whose groups are not runs)
    build: _Build = Q4Linear if use_native else Int4Linear
    bias: object = getattr(module, "bias", None)
    return build(weights, bias if isinstance(bias, torch.Tensor) else None, dtype)


def prepare_int4(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``Int4Linear`` (torch's CPU int4 kernel) for one loaded 4-bit layer, or ``None``."""
    with torch.no_grad():
        return _int4(module, layout, dtype, native=False)


def prepare_q4(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """A ``Q4Linear`` (the native kernel; torch's int4 kernel where it cannot be built) for one loaded 4-bit layer, or ``None``."""
    with torch.no_grad():
        return _int4(module, layout, dtype, native=True)


def prepare_dense(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``nn.Linear`` holding one loaded layer's dequantized weight in ``dtype``."""
    with torch.no_grad():
        return dense_linear(module, dtype)


def repack_int4(model: nn.Module, dtype: torch.dtype, native: bool = False) -> int:
    """Swap each loaded ``GptqLinear`` (4-bit) and ``AwqLinear`` that the kernel can take for an
    ``Int4Linear`` (torch's kernel) or, with ``native`` and where it was built, a ``Q4Linear``
    (their biases in ``dtype``, the model's); returns the number swapped."""
    prepare = prepare_q4 if native else prepare_int4
    names = [n for n, m in model.named_modules() if isinstance(m, (GptqLinear, AwqLinear))]
    return replace_each(model, names, lambda m: prepare(m, layout_of_module(m), dtype))


def densify(model: nn.Module, dtype: torch.dtype) -> int:
    """Swap each loaded ``GptqLinear`` for an ``nn.Linear`` holding its dequantized weight in ``dtype``."""
    names = [n for n, m in model.named_modules() if isinstance(m, GptqLinear)]
    return replace_each(model, names, lambda m: prepare_dense(m, layout_of_module(m), dtype))
