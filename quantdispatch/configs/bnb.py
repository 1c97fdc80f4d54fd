"""bitsandbytes: 4-bit (NF4/FP4) and 8-bit (LLM.int8) as two types."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..dtypes import DType
from .base import AbstractQuantConfig

__all__ = ["AbstractBnb", "Bnb4Bit", "Bnb8Bit", "BNB_QUANT_TYPES", "BNB_QUANT_STORAGE"]

BNB_QUANT_TYPES: Final[tuple[Literal["fp4", "nf4"], ...]] = ("fp4", "nf4")
BNB_QUANT_STORAGE: Final[tuple[DType, ...]] = (
    DType.FLOAT16, DType.FLOAT32, DType.INT8, DType.UINT8, DType.FLOAT64, DType.BFLOAT16,
)
"""The storage dtypes Transformers accepts for packed 4-bit weights."""


@attrs.frozen(kw_only=True)
class AbstractBnb(AbstractQuantConfig):
    """Fields shared by both bitsandbytes variants.

    Attributes:
        skip_modules: ``llm_int8_skip_modules``: module-name patterns (regexes, matched at module
            boundaries or as suffixes) left unquantized; ``None`` means Transformers' default skips.
        enable_fp32_cpu_offload: ``llm_int8_enable_fp32_cpu_offload``: modules placed on the CPU
            stay in 32-bit instead of being refused.
    """

    method: ClassVar[str] = "bitsandbytes"

    skip_modules: tuple[str, ...] | None = None
    enable_fp32_cpu_offload: bool = False


@attrs.frozen(kw_only=True)
class Bnb4Bit(AbstractBnb):
    """bitsandbytes 4-bit weights (``load_in_4bit: true``), as ``Linear4bit`` stores them.

    JSON keys: ``bnb_4bit_quant_type``, ``bnb_4bit_compute_dtype``, ``bnb_4bit_use_double_quant``,
    ``bnb_4bit_quant_storage``, ``llm_int8_skip_modules``, ``llm_int8_enable_fp32_cpu_offload``.
    Defaults are Transformers': FP4 (not NF4), float32 compute, no double quantization.

    >>> Bnb4Bit(quant_type="nf4") == Bnb4Bit(quant_type="nf4")
    True
    """

    quant_type: Literal["fp4", "nf4"] = "fp4"
    compute_dtype: DType = DType.FLOAT32
    use_double_quant: bool = False
    quant_storage: DType = DType.UINT8


@attrs.frozen(kw_only=True)
class Bnb8Bit(AbstractBnb):
    """bitsandbytes 8-bit weights (``load_in_8bit: true``): LLM.int8 with outlier decomposition.

    JSON keys: ``llm_int8_threshold``, ``llm_int8_has_fp16_weight``, ``llm_int8_skip_modules``,
    ``llm_int8_enable_fp32_cpu_offload``.

    Attributes:
        threshold: Outlier threshold; activations above it run in 16-bit. ``0`` disables it.
        has_fp16_weight: Keep fp16 master weights (for training) next to the int8 ones.
    """

    threshold: float = 6.0
    has_fp16_weight: bool = False
