"""A plugin written from outside the package: a new format (a layout) and a new kernel for it.

The format, ``toy_int8_rows``: each quantized linear layer stores ``codes`` (int8 ``[out, in]``)
and ``row_scale`` (float32 ``[out, 1]``); ``W = codes * row_scale``. The plugin registers a config
type and its codec entry, the layout (its tensors, its ``layout_of`` rule, its dequantization) and
a kernel (``toy-int8-rows``: an int8 code matmul, scaled once per output row), and nothing else:
no backend rule, no loader. The package then plans and loads it through its one load path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs
import torch
from torch import nn

import quantdispatch as qd
from quantdispatch.environment import Cpu
from quantdispatch.kernel import Kernel, Rank, register_kernel
from quantdispatch.layouts import AbstractLayout, Lazy, TensorDecl, Unpackable, declare_layout, layout_of

__all__ = ["ToyRows", "ToyRowsLayout", "TOY_SPEC", "TOY_KERNEL", "register", "prepare_rows", "RowsLinear", "quantize_rows"]

METHOD: Final = "toy_int8_rows"


@attrs.frozen(kw_only=True)
class ToyRows(qd.AbstractQuantConfig):
    """Int8 codes with one float32 scale per output row."""

    method: ClassVar[str] = METHOD


TOY_SPEC: qd.TypeSpec[ToyRows] = qd.TypeSpec(ToyRows, fields=())


@attrs.frozen(kw_only=True)
class ToyRowsLayout(AbstractLayout):
    """``codes`` I8 ``[out, in]`` and ``row_scale`` F32 ``[out, 1]``, plus the optional bias."""

    marker: ClassVar[str] = "codes"

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Mapping[str, TensorDecl] | Unpackable:
        if in_features <= 0 or out_features <= 0:
            return Unpackable("toy.shape.empty", f"{in_features} -> {out_features} holds no weights")
        found = {"codes": TensorDecl((out_features, in_features), "I8"), "row_scale": TensorDecl((out_features, 1), "F32")}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F32", ("F16", "BF16", "F32"))
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        codes = shapes.get("codes")
        return codes[0] if codes is not None else None

    def finite(self) -> frozenset[str]:
        return frozenset({"row_scale"})

    def describe(self) -> str:
        return "toy int8 codes, one float32 scale per output row"

    def dequantize(self, tensors: Mapping[str, Any], dtype: Any) -> Any:
        weight: torch.Tensor = tensors["codes"].to(torch.float32) * tensors["row_scale"]
        return weight.to(dtype)


class RowsLinear(nn.Module):
    """The toy kernel's module: ``(x @ codes.T) * row_scale.T``, the scale applied once per output."""

    codes_t: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, codes: torch.Tensor, row_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("codes_t", codes.t().to(torch.float32).contiguous())
        self.register_buffer("scale", row_scale.t().to(torch.float32).contiguous())
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.to(torch.float32) @ self.codes_t) * self.scale
        if self.bias is not None:
            out = out + self.bias.to(torch.float32)
        return out.to(x.dtype)


def prepare_rows(module: nn.Module, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """The toy kernel's ``prepare``: the portable module's tensors into a ``RowsLinear``."""
    codes: object = getattr(module, "codes", None)
    scale: object = getattr(module, "row_scale", None)
    bias: object = getattr(module, "bias", None)
    if not isinstance(codes, torch.Tensor) or not isinstance(scale, torch.Tensor):
        return None
    return RowsLinear(codes, scale, bias if isinstance(bias, torch.Tensor) else None)


TOY_KERNEL = Kernel(name="toy-int8-rows", summary="the plugin's int8 row kernel", layouts=(ToyRowsLayout,),
                    prepare=Lazy(__name__, "prepare_rows"), requires=(qd.Requirement("torch", "2.4"),), devices=("cpu",), rank=Rank(1))


def _toy_layout(config: ToyRows, /) -> AbstractLayout | None:
    return ToyRowsLayout()


def _fits_on_any_cpu(layout: ToyRowsLayout, device: Cpu, /) -> tuple[str, ...]:
    return ()


_registered: list[bool] = []


def register() -> None:
    """Register the codec entry, the layout and the kernel (idempotent, so tests may call it twice)."""
    if _registered:
        return
    qd.register_codec((TOY_SPEC,))
    declare_layout(ToyRowsLayout)
    layout_of.register(ToyRows)(_toy_layout)
    register_kernel(TOY_KERNEL).fit.register(ToyRowsLayout, Cpu)(_fits_on_any_cpu)
    _registered.append(True)


def quantize_rows(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Round-to-nearest int8 codes with a scale per row (the plugin's own writer)."""
    scale = (weight.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-8).to(torch.float32)
    codes = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    return {"codes": codes, "row_scale": scale}
