"""JSON Schema (2020-12) of every config type, derived from its codec entry, not written by hand.

Each field's decoder says what it accepts; ``decoder_schema`` translates the decoders of
``quantdispatch.codec`` (``one_of`` → ``enum``, ``integer(lo, hi)`` → ``minimum``/``maximum``,
``optional`` → ``anyOf`` with ``null``, compressed-tensors' nested arguments → nested objects with
``additionalProperties: false`` …). What a schema cannot say (rules across fields, that an ``re:``
entry compiles) stays with ``parse``/``validate``: a document the schema accepts may still be
refused, never the reverse for a document ``dump`` wrote.

>>> from quantdispatch import Gptq
>>> json_schema(Gptq)["properties"]["bits"]
{'enum': [2, 3, 4, 8]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .codec import codebook as _codebook
from .codec import compressed_tensors as _ct
from .codec import fields as F
from .codec import gguf as _gguf
from .codec import integer as _integer
from .codec import modelopt as _modelopt
from .codec.decoders import int_tuple, lower_one_of, module_patterns, object_of, optional_object
from .codec.registry import families, method_aliases, spec_for
from .configs.base import AbstractQuantConfig
from .configs.compressed_tensors import CT_FORMATS, CT_PRESETS
from .jsonvalue import Json

__all__ = ["json_schema", "decoder_schema", "all_schemas"]

Schema = dict[str, Json]
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def _any_case(word: str) -> str:
    """An ECMA-262 pattern matching ``word`` in any case (JSON Schema has no case-insensitive enum)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if not c.isalnum() else c) for c in word)


def _strings() -> Schema:
    return {"type": "array", "items": {"type": "string"}}


def _ct_args() -> Schema:
    props: dict[str, Json] = {k: decoder_schema(d) for k, d in _ct._ARGS.items()}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _ct_scheme() -> Schema:
    args: Schema = {"anyOf": [{"type": "null"}, _ct_args()]}
    return {"type": "object", "required": ["targets"], "additionalProperties": False, "properties": {
        "targets": _strings(), "weights": args, "input_activations": args, "output_activations": args,
        "format": {"anyOf": [{"type": "null"}, {"enum": [f for f in CT_FORMATS if f != "mixed-precision"]}]}}}


def _ct_groups() -> Schema:
    return {"type": "object", "additionalProperties": {"anyOf": [_ct_scheme(), _strings()]},
            "propertyNames": {"description": f"a group name; a group given as a list of targets is a preset: {', '.join(CT_PRESETS)}"}}


def _ct_sparsity() -> Schema:
    props: dict[str, Json] = {k: decoder_schema(d) for k, d in _ct._SPARSITY.items()}
    return {"type": "object", "anyOf": [{"maxProperties": 0}, {"required": ["format"]}], "properties": props}


def _gguf_tensors() -> Schema:
    return {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}}


def _torchao() -> Schema:
    inner: Schema = {"type": "object", "required": ["_type"], "additionalProperties": False, "properties": {
        "_type": {"type": "string"}, "_version": {"type": "integer"}, "_data": {"type": "object"}}}
    return {"type": "object", "required": ["default"], "additionalProperties": False, "properties": {"default": inner}}


def _modelopt_layer() -> Schema:
    return {"type": "object", "required": ["quant_algo"], "additionalProperties": False, "properties": {
        "quant_algo": {"type": "string"}, "group_size": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]}}}


_CUSTOM: Final[dict[object, Callable[[], Schema]]] = {
    _ct.ct_args: _ct_args, _ct._groups: _ct_groups, _ct._sparsity: _ct_sparsity,
    _ct._format: lambda: {"enum": [*CT_FORMATS, "fakequant"]},
    _ct._block: lambda: {"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
                                   {"type": "string", "pattern": "^[0-9]+x[0-9]+$"}]},
    _ct._dynamic: lambda: {"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": f"^{_any_case('local')}$"}]},
    _ct._actorder: lambda: {"anyOf": [{"type": "null"}, {"const": False},
                                      {"type": "string", "pattern": f"^({_any_case('weight')}|{_any_case('static')})$"}]},
    _ct._observer_kwargs: lambda: {"type": "object"},
    _gguf._file_type: lambda: {"anyOf": [{"type": "null"}, {"type": "string"}, {"type": "integer"}]},
    _gguf._tensors: _gguf_tensors,
    _codebook._vptq_layers: lambda: {"type": "object", "additionalProperties": {"type": "object"}},
    _integer._hqq_quant_config: lambda: {"anyOf": [{"type": "null"}, {"type": "object"}]},
    _modelopt._layer: _modelopt_layer,
    F.boolean: lambda: {"type": "boolean"},
    F.text: lambda: {"type": "string"},
    F.string_tuple: _strings,
    F.nested_string_tuple: lambda: {"type": "array", "items": _strings()},
    F.json_object: lambda: {"type": "object"},
    optional_object: lambda: {"anyOf": [{"type": "null"}, {"type": "object"}]},
    F.any_json: dict,
    F.dataset: lambda: {"anyOf": [{"enum": list(F.GPTQ_DATASETS)}, _strings()]},
}


def decoder_schema(decode: object) -> Schema:
    """The JSON Schema of what a field decoder accepts (``{}``, anything, for one it cannot read)."""
    custom = _CUSTOM.get(decode) if not isinstance(decode, (list, dict)) else None
    if custom is not None:
        return custom()
    if isinstance(decode, F.one_of):
        return {"enum": list(decode.allowed)}
    if isinstance(decode, lower_one_of):
        return {"type": "string", "pattern": "^(" + "|".join(_any_case(a) for a in decode.allowed) + ")$"}
    if isinstance(decode, F.integer):
        bound: Schema = {"type": "integer", "maximum": F.INT64_MAX if decode.hi is None else decode.hi}
        if decode.lo is not None:
            bound["minimum"] = decode.lo
        return {"anyOf": [bound, {"enum": list(decode.also)}]} if decode.also else bound
    if isinstance(decode, F.number):
        out: Schema = {"type": "number"}
        for key, value in (("minimum", decode.lo), ("maximum", decode.hi)):
            if value is not None:
                out[("exclusiveM" + key[1:]) if decode.open_interval else key] = value
        return out
    if isinstance(decode, (F.optional, F.optional_default)):
        return {"anyOf": [{"type": "null"}, decoder_schema(decode.inner)]}
    if isinstance(decode, F.dtype):
        names: list[Json] = [d.value for d in decode.allowed]
        return {"enum": names + [f"torch.{d.value}" for d in decode.allowed]}
    if isinstance(decode, int_tuple):
        return {"type": "array", "items": {"type": "integer", "minimum": decode.lo}, "minItems": decode.length, "maxItems": decode.length}
    if isinstance(decode, module_patterns):
        return {**_strings(), "description": f"module names; entries starting with {decode.regex_prefix!r} are regular expressions"}
    if isinstance(decode, object_of):
        return {"type": "object", "additionalProperties": decoder_schema(decode.inner)}
    if isinstance(decode, _codebook._TorchaoQuantType):
        return _torchao()
    return {}


def json_schema(cls: type[AbstractQuantConfig]) -> Schema:
    """The JSON Schema of a registered config type's documents.

    Raises:
        TypeError: ``cls`` has no codec entry.
    """
    spec = spec_for(cls)
    if spec is None:
        raise TypeError(f"{cls.__qualname__} has no codec entry; register it with register_codec first")
    names: list[Json] = [cls.method, *(a for a, m in method_aliases().items() if m == cls.method)]
    props: dict[str, Json] = {"quant_method": {"enum": names} if len(names) > 1 else {"const": cls.method}}
    for key, value in spec.variant:
        props[key] = {"const": value} if not isinstance(value, str) else {"type": "string", "pattern": f"^{_any_case(value)}$"}
    required: list[Json] = []
    for f in spec.fields:
        for key in f.keys:
            props[key] = decoder_schema(f.decode)
        if f.required:
            required.append(f.key)
    schema: Schema = {"$schema": DIALECT, "title": cls.__name__, "description": (cls.__doc__ or "").strip().split("\n")[0],
                      "type": "object", "properties": props, "required": required}
    if spec.envelope is not None:  # the same fields may come nested under the envelope key
        inner = {k: v for k, v in props.items() if k != "quant_method"}
        props[spec.envelope] = {"type": "object", "properties": inner}
    return schema


def all_schemas() -> dict[str, Schema]:
    """Every registered config type's schema, by type name, in registration order."""
    return {s.cls.__name__: json_schema(s.cls) for f in families() for s in f.specs}


