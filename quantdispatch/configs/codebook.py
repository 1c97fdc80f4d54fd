"""Codebook and vector quantization: AQLM, VPTQ, SpQR and HIGGS."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import EMPTY_OBJECT, JsonObject
from .base import AbstractQuantConfig

__all__ = ["Aqlm", "Vptq", "Spqr", "Higgs", "HIGGS_BITS", "HIGGS_GROUPS"]


@attrs.frozen(kw_only=True)
class Aqlm(AbstractQuantConfig):
    """``quant_method: "aqlm"``: Additive Quantization of Language Models.

    Attributes:
        in_group_size: Input columns per code.
        out_group_size: Output rows per code.
        num_codebooks: Codebooks summed per group.
        nbits_per_codebook: Code width (16 for 1×16, 8 for 2×8).
        linear_weights_not_to_quantize: Weights left in full precision (``None`` reads as none).
    """

    method: ClassVar[str] = "aqlm"

    in_group_size: int = 8
    out_group_size: int = 1
    num_codebooks: int = 1
    nbits_per_codebook: int = 16
    linear_weights_not_to_quantize: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class Vptq(AbstractQuantConfig):
    """``quant_method: "vptq"``: Vector Post-Training Quantization.

    Attributes:
        enable_proxy_error: Must be false (training is not supported).
        config_for_layers: Per-layer ``VptqLayerConfig`` dicts, checked when parsed
            (``is_indice_packed`` must be true), kept as written.
        shared_layer_config: Settings shared by every layer, kept as written.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "vptq"

    enable_proxy_error: Literal[False] = False
    config_for_layers: JsonObject = EMPTY_OBJECT
    shared_layer_config: JsonObject = EMPTY_OBJECT
    modules_to_not_convert: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class Spqr(AbstractQuantConfig):
    """``quant_method: "spqr"``: Sparse-Quantized Representation (3-bit, 16×16 groups).

    Attributes:
        bits: Always 3.
        beta1, beta2: Group dimensions; always 16.
        shapes: Tensor shapes by name, kept as written.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "spqr"

    bits: Literal[3] = 3
    beta1: Literal[16] = 16
    beta2: Literal[16] = 16
    shapes: JsonObject = EMPTY_OBJECT
    modules_to_not_convert: tuple[str, ...] | None = None


HIGGS_BITS: Final[tuple[Literal[2, 3, 4], ...]] = (2, 3, 4)
HIGGS_GROUPS: Final[tuple[Literal[64, 128, 256], ...]] = (64, 128, 256)


@attrs.frozen(kw_only=True)
class Higgs(AbstractQuantConfig):
    """``quant_method: "higgs"``: Hadamard rotations and MSE-optimal grids (FLUTE kernels).

    Attributes:
        bits: 2, 3 or 4.
        p: Grid dimension, 1 or 2.
        hadamard_size: Rotation size, a multiple of ``group_size``.
        group_size: 64, 128 or 256.
        tune_metadata: Per-layer kernel tuning, kept as written.
        modules_to_not_convert: Modules left in full precision.
    """

    method: ClassVar[str] = "higgs"

    bits: Literal[2, 3, 4] = 4
    p: Literal[1, 2] = 2
    hadamard_size: int = 512
    group_size: Literal[64, 128, 256] = 256
    tune_metadata: JsonObject = EMPTY_OBJECT
    modules_to_not_convert: tuple[str, ...] | None = None
