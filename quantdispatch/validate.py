"""Schema validation of typed configs: pure, total, dispatched on the config type.

Parsing already checks every value it reads. ``validate`` is for configs built in code, where
annotations are not enforced at run time: it re-checks every field through the codec's own
decoders (one table for both), checks that ``extras`` repeats no modelled key, then applies the
rules across fields that each method registers (``quantdispatch.rules.cross_field_issues``).
It never raises, whatever the config holds (deep nesting, huge integers, wrong types).
"""

from __future__ import annotations

from typing import Any, TypeVar

from . import methods as _methods  # noqa: F401  (registers the built-in rules)
from .codec.fields import Problem
from .codec.registry import spec_for
from .codec.spec import TypeSpec, child_path, issue_at, was_decoded
from .configs.base import AbstractQuantConfig
from .jsonvalue import MAX_JSON_DEPTH, JsonObject, thaw, too_deep
from .result import Err, Issue, Issues, Ok, Result
from .rules import cross_field_issues
from .text import quote

__all__ = ["validate", "field_issues", "cross_field_issues"]

C = TypeVar("C", bound=AbstractQuantConfig)


def _deep_values(config: AbstractQuantConfig, spec: TypeSpec[Any]) -> Issues:
    """Refuse values nested deeper than any walk below may go (before any recursive walk)."""
    issues = []
    for f in spec.fields:
        if f.attr is None:
            continue
        value = getattr(config, f.attr)
        if isinstance(value, (tuple, list, dict, JsonObject)) and too_deep(value):  # scalars: nothing to walk
            issues.append(Issue("json.too_deep", child_path("$", f.key), f"nested deeper than {MAX_JSON_DEPTH} levels"))
    extras: object = config.extras  # a config built in code may hold anything here
    if not isinstance(extras, JsonObject):
        issues.append(Issue("config.extras.type", "$", f"extras must be a JsonObject, got {type(extras).__name__}"))
    elif extras.items and too_deep(extras, MAX_JSON_DEPTH + 1):
        issues.append(Issue("json.too_deep", "$", f"extras are nested deeper than {MAX_JSON_DEPTH} levels"))
    return tuple(issues)


def _check(spec: TypeSpec[Any], key: str, value: Any) -> Issue | None:
    f = spec.by_key[key]
    try:
        back = f.decode(f.encode(value)) if f.attr is not None else f.decode(thaw(value))
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        back = Problem("type", f"{key}={quote(value)} cannot be written as JSON")
    if isinstance(back, Problem):
        return issue_at(spec, key, "$", back)
    if f.attr is not None and (type(back) is not type(value) or back != value):
        return Issue(f"{spec.prefix}.{key}.type", child_path("$", key), f"{f.attr}={quote(value)} does not survive a JSON round trip")
    return None


def field_issues(config: AbstractQuantConfig) -> Issues:
    """Re-check every field of ``config`` with the decoder that parsing would use, and every
    extra: it must not repeat a modelled or discriminator key, and an inert key must be valid."""
    spec = spec_for(type(config))
    if spec is None:
        return (Issue("config.unregistered", "$", f"{type(config).__name__} has no codec entry",
                      "register it with quantdispatch.register_codec"),)
    deep = _deep_values(config, spec)
    if deep:
        return deep
    issues: list[Issue] = []
    for f in spec.fields:
        if f.attr is None:
            continue
        value: Any = getattr(config, f.attr)
        if value is f.default:
            continue  # defaults are valid by construction (a test decodes every default)
        issue = _check(spec, f.key, value)
        if issue is not None:
            issues.append(issue)
    for key, value in config.extras.items:
        if key in spec.reserved:
            issues.append(Issue("config.extras.shadowed", child_path("$", key),
                                f"extras hold {key!r}, which {type(config).__name__} models itself",
                                "set the field instead; an extra must never override it"))
        elif key in spec.by_key:
            issue = _check(spec, key, value)
            if issue is not None:
                issues.append(issue)
    return tuple(issues)


def validate(config: C) -> Result[C, Issues]:
    """Check a config: every field's type and range, its extras, then the rules across fields.

    >>> from quantdispatch import Gptq
    >>> validate(Gptq(bits=4)).value == Gptq(bits=4)
    True
    >>> [i.code for i in validate(Gptq(bits=4, group_size=0)).error]
    ['gptq.group_size.range']
    """
    given: object = config  # untyped callers pass anything
    if not isinstance(given, AbstractQuantConfig):
        return Err((Issue("config.type", "$", f"expected a quantization config, got {type(given).__name__}"),))
    if config._checked >= 2:  # this very object was accepted before; configs are immutable
        return Ok(config)
    issues = () if was_decoded(config) else field_issues(config)  # parsing checked the fields already
    if not issues:
        issues = cross_field_issues(config)
    if issues:
        return Err(issues)
    object.__setattr__(config, "_checked", 2)
    return Ok(config)
