"""Codec entries of the codebook methods (AQLM, VPTQ, SpQR, HIGGS), torchao and Quark."""

from __future__ import annotations

from typing import Any, Final

import attrs

from ..configs.codebook import HIGGS_BITS, HIGGS_GROUPS, Aqlm, Higgs, Spqr, Vptq
from ..configs.quark import Quark
from ..configs.torchao import Torchao, TorchaoType
from ..jsonvalue import EMPTY_OBJECT, Json, JsonObject, thaw, type_name
from ..text import quote
from . import fields as F
from .decoders import MODULES, TransformersDict, optional_object
from .fields import FieldSpec, Problem, field
from .spec import TypeSpec, child_path

__all__ = ["AQLM_SPEC", "VPTQ_SPEC", "SPQR_SPEC", "HIGGS_SPEC", "TORCHAO_SPEC", "QUARK_SPEC"]

_INT = F.integer(lo=1)
_AQLM_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Aqlm, "in_group_size", _INT),
    field(Aqlm, "out_group_size", _INT),
    field(Aqlm, "num_codebooks", _INT),
    field(Aqlm, "nbits_per_codebook", F.integer(lo=1, hi=16)),
    field(Aqlm, "linear_weights_not_to_quantize", MODULES, F.encode_tuple),
)
AQLM_SPEC: TypeSpec[Aqlm] = TypeSpec(Aqlm, fields=_AQLM_FIELDS, to_transformers=TransformersDict(
    _AQLM_FIELDS, fill=(("linear_weights_not_to_quantize", []),)))

_VPTQ_LAYER_KEYS: Final = frozenset({
    "enable_norm", "enable_perm", "group_num", "group_size", "in_features", "indices_as_float", "is_indice_packed",
    "num_centroids", "num_res_centroids", "out_features", "outlier_size", "vector_lens"})


def _vptq_layers(value: object) -> JsonObject | Problem:
    """``config_for_layers``: every value a ``VptqLayerConfig`` with packed indices (Transformers' rule)."""
    if not isinstance(value, dict):
        return Problem("type", f"expected an object of layer configs, got {type_name(value)} {quote(value)}")
    for name, layer in value.items():
        at = child_path("", name)
        if not isinstance(layer, dict):
            return Problem("type", f"expected a layer config (an object), got {quote(layer)}", at=at)
        odd = sorted(set(layer) - _VPTQ_LAYER_KEYS)
        if odd:
            return Problem("unknown", f"VptqLayerConfig has no key {quote(odd[0])}", at=child_path(at, odd[0]))
        if layer.get("is_indice_packed", True) is not True:
            return Problem("not_allowed", "VPTQ loads packed indices only (is_indice_packed must be true)", at=f"{at}.is_indice_packed")
    return F.json_object(value)


def _encode_obj(value: JsonObject) -> Json:
    return thaw(value)


_VPTQ_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Vptq, "enable_proxy_error", F.one_of((False,), "training with proxy error is not supported: write false")),
    field(Vptq, "config_for_layers", _vptq_layers, _encode_obj),
    field(Vptq, "shared_layer_config", F.json_object, _encode_obj),
    field(Vptq, "modules_to_not_convert", MODULES, F.encode_tuple),
)
VPTQ_SPEC: TypeSpec[Vptq] = TypeSpec(Vptq, fields=_VPTQ_FIELDS, to_transformers=TransformersDict(_VPTQ_FIELDS))

_SPQR_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Spqr, "bits", F.one_of((3,), "SpQR supports 3-bit weights only")),
    field(Spqr, "beta1", F.one_of((16,), "SpQR supports beta1 = 16 only")),
    field(Spqr, "beta2", F.one_of((16,), "SpQR supports beta2 = 16 only")),
    field(Spqr, "shapes", F.optional_default(F.json_object, EMPTY_OBJECT), _encode_obj),
    field(Spqr, "modules_to_not_convert", MODULES, F.encode_tuple),
)
SPQR_SPEC: TypeSpec[Spqr] = TypeSpec(Spqr, fields=_SPQR_FIELDS, to_transformers=TransformersDict(_SPQR_FIELDS))

_HIGGS_FIELDS: Final[tuple[FieldSpec[Any], ...]] = (
    field(Higgs, "bits", F.one_of(HIGGS_BITS)),
    field(Higgs, "p", F.one_of((1, 2))),
    field(Higgs, "hadamard_size", F.integer(lo=1)),
    field(Higgs, "group_size", F.one_of(HIGGS_GROUPS)),
    field(Higgs, "tune_metadata", F.optional_default(F.json_object, EMPTY_OBJECT), _encode_obj),
    field(Higgs, "modules_to_not_convert", MODULES, F.encode_tuple),
)
HIGGS_SPEC: TypeSpec[Higgs] = TypeSpec(Higgs, fields=_HIGGS_FIELDS, to_transformers=TransformersDict(_HIGGS_FIELDS))


@attrs.frozen
class _TorchaoQuantType:
    """Decode ``quant_type``: exactly ``{"default": {"_type": str, "_version": int, "_data": {...}}}``."""

    def __call__(self, value: object) -> TorchaoType | Problem:
        if isinstance(value, str):
            return Problem("not_allowed", f"string quant types ({quote(value)}) were removed in Transformers 5",
                           "re-save with a torchao config object: {\"default\": {\"_type\": \"Int4WeightOnlyConfig\", …}}")
        if not isinstance(value, dict) or list(value) != ["default"]:
            return Problem("type", f"expected {{\"default\": <torchao config>}}, got {quote(value)}")
        inner = value["default"]
        if not isinstance(inner, dict) or not isinstance(inner.get("_type"), str):
            return Problem("type", f"expected a serialized torchao config with a '_type' string, got {quote(inner)}", at=".default")
        version = inner.get("_version", 1)
        if type(version) is not int:
            return Problem("type", f"expected an integer '_version', got {quote(version)}", at=".default._version")
        data = inner.get("_data", {})
        frozen = F.json_object(data)
        if isinstance(frozen, Problem):
            return Problem(frozen.kind, frozen.message, at=".default._data")
        odd = sorted(set(inner) - {"_type", "_version", "_data"})
        if odd:
            return Problem("unknown", f"a serialized torchao config has no key {quote(odd[0])}", at=f".default{child_path('', odd[0])}")
        return TorchaoType(name=inner["_type"], version=version, data=frozen)


def _encode_torchao(t: TorchaoType) -> Json:
    return {"default": {"_type": t.name, "_version": t.version, "_data": thaw(t.data)}}


TORCHAO_SPEC: TypeSpec[Torchao] = TypeSpec(Torchao, fields=(
    field(Torchao, "quant_type", _TorchaoQuantType(), _encode_torchao),
    field(Torchao, "modules_to_not_convert", MODULES, F.encode_tuple),
    field(Torchao, "include_input_output_embeddings", F.boolean),
    field(Torchao, "untie_embedding_weights", F.boolean),
))

_OPT_OBJ = optional_object
QUARK_SPEC: TypeSpec[Quark] = TypeSpec(Quark, fields=(
    field(Quark, "global_quant_config", _OPT_OBJ, F.encode_object),
    field(Quark, "layer_quant_config", _OPT_OBJ, F.encode_object),
    field(Quark, "layer_type_quant_config", _OPT_OBJ, F.encode_object),
    field(Quark, "exclude", F.string_tuple, F.encode_tuple),
    field(Quark, "kv_cache_group", F.string_tuple, F.encode_tuple),
    field(Quark, "quant_mode", F.optional(F.text)),
    field(Quark, "export", _OPT_OBJ, F.encode_object),
))
