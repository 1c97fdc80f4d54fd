"""compressed-tensors: the nested structure decoded into typed values, every problem located.

The rules are compressed-tensors' own pydantic models' (0.20: ``QuantizationArgs``,
``QuantizationScheme``, ``QuantizationConfig``), made total: a bad ``num_bits`` in the third group
is ``compressed-tensors.config_groups.num_bits.range`` at ``$.config_groups.group_2.weights.num_bits``.
Added to them, the checks they leave to load time: ``re:`` entries of ``ignore`` must compile,
float formats have 4, 6 or 8 bits, preset names must exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from ..configs.compressed_tensors import (
    CT_FORMATS,
    CT_PRESETS,
    CT_STATUSES,
    CT_STRATEGIES,
    CompressedTensors,
    CtArgs,
    CtGroup,
    CtPreset,
    CtScheme,
    CtSparsity,
)
from ..jsonvalue import Json, JsonObject, freeze, thaw, type_name
from ..text import quote
from . import fields as F
from .decoders import lower_one_of, module_patterns
from .fields import FieldSpec, Problem, field
from .spec import TypeSpec, child_path

__all__ = ["CT_SPEC", "ct_args", "encode_args", "CT_ALIASES"]

CT_ALIASES: Final = ("compressed_tensors", "sparseml")
"""Legacy method strings of compressed-tensors configs (read as ``compressed-tensors``)."""


def _at(key: str) -> str:
    return child_path("", key)


def _nested(key: str, p: Problem) -> Problem:
    """A problem of sub-key ``key``: its code names the sub-key, its path goes through it."""
    return Problem(f"{key}.{p.kind}" if "." not in p.kind else p.kind, p.message, p.hint, _at(key) + p.at)


def _block(value: object) -> tuple[int, ...] | Problem:
    if isinstance(value, str):  # the legacy "128x128" spelling
        parts = value.split("x")
        if len(parts) == 2 and all(p.isdigit() and len(p) < 10 for p in parts):
            value = [int(p) for p in parts]
    if not isinstance(value, list) or len(value) != 2 or not all(type(v) is int and 0 < v < 2**31 for v in value):
        return Problem("type", f"expected [rows, columns], two positive integers, got {quote(value)}")
    return tuple(value)


def _dynamic(value: object) -> bool | str | Problem:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() == "local":
        return "local"
    return Problem("not_allowed", f"expected true, false or 'local', got {quote(value)}")


def _actorder(value: object) -> str | None | Problem:
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.lower() in ("weight", "static"):
        return value.lower()
    return Problem("not_allowed", f"expected 'weight', 'static', false or null, got {quote(value)}",
                   "compressed-tensors 0.20 removed actorder true, 'group' and 'dynamic'; use 'weight'")


def _observer_kwargs(value: object) -> JsonObject | Problem:
    return F.json_object(value)


_ARGS: Final[dict[str, Callable[[object], object]]] = {
    "num_bits": F.integer(lo=1, hi=32), "type": lower_one_of(("int", "float")), "symmetric": F.boolean,
    "group_size": F.optional(F.integer(lo=1, also=(-1,))), "strategy": F.optional(lower_one_of(CT_STRATEGIES)),
    "block_structure": F.optional(_block), "dynamic": _dynamic, "actorder": _actorder,
    "observer": F.optional(F.text), "observer_kwargs": _observer_kwargs,
    "scale_dtype": F.optional(F.text), "zp_dtype": F.optional(F.text),
}
_ARGS_DEFAULTS: Final = {a.name: a.default for a in attrs.fields(CtArgs)}
_NULLABLE: Final = frozenset(k for k, d in _ARGS.items() if isinstance(d, F.optional) or k == "actorder")


def _unknown(value: Mapping[str, object], known: Mapping[str, object] | tuple[str, ...], what: str) -> Problem | None:
    for k in value:
        if k not in known:
            return Problem(f"{k if k.isidentifier() else 'key'}.unknown", f"{what} has no key {quote(k)}",
                           f"known: {', '.join(known)}; compressed-tensors forbids other keys here", _at(k))
    return None


def ct_args(value: object) -> CtArgs | Problem:
    """Decode ``QuantizationArgs`` with compressed-tensors' rules; problems located inside."""
    if not isinstance(value, dict):
        return Problem("type", f"expected quantization arguments (an object), got {type_name(value)} {quote(value)}")
    if not value.keys() <= _ARGS.keys():
        unknown = _unknown(value, _ARGS, "quantization arguments")
        assert unknown is not None
        return unknown
    values: dict[str, Any] = {}
    for key, raw in value.items():
        if raw is None and key in _NULLABLE:  # most written args are null: no decoder call for them
            values[key] = None
            continue
        decoded = _ARGS[key](raw)
        if isinstance(decoded, Problem):
            return _nested(key, decoded)
        values[key] = decoded
    args = CtArgs(**values)
    return _args_rule(args) or args


def _args_rule(a: CtArgs) -> Problem | None:
    """compressed-tensors' cross-field rules of ``QuantizationArgs`` (its model validator)."""
    s = a.effective_strategy
    if a.type == "float" and a.num_bits not in (4, 6, 8):
        return Problem("num_bits.not_allowed", f"float quantization has 4, 6 or 8 bits, not {a.num_bits}", at=".num_bits")
    if s == "token" and not a.dynamic:
        return Problem("strategy.conflict", "static token quantization is impossible", "set dynamic: true", ".strategy")
    if s in ("group", "tensor_group") and (a.group_size is None or a.group_size <= 0):
        return Problem("group_size.missing", f"strategy {s!r} needs a positive group_size", at=".group_size")
    if a.group_size is not None and a.group_size > 0 and s not in ("group", "tensor_group"):
        return Problem("group_size.conflict", f"group_size {a.group_size} needs strategy 'group' or 'tensor_group', not {s!r}",
                       at=".group_size")
    if (s == "block") != (a.block_structure is not None):
        return Problem("block_structure.conflict", "strategy 'block' and block_structure go together", at=".block_structure")
    if a.dynamic is not False and s not in ("token", "tensor", "tensor_group", "group"):
        return Problem("dynamic.conflict", f"dynamic quantization needs strategy token, tensor, tensor_group or group, not {s!r}",
                       at=".dynamic")
    if a.dynamic == "local" and s != "tensor_group":
        return Problem("dynamic.conflict", "dynamic 'local' needs strategy 'tensor_group'", at=".dynamic")
    return None


def encode_args(a: CtArgs | None) -> Json:
    """Write arguments canonically: every field that differs from its default, in field order."""
    if a is None:
        return None
    out: dict[str, Json] = {}
    for f in attrs.fields(CtArgs):
        v = getattr(a, f.name)
        if type(v) is type(_ARGS_DEFAULTS[f.name]) and v == _ARGS_DEFAULTS[f.name]:
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else thaw(v) if isinstance(v, JsonObject) else v
    return out


_SCHEME_KEYS: Final = ("targets", "weights", "input_activations", "output_activations", "format")
_ACTIVATION_STRATEGIES: Final = ("token", "tensor", "group", "tensor_group", "attn_head")


def _scheme(value: object) -> CtGroup | Problem:
    if isinstance(value, list):
        targets = F.string_tuple(value)
        return targets if isinstance(targets, Problem) else CtPreset(targets=targets)
    if not isinstance(value, dict):
        return Problem("type", f"expected a scheme (an object) or a list of targets, got {type_name(value)} {quote(value)}")
    unknown = _unknown(value, _SCHEME_KEYS, "a quantization scheme")
    if unknown is not None:
        return unknown
    if "targets" not in value:
        return Problem("targets.missing", "a quantization scheme needs 'targets'", "e.g. \"targets\": [\"Linear\"]")
    targets = F.string_tuple(value["targets"])
    if isinstance(targets, Problem):
        return _nested("targets", targets)
    parts: dict[str, CtArgs | None] = {}
    for key in ("weights", "input_activations", "output_activations"):
        raw = value.get(key)
        decoded = None if raw is None else ct_args(raw)
        if isinstance(decoded, Problem):
            return decoded.within(_at(key))
        parts[key] = decoded
    fmt = value.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in CT_FORMATS):
        return Problem("format.not_allowed", f"expected a compression format, got {quote(fmt)}", f"known: {', '.join(CT_FORMATS)}",
                       ".format")
    if fmt == "mixed-precision":
        return Problem("format.not_allowed", "'mixed-precision' is a model format, not a scheme's", at=".format")
    scheme = CtScheme(targets=targets, format=fmt, **parts)
    return _scheme_rule(scheme) or scheme


def _scheme_rule(s: CtScheme) -> Problem | None:
    inputs = s.input_activations
    if inputs is not None and inputs.effective_strategy not in _ACTIVATION_STRATEGIES:
        return Problem("strategy.not_allowed", f"strategy {inputs.effective_strategy!r} cannot quantize activations",
                       f"use one of {', '.join(_ACTIVATION_STRATEGIES)}", ".input_activations.strategy")
    for key in ("input_activations", "output_activations"):
        args = getattr(s, key)
        if args is not None and args.actorder is not None:
            return Problem("actorder.conflict", "activation ordering applies to weights only", at=f".{key}.actorder")
    return None


def _groups(value: object) -> tuple[tuple[str, CtGroup], ...] | Problem:
    if not isinstance(value, dict):
        return Problem("type", f"expected an object of config groups, got {type_name(value)} {quote(value)}")
    out: list[tuple[str, CtGroup]] = []
    for name, raw in value.items():
        group = _scheme(raw)
        if isinstance(group, Problem):
            return group.within(_at(name))
        if isinstance(group, CtPreset) and name not in CT_PRESETS:
            return Problem("preset.unknown", f"{quote(name)} is not a preset scheme (a group given as a list of targets names one)",
                           "known: " + ", ".join(CT_PRESETS), _at(name))
        out.append((name, group))
    return tuple(out)


def _encode_group(g: CtGroup) -> Json:
    if isinstance(g, CtPreset):
        return list(g.targets)
    out: dict[str, Json] = {"targets": list(g.targets)}
    for key in ("weights", "input_activations", "output_activations"):
        args = getattr(g, key)
        if args is not None:
            out[key] = encode_args(args)
    if g.format is not None:
        out["format"] = g.format
    return out


def _encode_groups(value: tuple[tuple[str, CtGroup], ...] | None) -> Json:
    return None if value is None else {name: _encode_group(g) for name, g in value}


_SPARSITY: Final[dict[str, Callable[[object], object]]] = {
    "format": F.text, "targets": F.optional(F.string_tuple), "ignore": F.optional(module_patterns()),
    "global_sparsity": F.optional(F.number(0.0, 1.0)), "sparsity_structure": F.optional(F.text),
}


def _sparsity(value: object) -> CtSparsity | None | Problem:
    if value == {}:  # llm-compressor writes an empty object for "no sparsity"
        return None
    if not isinstance(value, dict):
        return Problem("type", f"expected a sparsity config (an object), got {type_name(value)} {quote(value)}")
    if not isinstance(value.get("format"), str):
        return Problem("format.missing", "a sparsity config needs a 'format' string (e.g. 'sparse-24-bitmask')", at=".format")
    values: dict[str, Any] = {}
    extras: list[tuple[str, Any]] = []
    for key, raw in value.items():
        decode = _SPARSITY.get(key)
        if decode is None:
            extras.append((key, freeze(raw)))
            continue
        decoded = decode(raw)
        if isinstance(decoded, Problem):
            return _nested(key, decoded)
        values[key] = decoded
    return CtSparsity(**values, extras=JsonObject(tuple(extras)))


def _encode_sparsity(s: CtSparsity | None) -> Json:
    if s is None:
        return None
    out: dict[str, Json] = {"format": s.format}
    for key in ("targets", "ignore"):
        out[key] = F.encode_tuple(getattr(s, key))
    out["global_sparsity"] = s.global_sparsity
    out["sparsity_structure"] = s.sparsity_structure
    out.update((k, thaw(v)) for k, v in s.extras.items if k not in out)
    return out


def _format(value: object) -> str | Problem:
    if isinstance(value, str) and (value in CT_FORMATS or value == "fakequant"):
        return value
    return Problem("not_allowed", f"expected a compression format, got {quote(value)}", "known: " + ", ".join(CT_FORMATS))


_OPT_BOOL = F.optional(F.boolean)
CT_FIELDS: tuple[FieldSpec[Any], ...] = (
    field(CompressedTensors, "config_groups", F.optional(_groups), _encode_groups),
    field(CompressedTensors, "format", _format),
    field(CompressedTensors, "quantization_status", F.one_of(CT_STATUSES)),
    field(CompressedTensors, "kv_cache_scheme", F.optional(ct_args), encode_args),
    field(CompressedTensors, "global_compression_ratio", F.optional(F.number(lo=0.0))),
    field(CompressedTensors, "ignore", F.optional(module_patterns()), F.encode_tuple),
    field(CompressedTensors, "sparsity_config", F.optional(_sparsity), _encode_sparsity),
    field(CompressedTensors, "dequantize", F.boolean, omit_default=True),
    field(CompressedTensors, "use_optimized_inference", F.boolean, omit_default=True),
    field(CompressedTensors, "run_compressed", _OPT_BOOL, omit_default=True),
)

def _torch_dtype(name: str) -> str:
    return name if name.startswith("torch.") else f"torch.{name}"


def _args_transformers(a: CtArgs | None) -> Json:
    """``QuantizationArgs.model_dump()``: the inferred strategy; optional fields only when set."""
    if a is None:
        return None
    out: dict[str, Json] = {"num_bits": a.num_bits, "type": a.type, "symmetric": a.symmetric, "group_size": a.group_size,
                            "strategy": a.effective_strategy, "dynamic": a.dynamic}
    if a.block_structure is not None:
        out["block_structure"] = list(a.block_structure)
    if a.actorder is not None:
        out["actorder"] = a.actorder
    if a.scale_dtype is not None:
        out["scale_dtype"] = _torch_dtype(a.scale_dtype)
    if a.zp_dtype is not None and not a.symmetric:
        out["zp_dtype"] = _torch_dtype(a.zp_dtype)
    if a.observer is not None:
        out["observer"] = a.observer
    if a.observer_kwargs.items:
        out["observer_kwargs"] = thaw(a.observer_kwargs)
    return out


def _group_transformers(g: CtGroup) -> Json:
    if isinstance(g, CtPreset):  # compressed-tensors expands presets from its own table, which is not ours to copy
        return {"targets": list(g.targets), "preset": True}
    return {"targets": list(g.targets), **{k: _args_transformers(getattr(g, k)) for k in ("weights", "input_activations", "output_activations")},
            "format": g.format}


def _ct_transformers(c: CompressedTensors) -> dict[str, Json]:
    """``CompressedTensorsConfig.to_dict()``: the pydantic ``QuantizationConfig.model_dump()`` when
    there are config groups or a KV-cache scheme; else only the method (loading attributes, the
    sparsity config and unknown keys are not written)."""
    if not c.config_groups and c.kv_cache_scheme is None:
        return {"quant_method": "compressed-tensors"}
    return {"config_groups": {name: _group_transformers(g) for name, g in c.config_groups or ()}, "quant_method": "compressed-tensors",
            "kv_cache_scheme": _args_transformers(c.kv_cache_scheme), "format": c.format, "quantization_status": c.quantization_status,
            "global_compression_ratio": c.global_compression_ratio, "ignore": F.encode_tuple(c.ignore), "moe_sparsity_config": None}


CT_SPEC: TypeSpec[CompressedTensors] = TypeSpec(
    CompressedTensors, fields=CT_FIELDS, loading_attributes=("dequantize", "use_optimized_inference", "run_compressed"),
    to_transformers=_ct_transformers,
)
