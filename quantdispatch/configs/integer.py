"""Weight-only integer methods whose kernels live in one library each: HQQ, Quanto, EETQ,
SINQ, Metal (Apple GPUs), Gemma's own format, BitNet (ternary) and AutoRound."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = [
    "Hqq", "Quanto", "Eetq", "Sinq", "Metal", "Gemma", "BitNet", "AbstractAutoRound", "AutoRound", "AutoRoundGptq",
    "AutoRoundAwq", "auto_round_packing",
    "QUANTO_WEIGHTS", "QUANTO_ACTIVATIONS", "HQQ_BITS", "METAL_BITS",
]

HQQ_BITS: Final[tuple[int, ...]] = (1, 2, 3, 4, 8)


@attrs.frozen(kw_only=True)
class Hqq(AbstractQuantConfig):
    """``quant_method: "hqq"``: Half-Quadratic Quantization, as Transformers serializes it.

    JSON keys: ``quant_config`` (HQQ's ``BaseQuantizeConfig`` as a dict, with
    ``weight_quant_params``; or one such dict per layer name) and ``skip_modules``.

    Attributes:
        quant_config: The HQQ quantization parameters, checked when parsed (``nbits``,
            ``group_size``, ``axis`` of every ``weight_quant_params``), kept as written.
        skip_modules: Modules left in full precision.
    """

    method: ClassVar[str] = "hqq"

    quant_config: JsonObject | None = None
    skip_modules: tuple[str, ...] = ("lm_head",)


QUANTO_WEIGHTS: Final[tuple[Literal["float8", "int8", "int4", "int2"], ...]] = ("float8", "int8", "int4", "int2")
QUANTO_ACTIVATIONS: Final[tuple[Literal["int8", "float8"], ...]] = ("int8", "float8")


@attrs.frozen(kw_only=True)
class Quanto(AbstractQuantConfig):
    """``quant_method: "quanto"``: optimum-quanto weights (and, for quantize-on-load, activations).

    Attributes:
        weights: ``float8``, ``int8``, ``int4`` or ``int2``.
        activations: ``None``, ``int8`` or ``float8`` (Transformers refuses any but ``None`` at load).
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "quanto"

    weights: Literal["float8", "int8", "int4", "int2"] = "int8"
    activations: Literal["int8", "float8"] | None = None
    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class Eetq(AbstractQuantConfig):
    """``quant_method: "eetq"``: EETQ's per-channel int8 weights (CUDA)."""

    method: ClassVar[str] = "eetq"

    weights: Literal["int8"] = "int8"
    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class Sinq(AbstractQuantConfig):
    """``quant_method: "sinq"``: Sinkhorn-normalized quantization (calibration-free).

    Attributes:
        nbits: Bits per weight.
        group_size: Weights per scale (the backend wants a multiple of 8).
        tiling_mode: ``1D`` or ``2D``.
        sinq_method: ``sinq`` (``asinq``, the calibrated variant, is refused at load by
            Transformers). JSON key ``method``.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "sinq"

    nbits: int = 4
    group_size: int = 64
    tiling_mode: str = "1D"
    sinq_method: Literal["sinq", "asinq"] = "sinq"
    modules_to_not_convert: tuple[str, ...] | None = None


METAL_BITS: Final[tuple[int, ...]] = (2, 4, 8)


@attrs.frozen(kw_only=True)
class Metal(AbstractQuantConfig):
    """``quant_method: "metal"``: affine integer weights for Apple GPUs (MPS kernels).

    Attributes:
        bits: 2, 4 or 8.
        group_size: Weights per scale, positive.
        modules_to_not_convert: Modules left in full precision.
        dequantize: Loading attribute: dequantize at load (off Apple GPUs).
    """

    method: ClassVar[str] = "metal"

    bits: int = 4
    group_size: int = 64
    modules_to_not_convert: tuple[str, ...] | None = None
    dequantize: bool = False


@attrs.frozen(kw_only=True)
class Gemma(AbstractQuantConfig):
    """``quant_method: "gemma"``: Google's quantization-aware-trained Gemma checkpoints.

    Attributes:
        num_bits: Bits per weight.
        quantize_embeddings: Whether the embeddings are quantized too.
        module_quant_configs: Per-module settings, kept as written.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "gemma"

    num_bits: int = 4
    quantize_embeddings: bool = False
    module_quant_configs: JsonObject | None = None
    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class BitNet(AbstractQuantConfig):
    """``quant_method: "bitnet"``: ternary (1.58-bit) weights packed four per byte.

    Attributes:
        linear_class: ``bitlinear`` (packed, inference) or ``autobitlinear`` (online).
        quantization_mode: ``offline`` (pre-quantized) or ``online``.
        use_rms_norm: An RMSNorm before each BitLinear.
        rms_norm_eps: Its epsilon.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "bitnet"

    linear_class: Literal["bitlinear", "autobitlinear"] = "bitlinear"
    quantization_mode: Literal["online", "offline"] = "offline"
    use_rms_norm: bool = False
    rms_norm_eps: float | None = 1e-6
    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class AbstractAutoRound(AbstractQuantConfig):
    """``quant_method: "auto-round"``: Intel AutoRound weights; the final type names the packing
    its ``packing_format`` says (the weights are laid out as GPTQ's, AWQ's or AutoRound's own).

    Attributes:
        bits: 2 to 8.
        group_size: ``-1`` or positive.
        sym: Symmetric quantization.
        packing_format: As written (``auto_round:auto_gptq``, ``auto_round:gptqmodel`` …); it
            must name the type's packing.
        backend: Loading attribute: the kernel family asked for.

    Other keys AutoRound writes (``data_type``, ``act_bits``, ``autoround_version`` …) are kept in
    ``extras``, and written by Transformers too.
    """

    method: ClassVar[str] = "auto-round"
    packing: ClassVar[str] = ""

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    packing_format: str = "auto_round"
    backend: str = "auto"


@attrs.frozen(kw_only=True)
class AutoRound(AbstractAutoRound):
    """AutoRound's own packing (``packing_format: "auto_round"``)."""

    packing: ClassVar[str] = "auto_round"


@attrs.frozen(kw_only=True)
class AutoRoundGptq(AbstractAutoRound):
    """GPTQ-packed AutoRound weights (a ``packing_format`` naming gptq; Transformers' default)."""

    packing: ClassVar[str] = "gptq"

    packing_format: str = "auto_round:gptq"


@attrs.frozen(kw_only=True)
class AutoRoundAwq(AbstractAutoRound):
    """AWQ-packed AutoRound weights (a ``packing_format`` naming awq)."""

    packing: ClassVar[str] = "awq"

    packing_format: str = "auto_round:auto_awq"


def auto_round_packing(packing_format: str) -> str:
    """The packing a ``packing_format`` names: ``awq``, ``gptq``, or AutoRound's own."""
    low = packing_format.lower()
    return "awq" if "awq" in low else "gptq" if "gptq" in low else "auto_round"
