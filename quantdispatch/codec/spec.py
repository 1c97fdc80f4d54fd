"""Type specs: everything the codec knows about one config type, as data.

A ``TypeSpec`` lists a config type's JSON fields, the discriminator keys that select it, its
loading attributes and how Transformers 5 writes it. ``decode_object`` and ``encode_object`` are the
two generic directions that every built-in and third-party type shares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ..configs.base import AbstractQuantConfig
from ..jsonvalue import MAX_JSON_DEPTH, FrozenJson, Json, JsonObject, TooDeepError, freeze_bounded, thaw
from ..result import Err, Issue, Issues, Ok, Result
from ..text import MAX_QUOTE, quote
from .fields import FieldSpec, Problem

__all__ = ["TypeSpec", "decode_object", "encode_object", "canonical", "child_path", "was_decoded", "TooDeepError"]

C = TypeVar("C", bound=AbstractQuantConfig)


def child_path(at: str, key: str) -> str:
    """Append an object key to a JSON path, quoting it when it is not an identifier."""
    if key.isidentifier() and key.isascii():
        return f"{at}.{key}"
    return f"{at}[{json.dumps(key if len(key) <= MAX_QUOTE else key[:MAX_QUOTE] + '…')}]"


@attrs.frozen
class TypeSpec(Generic[C]):
    """The codec entry of one config type.

    Attributes:
        cls: The config type; ``cls.method`` is the ``quant_method`` it is written with.
        fields: The known keys, typed (``field``) and inert (``inert``), in the order ``dump``
            writes them.
        variant: The discriminator keys besides ``quant_method`` that name this type, with the
            values a canonical dump writes (``(("format", "gptq_v2"),)``).
        tag_keys: Every key the discriminator reads for this family. They name the type, so they
            are neither fields nor extras.
        prefix: The issue-code family (``"gptq"``); ``cls.method`` when empty.
        loading_attributes: Attributes a user's config may override on a pre-quantized checkpoint
            (Transformers' ``get_loading_attributes``).
        to_transformers: Writes what Transformers 5 puts in ``config.json`` for this config, or
            ``None`` when Transformers has no such config (third-party types).
        envelope: A key under which the format may nest its fields (ModelOpt's
            ``hf_quant_config.json``: ``{"producer": …, "quantization": {…}}``); both spellings
            decode to the same value, and the canonical dump writes the flat one.
    """

    cls: type[C]
    fields: tuple[FieldSpec[Any], ...]
    variant: tuple[tuple[str, Json], ...] = ()
    tag_keys: tuple[str, ...] = ("quant_method",)
    prefix: str = ""
    loading_attributes: tuple[str, ...] = ()
    to_transformers: Callable[[C], dict[str, Json]] | None = None
    envelope: str | None = None

    by_key: dict[str, FieldSpec[Any]] = attrs.field(init=False, eq=False, repr=False)
    defaults: dict[str, Any] = attrs.field(init=False, eq=False, repr=False)
    required: tuple[FieldSpec[Any], ...] = attrs.field(init=False, eq=False, repr=False)
    reserved: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Lookup tables built once, so that decoding walks the document, not the field list.
        object.__setattr__(self, "prefix", self.prefix or self.cls.method)
        object.__setattr__(self, "by_key", {k: f for f in self.fields for k in f.keys})
        object.__setattr__(self, "defaults", {f.attr: f.default for f in self.fields if f.attr is not None})
        object.__setattr__(self, "required", tuple(f for f in self.fields if f.required))
        typed_keys = {k for f in self.fields if f.attr is not None for k in f.keys}
        object.__setattr__(self, "reserved", frozenset(typed_keys | set(self.tag_keys)))

    @property
    def tags(self) -> tuple[tuple[str, Json], ...]:
        """The discriminator keys and values a canonical dump starts with."""
        return (("quant_method", self.cls.method), *self.variant)

    def field_for(self, key: str) -> FieldSpec[Any] | None:
        """Return the field that reads ``key`` (as its key or an alias)."""
        return self.by_key.get(key)


def issue_at(spec: TypeSpec[Any], key: str, at: str, p: Problem) -> Issue:
    """The issue for a problem with ``key``'s value, located inside it where the decoder says."""
    return Issue(f"{spec.prefix}.{key}.{p.kind}", child_path(at, key) + p.at, p.message, p.hint)


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def decode_object(spec: TypeSpec[C], obj: Mapping[str, object], at: str) -> Result[C, Issues]:
    """Decode a JSON object into ``spec.cls``, collecting every issue.

    Typed keys fill fields; inert keys are checked and, like unknown keys, kept in ``extras``;
    discriminator keys are consumed. The object itself, frozen, becomes the config's ``source``.
    Where the spec has an ``envelope`` and the object nests its fields under it, they are read
    from there (located under it); the keys beside it are read as usual.

    Raises:
        ValueError: A value is not JSON (``parse`` turns this into an issue).
    """
    values = dict(spec.defaults)
    seen: dict[str, tuple[str, object]] = {}
    issues: list[Issue] = []
    source: list[tuple[str, FrozenJson]] = []
    extras: list[tuple[str, FrozenJson]] = []
    wrapped = obj.get(spec.envelope) if spec.envelope is not None else None
    nested = spec.envelope if isinstance(wrapped, dict) else None
    _decode_items(spec, obj, at, values, seen, issues, source, extras, nested)
    if nested is not None:
        assert isinstance(wrapped, dict)
        envelope = next(v for k, v in source if k == nested)  # frozen with the document: not frozen twice
        assert isinstance(envelope, JsonObject)
        _decode_items(spec, wrapped, child_path(at, nested), values, seen, issues, [], extras, None, envelope)
    issues += [Issue(f"{spec.prefix}.{f.key}.missing", at, f"required key {f.key!r} is missing") for f in spec.required if f.key not in seen]
    if issues:
        return Err(tuple(issues))
    config = spec.cls(**values, extras=JsonObject(tuple(extras)), source=JsonObject(tuple(source)))
    object.__setattr__(config, "_checked", 1)  # its fields are valid as decoded: validate need not decode them again
    return Ok(config)


def was_decoded(config: AbstractQuantConfig) -> bool:
    """Whether ``config``'s fields came from the codec's decoders (every field went through its
    decoder, every extra is an unmodelled or checked key, the depth was bounded), so ``validate``
    need only apply the rules across fields. A config made with ``attrs.evolve`` is a new object
    and is checked in full."""
    return config._checked >= 1


def _decode_items(spec: TypeSpec[Any], obj: Mapping[str, object], at: str, values: dict[str, Any], seen: dict[str, tuple[str, object]],
                  issues: list[Issue], source: list[tuple[str, FrozenJson]], extras: list[tuple[str, FrozenJson]], skip: str | None,
                  known: JsonObject | None = None) -> None:
    for key, value in obj.items():
        if type(key) is not str:
            raise ValueError(f"object keys must be strings, got {quote(key)}")
        # Scalars (most values) are their own frozen form; skip the calls for them.
        if known is not None:
            frozen: FrozenJson = known.get(key)  # inside an envelope frozen (and depth-checked) already
        elif type(value) in _PLAIN_SCALARS:
            frozen = value  # type: ignore[assignment]
        else:  # frozen and depth-checked in one walk, before any decoder recurses into it
            frozen = freeze_bounded(value, MAX_JSON_DEPTH - 1)  # type: ignore[arg-type]
        source.append((key, frozen))
        if key == skip:
            continue  # the envelope: its keys are read next
        f = spec.by_key.get(key)
        if f is None:
            if key not in spec.tag_keys:
                extras.append((key, frozen))
            continue
        decoded = f.decode(value)
        if isinstance(decoded, Problem):
            issues.append(issue_at(spec, key, at, decoded))
            seen.setdefault(f.key, (key, decoded))
        elif f.attr is None:
            extras.append((key, frozen))
        else:
            first = seen.setdefault(f.key, (key, decoded))
            if first[0] != key and (type(first[1]) is not type(decoded) or first[1] != decoded):
                msg = f"{first[0]!r} says {quote(obj.get(first[0], '(outside)'))} but {key!r} says {quote(value)}"
                issues.append(Issue(f"{spec.prefix}.{f.key}.conflict", child_path(at, key), msg, "keep one of them"))
            values[f.attr] = decoded


def encode_object(spec: TypeSpec[C], config: C) -> dict[str, Json]:
    """Encode a config as JSON: its source document while that still decodes to this very value
    (so ``dump(parse(d)) == d``, spelling and key order included), else ``canonical``."""
    if config.source is not None:
        document = thaw(config.source)
        assert isinstance(document, dict)
        again = decode_object(spec, document, "$")
        if isinstance(again, Ok) and again.value == config:
            return document
    return canonical(spec, config)


def canonical(spec: TypeSpec[C], config: C) -> dict[str, Json]:
    """The canonical JSON of a config: its tags, its typed fields (loading attributes only when
    set), then its extras. An extra never overrides a typed field or a tag."""
    out: dict[str, Json] = dict(spec.tags)
    for f in spec.fields:
        if f.attr is None:
            continue
        value = getattr(config, f.attr)
        if f.omit_default and not f.required and type(value) is type(f.default) and value == f.default:
            continue
        out[f.key] = f.encode(value)
    out.update((k, thaw(v)) for k, v in config.extras.items if k not in spec.reserved and k not in out)
    return out
