"""The one load path for safetensors checkpoints stored in a layout: every kernel's loader.

open source → check every tensor against the layout → skeleton → portable modules (the layout's) →
stream → the kernel's ``prepare``, layer by layer → tie → place. The layout comes from the plan's
config (``layout_of``), the kernel from the plan's backend name; nothing here names a method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..kernel import Kernel, kernel_named
from ..layouts.base import AbstractLayout, Unpackable, layout_of
from ..result import Err, Issue, Issues, Result
from ..text import quote
from .replace import replace_each
from .request import LoadRequest
from .stream import ModuleFactory, PostLoad, WholeFactory, load_streamed

__all__ = ["load", "portable_factory", "whole_factory"]


def portable_factory(layout: AbstractLayout, dequantize_at_load: bool) -> ModuleFactory | Issue:
    """Makes each layer's portable module (the layout's ``portable``), on the meta device."""
    reference = type(layout).portable
    if reference is None:
        return Issue("load.layout.no_portable", "$", f"{type(layout).__name__} has no portable module to load layers into",
                     "this layout is loaded by its own backend")
    try:
        module: Any = reference.resolve()
    except (ImportError, AttributeError) as e:
        return Issue("load.layout.unavailable", "$", f"the portable module {quote(str(reference))} cannot be imported: {quote(str(e), 160)}")

    def make(name: str, linear: nn.Linear) -> nn.Module:
        declared = layout.tensors(linear.in_features, linear.out_features, linear.bias is not None)
        if isinstance(declared, Unpackable):  # before the portable: one that stores whole modules takes no linear layer
            raise ValueError(declared.message)
        built: nn.Module = module(layout, linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                                  dequantize_at_load=dequantize_at_load)
        return built

    return make


def whole_factory(layout: AbstractLayout, dequantize_at_load: bool) -> WholeFactory | None:
    """For a layout that stores whole modules (``whole_modules``: stacked experts), makes each one's
    portable module from the model's module (``portable.from_module``), on the meta device; ``None``
    for other layouts. Call after ``portable_factory`` (which reports a portable that cannot be imported)."""
    reference = type(layout).portable
    if not layout.whole_modules or reference is None:
        return None
    from_module: object = getattr(reference.resolve(), "from_module", None)

    def make(name: str, module: nn.Module) -> nn.Module:
        if not callable(from_module):
            raise ValueError(f"{type(module).__name__} is not a linear layer, and {reference} replaces only those")
        built: nn.Module = from_module(layout, module, device="meta", dequantize_at_load=dequantize_at_load)
        return built

    return make


def _post_load(kernel: Kernel, layout: AbstractLayout, dtype: torch.dtype) -> PostLoad | Issue:
    if kernel.prepare is None:
        return lambda model, names: 0
    try:
        prepare = kernel.prepare.resolve()
    except (ImportError, AttributeError) as e:
        return Issue("load.kernel.unavailable", "$", f"{kernel.name}'s prepare {quote(str(kernel.prepare))} cannot be imported: "
                     f"{quote(str(e), 160)}", "install what the kernel needs, or choose another backend")

    def post_load(model: nn.Module, names: tuple[str, ...]) -> int:
        return replace_each(model, names, lambda m: prepare(m, layout, dtype))

    return post_load


def load(request: LoadRequest) -> Result[tuple[nn.Module, int], Issues]:
    """Load the checkpoint's layers into the layout's portable modules, then hand each to the
    plan's kernel to prepare."""
    plan = request.plan
    kernel = kernel_named(plan.backend.name)
    if kernel is None:
        return Err((Issue("load.kernel.unknown", "$", f"{quote(plan.backend.name)} is not a registered kernel"),))
    layout = layout_of(plan.config)
    if layout is None or not kernel.serves(layout):
        what = type(layout).__name__ if layout is not None else f"{type(plan.config).__name__} (no layout)"
        return Err((Issue("load.backend.mismatch", "$", f"{kernel.name} cannot load {what}"),))
    make = portable_factory(layout, request.dequantize_at_load and kernel.prepare is None)
    if isinstance(make, Issue):
        return Err((make,))
    post_load = _post_load(kernel, layout, getattr(torch, plan.dtype.value))
    if isinstance(post_load, Issue):
        return Err((post_load,))
    whole = whole_factory(layout, request.dequantize_at_load and kernel.prepare is None)
    return load_streamed(request, layout, make, post_load, whole)
