"""Type specs: everything the codec knows about one config type, as data.

A ``TypeSpec`` lists a config type's JSON fields, the discriminator keys that select it, its
loading attributes and how Transformers 5 writes it. ``decode_object`` and ``encode_object`` are the
two generic directions that every built-in and third-party type shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ..configs.base import AbstractQuantConfig, Wire
from ..jsonvalue import FrozenJson, Json, JsonObject, freeze, thaw
from ..result import Err, Issue, Issues, Ok, Result
from .fields import FieldSpec, Problem

__all__ = ["TypeSpec", "decode_object", "encode_object", "child_path"]

C = TypeVar("C", bound=AbstractQuantConfig)


def child_path(at: str, key: str) -> str:
    """Append an object key to a JSON path, quoting it when it is not an identifier."""
    return f"{at}.{key}" if key.isidentifier() else f'{at}["{key}"]'


@attrs.frozen
class TypeSpec(Generic[C]):
    """The codec entry of one config type.

    Attributes:
        cls: The config type.
        prefix: The issue-code family (``"gptq"``).
        tags: The discriminator keys and their canonical values, written by ``dump`` for a config
            built in code (``(("quant_method", "gptq"), ("format", "gptq_v2"))``).
        tag_keys: Every key the discriminator reads for this family (consumed, kept in the wire).
        fields: The modelled keys, in the order ``dump`` writes them.
        loading_attributes: Keys a user's config may override on a pre-quantized checkpoint
            (Transformers' ``get_loading_attributes``).
        to_transformers: Writes what Transformers 5 puts in ``config.json`` for this config, or
            ``None`` when Transformers has no such config (third-party types).
    """

    cls: type[C]
    prefix: str
    tags: tuple[tuple[str, Json], ...]
    tag_keys: tuple[str, ...]
    fields: tuple[FieldSpec[Any], ...]
    loading_attributes: tuple[str, ...] = ()
    to_transformers: Callable[[C], dict[str, Json]] | None = None

    by_key: dict[str, FieldSpec[Any]] = attrs.field(init=False, eq=False, repr=False)
    defaults: dict[str, Any] = attrs.field(init=False, eq=False, repr=False)
    required: tuple[FieldSpec[Any], ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Lookup tables built once, so that decoding walks the document, not the field list.
        object.__setattr__(self, "by_key", {k: f for f in self.fields for k in f.keys})
        object.__setattr__(self, "defaults", {f.attr: f.default for f in self.fields if f.attr is not None})
        object.__setattr__(self, "required", tuple(f for f in self.fields if f.required))

    def field_for(self, key: str) -> FieldSpec[Any] | None:
        """Return the field that reads ``key`` (as its key or an alias)."""
        return self.by_key.get(key)


def _issue(spec: TypeSpec[Any], key: str, at: str, p: Problem) -> Issue:
    return Issue(f"{spec.prefix}.{key}.{p.kind}", child_path(at, key), p.message, p.hint)


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def decode_object(spec: TypeSpec[C], obj: Mapping[str, object], at: str) -> Result[C, Issues]:
    """Decode a JSON object into ``spec.cls``, collecting every issue.

    Keys no field or tag reads become ``extras``; the raw values of the others go into the
    config's ``Wire`` so that ``encode_object`` can write the document back unchanged.

    Raises:
        ValueError: A value is not JSON (``parse`` turns this into an issue).
    """
    values = dict(spec.defaults)
    seen: dict[str, tuple[str, object]] = {}
    issues: list[Issue] = []
    raw: list[tuple[str, FrozenJson]] = []
    extras: list[tuple[str, FrozenJson]] = []
    for key, value in obj.items():
        if type(key) is not str:
            raise ValueError(f"object keys must be strings, got {key!r}")
        f = spec.by_key.get(key)
        if f is None:
            (raw if key in spec.tag_keys else extras).append((key, freeze(value)))  # type: ignore[arg-type]
            continue
        # Scalars (most values) are their own frozen form; skip the call for them.
        raw.append((key, value if type(value) in _PLAIN_SCALARS else freeze(value)))  # type: ignore[arg-type]
        decoded = f.decode(value)
        if isinstance(decoded, Problem):
            issues.append(_issue(spec, key, at, decoded))
            seen.setdefault(f.key, (key, decoded))
        elif f.attr is not None:
            first = seen.setdefault(f.key, (key, decoded))
            if first[0] != key and (type(first[1]) is not type(decoded) or first[1] != decoded):
                msg = f"{first[0]!r} says {obj[first[0]]!r} but {key!r} says {value!r}"
                issues.append(Issue(f"{spec.prefix}.{f.key}.conflict", child_path(at, key), msg, "keep one of them"))
            values[f.attr] = decoded
    issues += [Issue(f"{spec.prefix}.{f.key}.missing", at, f"required key {f.key!r} is missing") for f in spec.required if f.key not in seen]
    if issues:
        return Err(tuple(issues))
    wire = Wire(keys=tuple(obj), raw=JsonObject(tuple(raw)))
    return Ok(spec.cls(**values, extras=JsonObject(tuple(extras)), wire=wire))


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def encode_object(spec: TypeSpec[C], config: C) -> dict[str, Json]:
    """Encode a config as JSON, reproducing its source document where it has one.

    For each key of the source, in order: an extra is written as it was; a modelled key is written
    with its source spelling while that still decodes to the field's current value, else in its
    canonical spelling; tags and keys without a field are written as they were. Fields the source
    lacked are added only when they differ from the default. A config built in code (no source)
    is written in full: its tags, then every field, then its extras.
    """
    wire, out = config.wire, {}
    if not wire.keys:
        out = {k: v for k, v in spec.tags}
        for f in spec.fields:
            if f.attr is not None:
                out[f.key] = f.encode(getattr(config, f.attr))
        out.update((k, thaw(v)) for k, v in config.extras.items)
        return out
    for key in wire.keys:
        if key in config.extras:
            out[key] = thaw(config.extras.get(key))
        elif wire.has(key):
            raw = thaw(wire.get(key))
            field = spec.field_for(key)
            if field is None or field.attr is None or _same(field.decode(raw), getattr(config, field.attr)):
                out[key] = raw
            else:
                out[key] = field.encode(getattr(config, field.attr))
    for f in spec.fields:
        if f.attr is not None and not any(wire.has(k) for k in f.keys):
            current = getattr(config, f.attr)
            if f.required or not _same(current, f.default):
                out[f.key] = f.encode(current)
    out.update((k, thaw(v)) for k, v in config.extras.items if k not in out)
    return out
