"""Codec entries of the library-specific integer methods: HQQ, Quanto, EETQ, SINQ, Metal, Gemma,
BitNet and AutoRound."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..configs.integer import (
    HQQ_BITS,
    METAL_BITS,
    QUANTO_ACTIVATIONS,
    QUANTO_WEIGHTS,
    AbstractAutoRound,
    AutoRound,
    AutoRoundAwq,
    AutoRoundGptq,
    BitNet,
    Eetq,
    Gemma,
    Hqq,
    Metal,
    Quanto,
    Sinq,
    auto_round_packing,
)
from ..jsonvalue import Json, JsonObject, thaw, type_name
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from . import fields as F
from .decoders import MODULES, TransformersDict, lower_one_of, optional_object
from .fields import FieldSpec, Problem, field
from .spec import TypeSpec, child_path

__all__ = ["HQQ_SPEC", "QUANTO_SPEC", "EETQ_SPEC", "SINQ_SPEC", "METAL_SPEC", "GEMMA_SPEC", "BITNET_SPEC", "AUTO_ROUND_SPECS",
           "select_auto_round"]

_HQQ_PARAMS: Final[dict[str, Callable[[object], object]]] = {
    "nbits": F.one_of(HQQ_BITS), "group_size": F.optional(F.integer(lo=1)), "axis": F.one_of((0, 1)),
}


def _hqq_params(value: object, at: str) -> Problem | None:
    """Check one ``BaseQuantizeConfig`` dict: its ``weight_quant_params`` must be readable."""
    if not isinstance(value, dict) or not isinstance(value.get("weight_quant_params"), dict):
        return Problem("type", f"expected HQQ parameters with 'weight_quant_params', got {quote(value)}", at=at)
    params = value["weight_quant_params"]
    for key, decode in _HQQ_PARAMS.items():
        if key in params:
            p = decode(params[key])
            if isinstance(p, Problem):
                return Problem(f"{key}.{p.kind}", p.message, p.hint, f"{at}.weight_quant_params.{key}")
    return None


def _hqq_quant_config(value: object) -> JsonObject | None | Problem:
    """HQQ's ``quant_config``: one parameter set, or one per layer name (``dynamic_config``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return Problem("type", f"expected an object, got {type_name(value)} {quote(value)}")
    if "weight_quant_params" in value:
        problem = _hqq_params(value, "")
    else:
        problem = next((p for k, v in value.items() if (p := _hqq_params(v, child_path("", k))) is not None), None)
    return problem if problem is not None else F.json_object(value)


HQQ_SPEC: TypeSpec[Hqq] = TypeSpec(Hqq, fields=(
    field(Hqq, "quant_config", _hqq_quant_config, F.encode_object),
    field(Hqq, "skip_modules", F.string_tuple, F.encode_tuple),
))

_QUANTO_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Quanto, "weights", F.one_of(QUANTO_WEIGHTS)),
    field(Quanto, "activations", F.optional(F.one_of(QUANTO_ACTIVATIONS))),
    field(Quanto, "modules_to_not_convert", MODULES, F.encode_tuple),
)
QUANTO_SPEC: TypeSpec[Quanto] = TypeSpec(Quanto, fields=_QUANTO_FIELDS, to_transformers=TransformersDict(_QUANTO_FIELDS))

_EETQ_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Eetq, "weights", F.one_of(("int8",), "EETQ stores int8 weights only")),
    field(Eetq, "modules_to_not_convert", MODULES, F.encode_tuple),
)
EETQ_SPEC: TypeSpec[Eetq] = TypeSpec(Eetq, fields=_EETQ_FIELDS, to_transformers=TransformersDict(_EETQ_FIELDS))

_SINQ_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Sinq, "nbits", F.integer(lo=1, hi=8)),
    field(Sinq, "group_size", F.integer(lo=1)),
    field(Sinq, "tiling_mode", F.one_of(("1D", "2D"))),
    field(Sinq, "sinq_method", lower_one_of(("sinq", "asinq")), key="method"),
    field(Sinq, "modules_to_not_convert", MODULES, F.encode_tuple),
)


def _sinq_transformers(c: Sinq) -> dict[str, Json]:
    # SinqConfig keeps unknown keys, quant_method included, in a serialized "_extra_kwargs".
    out = TransformersDict(_SINQ_FIELDS)(c)
    out["_extra_kwargs"] = {"quant_method": "sinq", **{k: thaw(v) for k, v in c.extras.items}}
    return out


SINQ_SPEC: TypeSpec[Sinq] = TypeSpec(Sinq, fields=_SINQ_FIELDS, to_transformers=_sinq_transformers)

_METAL_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Metal, "bits", F.one_of(METAL_BITS, "Metal kernels take 2, 4 or 8 bits")),
    field(Metal, "group_size", F.integer(lo=1)),
    field(Metal, "modules_to_not_convert", MODULES, F.encode_tuple),
    field(Metal, "dequantize", F.boolean, omit_default=True),
)
METAL_SPEC: TypeSpec[Metal] = TypeSpec(Metal, fields=_METAL_FIELDS, loading_attributes=("dequantize",),
                                       to_transformers=TransformersDict(_METAL_FIELDS, drop=("dequantize",)))

_GEMMA_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Gemma, "num_bits", F.integer(lo=1, hi=16)),
    field(Gemma, "quantize_embeddings", F.boolean),
    field(Gemma, "module_quant_configs", optional_object, F.encode_object),
    field(Gemma, "modules_to_not_convert", MODULES, F.encode_tuple),
)
GEMMA_SPEC: TypeSpec[Gemma] = TypeSpec(Gemma, fields=_GEMMA_FIELDS, to_transformers=TransformersDict(_GEMMA_FIELDS))

_BITNET_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(BitNet, "linear_class", F.one_of(("bitlinear", "autobitlinear"))),
    field(BitNet, "quantization_mode", F.one_of(("online", "offline"))),
    field(BitNet, "use_rms_norm", F.boolean),
    field(BitNet, "rms_norm_eps", F.optional(F.number(lo=0.0))),
    field(BitNet, "modules_to_not_convert", MODULES, F.encode_tuple),
)
BITNET_SPEC: TypeSpec[BitNet] = TypeSpec(BitNet, fields=_BITNET_FIELDS, to_transformers=TransformersDict(_BITNET_FIELDS))

_AUTO_ROUND_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(AbstractAutoRound, "bits", F.integer(lo=2, hi=8)),
    field(AbstractAutoRound, "group_size", F.integer(lo=1, also=(-1,))),
    field(AbstractAutoRound, "sym", F.boolean),
    field(AbstractAutoRound, "packing_format", F.text),
    field(AbstractAutoRound, "backend", F.text),
)


def _auto_round_fields(cls: type[AbstractAutoRound]) -> tuple[FieldSpec[Any], ...]:
    # The packing_format default differs per type (Transformers' own default is the GPTQ one).
    return tuple(field(cls, "packing_format", F.text) if f.key == "packing_format" else f for f in _AUTO_ROUND_FIELDS)


AUTO_ROUND_SPECS: tuple[TypeSpec[Any], ...] = tuple(
    TypeSpec(cls, fields=_auto_round_fields(cls), loading_attributes=("backend",),
             to_transformers=TransformersDict(_auto_round_fields(cls), keep_extras=True))
    for cls in (AutoRoundGptq, AutoRoundAwq, AutoRound)
)
_AUTO_ROUND_BY_PACKING: Final = {s.cls.packing: s for s in AUTO_ROUND_SPECS}


def select_auto_round(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
    """The AutoRound type its ``packing_format`` names (absent: GPTQ, Transformers' default)."""
    fmt = obj.get("packing_format", "auto_round:gptq")
    if not isinstance(fmt, str):
        return Err((Issue("auto-round.packing_format.type", child_path(at, "packing_format"), f"expected a string, got {quote(fmt)}"),))
    return Ok(_AUTO_ROUND_BY_PACKING[auto_round_packing(fmt)])
