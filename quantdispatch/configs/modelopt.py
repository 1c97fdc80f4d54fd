"""NVIDIA ModelOpt checkpoints: ``hf_quant_config.json`` (``{"producer": …, "quantization": {…}}``)
or the same fields in ``config.json`` (``quant_method: "modelopt"``, or none at all), one type per
``quant_algo``."""

from __future__ import annotations

from typing import ClassVar

import attrs

from .base import AbstractQuantConfig

__all__ = ["AbstractModelopt", "ModeloptFp8", "ModeloptNvfp4", "ModeloptMixed", "ModeloptLayer"]


@attrs.frozen(kw_only=True)
class AbstractModelopt(AbstractQuantConfig):
    """Fields every ModelOpt export writes; the final type names the ``quant_algo``.

    Attributes:
        kv_cache_quant_algo: ``FP8``/``NVFP4`` KV cache, or ``None`` (not quantized).
        group_size: Values per block scale (16 for NVFP4), when written.
        exclude_modules: Module patterns (``*`` wildcards) left unquantized; ``ignore`` in the
            ``config.json`` form.
    """

    method: ClassVar[str] = "modelopt"
    quant_algo: ClassVar[str] = ""

    kv_cache_quant_algo: str | None = None
    group_size: int | None = None
    exclude_modules: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class ModeloptFp8(AbstractModelopt):
    """``quant_algo: "FP8"``: per-tensor E4M3 weights and static activation scales."""

    quant_algo: ClassVar[str] = "FP8"


@attrs.frozen(kw_only=True)
class ModeloptNvfp4(AbstractModelopt):
    """``quant_algo: "NVFP4"``: E2M1 weights and activations, FP8 scales per 16 values."""

    quant_algo: ClassVar[str] = "NVFP4"


@attrs.frozen
class ModeloptLayer:
    """One entry of ``quantized_layers``: the algorithm of one module and its group size."""

    quant_algo: str
    group_size: int | None = None


@attrs.frozen(kw_only=True)
class ModeloptMixed(AbstractModelopt):
    """``quant_algo: "MIXED_PRECISION"``: an algorithm per module (``quantized_layers``).

    Attributes:
        quantized_layers: ``(module, layer)`` in file order.
    """

    quant_algo: ClassVar[str] = "MIXED_PRECISION"

    quantized_layers: tuple[tuple[str, ModeloptLayer], ...] = ()

    def algorithms(self) -> tuple[str, ...]:
        """The distinct per-layer algorithms, sorted."""
        return tuple(sorted({layer.quant_algo for _, layer in self.quantized_layers}))
