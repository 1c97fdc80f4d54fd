"""AMD Quark: its exported ``QConfig`` (or the legacy custom modes)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = ["Quark"]


@attrs.frozen(kw_only=True)
class Quark(AbstractQuantConfig):
    """``quant_method: "quark"``: AMD Quark's exported configuration.

    Attributes:
        global_quant_config: The default per-tensor settings (``weight``, ``input_tensors`` …),
            kept as written.
        layer_quant_config: Per-layer-name overrides.
        layer_type_quant_config: Per-layer-type overrides.
        exclude: Modules left in full precision.
        kv_cache_group: Modules whose outputs form the KV cache.
        quant_mode: ``eager_mode`` or ``fx_graph_mode``.
        export: Export settings (``pack_method``, ``weight_format`` …); absent in legacy configs.
    """

    method: ClassVar[str] = "quark"

    global_quant_config: JsonObject | None = None
    layer_quant_config: JsonObject | None = None
    layer_type_quant_config: JsonObject | None = None
    exclude: tuple[str, ...] = ()
    kv_cache_group: tuple[str, ...] = ()
    quant_mode: str | None = None
    export: JsonObject | None = None
