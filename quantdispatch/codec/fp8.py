"""Codec entries of the FP8 and FP4 families: ``fp8``/``mxfp8`` (one field table, two types),
``fbgemm_fp8``, ``mxfp4``, ``nvfp4``, ``fouroversix`` and ``fp_quant``."""

from __future__ import annotations

from typing import Any, Final

from ..configs.fp4 import FP_QUANT_BACKWARD, FP_QUANT_FORWARD, FP_QUANT_TRANSFORMS, FourOverSix, FpQuant, Mxfp4, Nvfp4
from ..configs.fp8 import ACTIVATION_SCHEMES, EXPERT_DTYPES, SCALE_FORMATS, AbstractFineGrainedFp8, FbgemmFp8, Fp8, Mxfp8
from ..text import quote
from . import fields as F
from .decoders import MODULES, TransformersDict, encode_int_tuple, int_tuple, lower_one_of, optional_object
from .fields import FieldSpec, Problem, field, inert
from .spec import TypeSpec

__all__ = ["FP8_SPEC", "MXFP8_SPEC", "FBGEMM_FP8_SPEC", "MXFP4_SPEC", "NVFP4_SPEC", "FOUROVERSIX_SPEC", "FP_QUANT_SPEC"]


def _not_modelopt(value: object) -> object:
    """ModelOpt's ``quant_algo`` beside ``quant_method: "fp8"``: only ``FP8`` agrees with it."""
    if value is None or value == "FP8":
        return value
    return Problem("conflict", f"quant_method is 'fp8' but quant_algo is {quote(value)}: this is a ModelOpt checkpoint "
                   "whose weights are not (all) block-FP8",
                   "Transformers would load it as block FP8 and misread the weights; load it as ModelOpt (quant_method 'modelopt')")


_FP8_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(AbstractFineGrainedFp8, "activation_scheme", lower_one_of(ACTIVATION_SCHEMES)),
    field(AbstractFineGrainedFp8, "weight_block_size", F.optional(int_tuple(2)), encode_int_tuple),
    field(AbstractFineGrainedFp8, "modules_to_not_convert", MODULES, F.encode_tuple, aliases=("ignored_layers",)),
    field(AbstractFineGrainedFp8, "modules_to_convert", MODULES, F.encode_tuple),
    field(AbstractFineGrainedFp8, "scale_fmt", F.one_of(SCALE_FORMATS)),
    field(AbstractFineGrainedFp8, "expert_dtype", F.one_of(EXPERT_DTYPES)),
    field(AbstractFineGrainedFp8, "dequantize", F.boolean, omit_default=True),
    inert("quant_algo", _not_modelopt),
)
_FP8_LOADING: Final = ("dequantize", "modules_to_not_convert")
FP8_SPEC: TypeSpec[Fp8] = TypeSpec(Fp8, fields=_FP8_FIELDS, loading_attributes=_FP8_LOADING,
                                   to_transformers=TransformersDict(_FP8_FIELDS))
MXFP8_SPEC: TypeSpec[Mxfp8] = TypeSpec(Mxfp8, fields=_FP8_FIELDS, loading_attributes=_FP8_LOADING,
                                       to_transformers=TransformersDict(_FP8_FIELDS))

_FBGEMM_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(FbgemmFp8, "activation_scale_ub", F.number(lo=0.0, hi=None)),
    field(FbgemmFp8, "modules_to_not_convert", MODULES, F.encode_tuple),
)
FBGEMM_FP8_SPEC: TypeSpec[FbgemmFp8] = TypeSpec(FbgemmFp8, fields=_FBGEMM_FIELDS, loading_attributes=("activation_scale_ub",),
                                                to_transformers=TransformersDict(_FBGEMM_FIELDS))

_MXFP4_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Mxfp4, "modules_to_not_convert", MODULES, F.encode_tuple),
    field(Mxfp4, "dequantize", F.boolean, omit_default=True),
)
MXFP4_SPEC: TypeSpec[Mxfp4] = TypeSpec(Mxfp4, fields=_MXFP4_FIELDS, loading_attributes=("dequantize",),
                                       to_transformers=TransformersDict(_MXFP4_FIELDS, drop=("dequantize",)))

_NVFP4_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (field(Nvfp4, "modules_to_not_convert", MODULES, F.encode_tuple),)
NVFP4_SPEC: TypeSpec[Nvfp4] = TypeSpec(Nvfp4, fields=_NVFP4_FIELDS, to_transformers=TransformersDict(_NVFP4_FIELDS))

_OPT_STR = F.optional(F.text)
_FOUROVERSIX_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(FourOverSix, "activation_dtype", _OPT_STR),
    field(FourOverSix, "activation_scale_rule", _OPT_STR),
    field(FourOverSix, "dtype", F.text),
    field(FourOverSix, "gradient_dtype", _OPT_STR),
    field(FourOverSix, "gradient_scale_rule", _OPT_STR),
    field(FourOverSix, "keep_master_weights", F.boolean),
    field(FourOverSix, "matmul_backend", _OPT_STR),
    field(FourOverSix, "output_dtype", _OPT_STR),
    field(FourOverSix, "quantize_backend", _OPT_STR),
    field(FourOverSix, "scale_rule", F.text),
    field(FourOverSix, "weight_dtype", _OPT_STR),
    field(FourOverSix, "weight_scale_2d", F.boolean),
    field(FourOverSix, "weight_scale_rule", _OPT_STR),
    field(FourOverSix, "module_config_overrides", optional_object, F.encode_object),
    field(FourOverSix, "modules_to_not_convert", MODULES, F.encode_tuple),
)
FOUROVERSIX_SPEC: TypeSpec[FourOverSix] = TypeSpec(FourOverSix, fields=_FOUROVERSIX_FIELDS,
                                                   to_transformers=TransformersDict(_FOUROVERSIX_FIELDS))

_FP_QUANT_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(FpQuant, "forward_dtype", F.one_of(FP_QUANT_FORWARD)),
    field(FpQuant, "forward_method", F.one_of(("abs_max", "quest"))),
    field(FpQuant, "backward_dtype", F.one_of(FP_QUANT_BACKWARD)),
    field(FpQuant, "store_master_weights", F.boolean),
    field(FpQuant, "hadamard_group_size", F.optional(F.one_of((16, 32, 64, 128)))),
    field(FpQuant, "pseudoquantization", F.boolean),
    field(FpQuant, "transform_init", F.one_of(FP_QUANT_TRANSFORMS)),
    field(FpQuant, "modules_to_not_convert", MODULES, F.encode_tuple),
)


def _fp_quant_transformers(c: FpQuant) -> dict[str, Any]:
    out = TransformersDict(_FP_QUANT_FIELDS, fill=(("modules_to_not_convert", ["lm_head"]),))(c)
    out["hadamard_group_size"] = c.effective_hadamard_group_size
    return out


FP_QUANT_SPEC: TypeSpec[FpQuant] = TypeSpec(FpQuant, fields=_FP_QUANT_FIELDS, to_transformers=_fp_quant_transformers)
