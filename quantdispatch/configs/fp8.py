"""FP8 weights: Transformers' fine-grained FP8 (``fp8`` and ``mxfp8``, one schema, two identities)
and FBGEMM's per-channel FP8 (``fbgemm_fp8``)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from .base import AbstractQuantConfig

__all__ = ["AbstractFineGrainedFp8", "Fp8", "Mxfp8", "FbgemmFp8", "ACTIVATION_SCHEMES", "SCALE_FORMATS", "EXPERT_DTYPES"]

ACTIVATION_SCHEMES: Final[tuple[Literal["dynamic", "static"], ...]] = ("dynamic", "static")
SCALE_FORMATS: Final[tuple[Literal["float", "ue8m0"], ...]] = ("float", "ue8m0")
EXPERT_DTYPES: Final[tuple[Literal["fp8", "fp4"], ...]] = ("fp8", "fp4")


@attrs.frozen(kw_only=True)
class AbstractFineGrainedFp8(AbstractQuantConfig):
    """Transformers' ``FineGrainedFP8Config``: E4M3 weights with one scale per block.

    JSON keys: ``activation_scheme``, ``weight_block_size``, ``modules_to_not_convert`` (alias
    ``ignored_layers``, as MiniMax writes it), ``modules_to_convert``, ``scale_fmt``,
    ``expert_dtype``, ``dequantize``. DeepSeek's ``fmt`` and Qwen's ``weight_per_tensor`` ride
    along in ``extras``.

    Attributes:
        activation_scheme: ``dynamic`` (scales computed per token at run time) or ``static``.
        weight_block_size: ``(rows, columns)`` of a weight block sharing one scale; ``None`` for
            one scale per tensor.
        modules_to_not_convert: Module-name patterns left in full precision.
        modules_to_convert: Only these modules are quantized, when given.
        scale_fmt: ``float`` scales, or ``ue8m0`` (powers of two, DeepSeek V3.2).
        expert_dtype: The MoE experts' weight format: ``fp8`` or ``fp4``.
        dequantize: Loading attribute: dequantize to the compute dtype at load (Transformers sets
            it itself on hardware without FP8 kernels).
    """

    method: ClassVar[str] = ""

    activation_scheme: Literal["dynamic", "static"] = "dynamic"
    weight_block_size: tuple[int, ...] | None = (128, 128)
    modules_to_not_convert: tuple[str, ...] | None = None
    modules_to_convert: tuple[str, ...] | None = None
    scale_fmt: Literal["float", "ue8m0"] = "float"
    expert_dtype: Literal["fp8", "fp4"] = "fp8"
    dequantize: bool = False


@attrs.frozen(kw_only=True)
class Fp8(AbstractFineGrainedFp8):
    """``quant_method: "fp8"``: E4M3 weights, float32 (or UE8M0) block scales (DeepSeek V3, Qwen3-FP8).

    >>> Fp8().weight_block_size
    (128, 128)
    """

    method: ClassVar[str] = "fp8"


@attrs.frozen(kw_only=True)
class Mxfp8(AbstractFineGrainedFp8):
    """``quant_method: "mxfp8"``: E4M3 weights with E8M0 scales per ``[1, 32]`` block (OCP MX)."""

    method: ClassVar[str] = "mxfp8"


@attrs.frozen(kw_only=True)
class FbgemmFp8(AbstractQuantConfig):
    """``quant_method: "fbgemm_fp8"``: FBGEMM's per-channel FP8 weights with dynamic per-token
    activation scales.

    Attributes:
        activation_scale_ub: Loading attribute: the upper bound of activation scales.
        modules_to_not_convert: Module-name patterns left in full precision.
    """

    method: ClassVar[str] = "fbgemm_fp8"

    activation_scale_ub: float = 1200.0
    modules_to_not_convert: tuple[str, ...] | None = None
