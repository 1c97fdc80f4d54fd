"""An unquantized linear layer: ``weight`` ``[out_features, in_features]`` and the optional ``bias``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .base import FLOAT_CODES, AbstractLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout

__all__ = ["Dense"]


@declare_layout
@attrs.frozen(kw_only=True)
class Dense(AbstractLayout):
    """Full-precision weights, as Transformers saves them (no config selects it: it is what every
    layer a quantized checkpoint leaves unquantized holds)."""

    marker: ClassVar[str] = "weight"
    portable: ClassVar[Lazy[Any] | None] = None

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        if in_features <= 0 or out_features <= 0:
            return Unpackable("dense.shape.empty", f"a layer of {in_features} -> {out_features} holds no weights")
        found = {"weight": TensorDecl((out_features, in_features), "F16", FLOAT_CODES)}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        weight = shapes.get("weight")
        return weight[0] if weight is not None and len(weight) == 2 else None

    def finite(self) -> frozenset[str]:
        return frozenset()

    def describe(self) -> str:
        return "dense floating-point weights"
