"""Codec entries of NVIDIA ModelOpt (``hf_quant_config.json`` or ``config.json``) and MLX."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..configs.mlx import MLX_BITS, MLX_GROUPS, MLX_MODES, Mlx
from ..configs.modelopt import AbstractModelopt, ModeloptFp8, ModeloptLayer, ModeloptMixed, ModeloptNvfp4
from ..jsonvalue import Json, type_name
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from . import fields as F
from .decoders import MODULES, object_of
from .fields import FieldSpec, Problem, field
from .spec import TypeSpec, child_path

__all__ = ["MODELOPT_SPECS", "select_modelopt", "looks_like_modelopt", "MLX_SPEC", "MODELOPT_ENVELOPE"]

MODELOPT_ENVELOPE: Final = "quantization"
"""``hf_quant_config.json`` wraps the fields in ``{"producer": …, "quantization": {…}}``."""
_TAGS: Final = ("quant_method", "quant_algo")
_KV_ALGOS: Final = ("FP8", "NVFP4", "INT8")


_LAYER_KEYS: Final = frozenset({"quant_algo", "group_size"})
_GROUP: Final = F.optional(F.integer(lo=1))


def _layer(value: object) -> ModeloptLayer | Problem:
    if not isinstance(value, dict) or not isinstance(value.get("quant_algo"), str):
        return Problem("type", f"expected {{\"quant_algo\": …}}, got {quote(value)}")
    if not value.keys() <= _LAYER_KEYS:
        odd = sorted(set(value) - _LAYER_KEYS)[0]
        return Problem("unknown", f"a quantized layer has no key {quote(odd)}", at=child_path("", odd))
    group = value.get("group_size")
    if group is not None:
        checked = _GROUP(group)
        if isinstance(checked, Problem):
            return Problem(checked.kind, checked.message, at=".group_size")
    return ModeloptLayer(value["quant_algo"], group)


def _encode_layers(value: tuple[tuple[str, ModeloptLayer], ...]) -> Json:
    return {name: {"quant_algo": layer.quant_algo, **({"group_size": layer.group_size} if layer.group_size is not None else {})}
            for name, layer in value}


_COMMON: Final[tuple[FieldSpec[Any], ...]] = (
    field(AbstractModelopt, "kv_cache_quant_algo", F.optional(F.one_of(_KV_ALGOS))),
    field(AbstractModelopt, "group_size", F.optional(F.integer(lo=1))),
    field(AbstractModelopt, "exclude_modules", MODULES, F.encode_tuple, aliases=("ignore",)),
)
_MIXED: Final = (*_COMMON, field(ModeloptMixed, "quantized_layers", object_of(_layer), _encode_layers))

MODELOPT_SPECS: tuple[TypeSpec[Any], ...] = tuple(
    TypeSpec(cls, fields=_MIXED if cls is ModeloptMixed else _COMMON, variant=(("quant_algo", cls.quant_algo),),
             tag_keys=_TAGS, envelope=MODELOPT_ENVELOPE)
    for cls in (ModeloptFp8, ModeloptNvfp4, ModeloptMixed)
)
_BY_ALGO: Final = {s.cls.quant_algo: s for s in MODELOPT_SPECS}


def _inner(obj: Mapping[str, object]) -> Mapping[str, object]:
    wrapped = obj.get(MODELOPT_ENVELOPE)
    return wrapped if isinstance(wrapped, dict) else obj


def looks_like_modelopt(obj: Mapping[str, object]) -> bool:
    """A document naming no method is ModelOpt's when its producer says so, or when it is an
    ``hf_quant_config.json`` (a ``quantization`` object holding ``quant_algo``)."""
    producer = obj.get("producer")
    if isinstance(producer, dict) and producer.get("name") == "modelopt":
        return True
    wrapped = obj.get(MODELOPT_ENVELOPE)
    return isinstance(wrapped, dict) and "quant_algo" in wrapped


def select_modelopt(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
    """Pick the ModelOpt type from ``quant_algo`` (at the top, or inside ``quantization``)."""
    inner = _inner(obj)
    where = child_path(child_path(at, MODELOPT_ENVELOPE) if inner is not obj else at, "quant_algo")
    algo = inner.get("quant_algo")
    if algo is None:
        return Err((Issue("modelopt.quant_algo.missing", where.rsplit(".", 1)[0] or at, "a ModelOpt config needs 'quant_algo'",
                          "FP8, NVFP4 or MIXED_PRECISION"),))
    spec = _BY_ALGO.get(algo) if isinstance(algo, str) else None
    if spec is None:
        what = quote(algo) if isinstance(algo, str) else f"{type_name(algo)} {quote(algo)}"
        return Err((Issue("modelopt.quant_algo.unsupported", where, f"ModelOpt algorithm {what} is not supported",
                          "supported: " + ", ".join(_BY_ALGO)),))
    return Ok(spec)


MLX_SPEC: TypeSpec[Mlx] = TypeSpec(Mlx, fields=(
    field(Mlx, "bits", F.one_of(MLX_BITS, "MLX quantizes to 2, 3, 4, 5, 6 or 8 bits")),
    field(Mlx, "group_size", F.one_of(MLX_GROUPS, "MLX groups are 32, 64 or 128 weights")),
    field(Mlx, "mode", F.one_of(MLX_MODES)),
))
