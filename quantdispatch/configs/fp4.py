"""4-bit floating-point weights: OpenAI's MXFP4 (``mxfp4``), NVIDIA's NVFP4 (``nvfp4``), Four Over
Six (``fouroversix``) and FP-Quant (``fp_quant``)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = ["Mxfp4", "Nvfp4", "FourOverSix", "FpQuant", "FP_QUANT_FORWARD", "FP_QUANT_BACKWARD", "FP_QUANT_TRANSFORMS"]


@attrs.frozen(kw_only=True)
class Mxfp4(AbstractQuantConfig):
    """``quant_method: "mxfp4"``: E2M1 weights, one E8M0 scale per 32 values (gpt-oss).

    Attributes:
        modules_to_not_convert: Module-name patterns left in full precision (``*`` wildcards).
        dequantize: Loading attribute: dequantize to bfloat16 at load (Transformers does so on
            hardware without the Triton kernels). Not written by Transformers' ``to_dict``.
    """

    method: ClassVar[str] = "mxfp4"

    modules_to_not_convert: tuple[str, ...] | None = None
    dequantize: bool = False


@attrs.frozen(kw_only=True)
class Nvfp4(AbstractQuantConfig):
    """``quant_method: "nvfp4"``: E2M1 weights with FP8 scales per 16 values and a per-tensor
    scale (Transformers quantizes on the fly; it cannot load NVFP4 checkpoints yet).

    Attributes:
        modules_to_not_convert: Module-name patterns left in full precision.
    """

    method: ClassVar[str] = "nvfp4"

    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class FourOverSix(AbstractQuantConfig):
    """``quant_method: "fouroversix"``: NVFP4 with adaptive block scaling (scale to 4 or to 6).

    Fields are Transformers' ``FourOverSixConfig``'s, with its defaults; Transformers checks none
    of them. ``None`` for the per-tensor kinds means "as ``dtype`` / ``scale_rule`` say".
    """

    method: ClassVar[str] = "fouroversix"

    activation_dtype: str | None = None
    activation_scale_rule: str | None = None
    dtype: str = "nvfp4"
    gradient_dtype: str | None = None
    gradient_scale_rule: str | None = None
    keep_master_weights: bool = False
    matmul_backend: str | None = None
    output_dtype: str | None = "bfloat16"
    quantize_backend: str | None = None
    scale_rule: str = "mse"
    weight_dtype: str | None = None
    weight_scale_2d: bool = False
    weight_scale_rule: str | None = None
    module_config_overrides: JsonObject | None = None
    modules_to_not_convert: tuple[str, ...] | None = ("lm_head",)


FP_QUANT_FORWARD: Final[tuple[Literal["nvfp4", "mxfp4"], ...]] = ("nvfp4", "mxfp4")
FP_QUANT_BACKWARD: Final[tuple[Literal["bf16", "mxfp8", "mxfp4"], ...]] = ("bf16", "mxfp8", "mxfp4")
FP_QUANT_TRANSFORMS: Final[tuple[Literal["hadamard", "identity", "gsr"], ...]] = ("hadamard", "identity", "gsr")


@attrs.frozen(kw_only=True)
class FpQuant(AbstractQuantConfig):
    """``quant_method: "fp_quant"``: MXFP4/NVFP4 with a Hadamard rotation (QuTLASS kernels).

    Attributes:
        forward_dtype: ``nvfp4`` or ``mxfp4``.
        forward_method: ``abs_max`` (both) or ``quest`` (MXFP4 only).
        backward_dtype: ``bf16``; ``mxfp8``/``mxfp4`` with an MXFP4 forward only.
        store_master_weights: Keep full-precision weights for training.
        hadamard_group_size: Rotation size; ``None`` means 16 for NVFP4 and 32 for MXFP4.
        pseudoquantization: Emulate the format in Triton (no Blackwell needed).
        transform_init: ``hadamard``, ``identity`` or ``gsr``.
        modules_to_not_convert: Left in full precision; ``None`` means ``["lm_head"]``.
    """

    method: ClassVar[str] = "fp_quant"

    forward_dtype: Literal["nvfp4", "mxfp4"] = "nvfp4"
    forward_method: Literal["abs_max", "quest"] = "abs_max"
    backward_dtype: Literal["bf16", "mxfp8", "mxfp4"] = "bf16"
    store_master_weights: bool = False
    hadamard_group_size: int | None = None
    pseudoquantization: bool = False
    transform_init: Literal["hadamard", "identity", "gsr"] = "hadamard"
    modules_to_not_convert: tuple[str, ...] | None = None

    @property
    def effective_hadamard_group_size(self) -> int:
        """The rotation size Transformers uses: the given one, else 16 (NVFP4) or 32 (MXFP4)."""
        if self.hadamard_group_size is not None:
            return self.hadamard_group_size
        return 16 if self.forward_dtype == "nvfp4" else 32
