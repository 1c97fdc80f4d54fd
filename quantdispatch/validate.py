"""Schema validation of typed configs: pure, total, dispatched on the config type.

Parsing already checks every value it reads. ``validate`` is for configs built in code, where
annotations are not enforced at run time: it re-checks every field through the codec's own
decoders (one table for both), then the cross-field rules of each type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import plum

from .codec.registry import spec_for
from .codec.spec import child_path
from .codec.fields import Problem
from .codec.gguf import misaligned
from .configs.base import AbstractQuantConfig
from .configs.bnb import Bnb4Bit
from .configs.gguf import Gguf
from .result import Err, Issue, Issues, Ok, Result

__all__ = ["validate", "cross_field_issues"]

C = TypeVar("C", bound=AbstractQuantConfig)
_dispatch = plum.Dispatcher(warn_redefinition=True)


@overload
def _cross_field_issues(config: Bnb4Bit, /) -> Issues:
    if not config.compute_dtype.is_floating_point:
        return (Issue("bnb.bnb_4bit_compute_dtype.not_float", "$.bnb_4bit_compute_dtype",
                      f"4-bit layers compute in a floating-point dtype, not {config.compute_dtype.value}",
                      "use float16, bfloat16 or float32"),)
    return ()


@overload
def _cross_field_issues(config: Gguf, /) -> Issues:
    names = [t.name for t in config.tensors]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        return (Issue("gguf.tensor.duplicate_name", "$.tensors", f"tensor {dup!r} appears more than once"),)
    return tuple(issue for i, t in enumerate(config.tensors) if (issue := misaligned(i, t)) is not None)


@overload
def _cross_field_issues(config: AbstractQuantConfig, /) -> Issues:
    return ()


@_dispatch
def _cross_field_issues(config: AbstractQuantConfig, /) -> Issues:
    raise AssertionError("unreachable: plum calls the @overload bodies")


_RESOLVED: dict[type, Callable[[Any], Issues]] = {}


def cross_field_issues(config: AbstractQuantConfig, /) -> Issues:
    """Return the issues that involve more than one field of ``config`` (empty when none).

    Dispatched on the config type; the resolution is cached per type.
    """
    impl = _RESOLVED.get(type(config))
    if impl is None:
        function: Any = _cross_field_issues
        impl = _RESOLVED[type(config)] = function.resolve_method((config,))[0]
    return impl(config)


def field_issues(config: AbstractQuantConfig) -> Issues:
    """Re-check every field of ``config`` with the decoder that parsing would use."""
    spec = spec_for(type(config))
    if spec is None:
        return (Issue("config.unregistered", "$", f"{type(config).__name__} has no codec entry",
                      "register it with quantdispatch.register_codec"),)
    issues: list[Issue] = []
    for f in spec.fields:
        if f.attr is None:
            continue
        value: Any = getattr(config, f.attr)
        if value is f.default:
            continue  # defaults are valid by construction (a test decodes every default)
        try:
            back = f.decode(f.encode(value))
        except (TypeError, ValueError, AttributeError, KeyError):
            back = Problem("type", f"{f.attr}={value!r} cannot be written as JSON")
        if isinstance(back, Problem):
            issues.append(Issue(f"{spec.prefix}.{f.key}.{back.kind}", child_path("$", f.key), back.message, back.hint))
        elif back != value:
            issues.append(Issue(f"{spec.prefix}.{f.key}.type", child_path("$", f.key), f"{f.attr}={value!r} does not survive a JSON round trip"))
    return tuple(issues)


def validate(config: C) -> Result[C, Issues]:
    """Check a config: every field's type and range, then the rules across fields.

    >>> from quantdispatch import Gptq
    >>> validate(Gptq(bits=4)).value == Gptq(bits=4)
    True
    >>> [i.code for i in validate(Gptq(bits=4, group_size=0)).error]
    ['gptq.group_size.range']
    """
    issues = field_issues(config)
    if not issues:
        issues = cross_field_issues(config)
    return Err(issues) if issues else Ok(config)
