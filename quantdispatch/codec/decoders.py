"""Decoders shared by the families added after the core four: small frozen classes, total.

Each takes raw JSON and returns a value or a ``Problem`` (never raises); the nested ones locate
what they find with ``Problem.at`` (``[3]``, ``.group_0.weights.num_bits``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from ..configs.base import AbstractQuantConfig
from ..jsonvalue import Json, JsonObject, thaw, type_name
from ..text import quote
from .fields import FieldSpec, Problem, json_object, optional, string_tuple
from .spec import child_path

__all__ = [
    "lower_one_of", "int_tuple", "module_patterns", "object_of", "encode_int_tuple", "json_object", "optional_object",
    "regex_problem", "MODULES", "TransformersDict",
]

L = TypeVar("L", bound=str)
T = TypeVar("T")


@attrs.frozen
class lower_one_of(Generic[L]):  # noqa: N801 - a decoder, named like those in fields.py
    """Decode one of ``allowed``, compared case-insensitively (Transformers lower-cases these)."""

    allowed: tuple[L, ...]

    def __call__(self, value: object) -> L | Problem:
        if isinstance(value, str):
            low = value.lower()
            for a in self.allowed:
                if a == low:
                    return a
        return Problem("not_allowed", f"expected one of {', '.join(map(repr, self.allowed))} (any case), got {quote(value)}")


@attrs.frozen
class int_tuple:  # noqa: N801
    """Decode an array of ``length`` integers, each at least ``lo`` (``weight_block_size``)."""

    length: int
    lo: int = 1

    def __call__(self, value: object) -> tuple[int, ...] | Problem:
        if not isinstance(value, list) or len(value) != self.length:
            return Problem("type", f"expected an array of {self.length} integers, got {type_name(value)} {quote(value)}")
        for i, v in enumerate(value):
            if type(v) is not int or not self.lo <= v < 2**63:
                return Problem("range", f"expected an integer ≥ {self.lo}, got {quote(v)}", at=f"[{i}]")
        return tuple(value)


def encode_int_tuple(value: tuple[int, ...] | None) -> Json:
    """Encode a tuple of integers as an array (``null`` for ``None``)."""
    return None if value is None else list(value)


_REGEX_PREFIX = "re:"


@attrs.frozen
class module_patterns:  # noqa: N801
    """Decode a list of module names or patterns; entries starting with ``re:`` (compressed-tensors,
    vLLM) must be valid regular expressions, which Transformers never checks before a load."""

    regex_prefix: str = _REGEX_PREFIX

    def __call__(self, value: object) -> tuple[str, ...] | Problem:
        if not isinstance(value, list):
            return Problem("type", f"expected an array of module names, got {type_name(value)} {quote(value)}")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                return Problem("type", f"expected a module name, got {type_name(v)} {quote(v)}", at=f"[{i}]")
            if self.regex_prefix and v.startswith(self.regex_prefix):
                problem = regex_problem(v[len(self.regex_prefix):])
                if problem is not None:
                    return Problem("pattern", f"{quote(v)} is not a valid regular expression: {problem}",
                                   "escape the dots and brackets of module names (\\\\.)", at=f"[{i}]")
        return tuple(value)


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` does not compile, or ``None`` when it does (bounded: patterns are short)."""
    if len(pattern) > 4096:
        return "longer than 4096 characters"
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        return str(e)
    return None


@attrs.frozen
class object_of(Generic[T]):  # noqa: N801
    """Decode a JSON object whose values all decode with ``inner``, into ``((key, value), ...)``;
    a problem inside a value is located under its key."""

    inner: Callable[[object], T | Problem]

    def __call__(self, value: object) -> tuple[tuple[str, T], ...] | Problem:
        if not isinstance(value, dict):
            return Problem("type", f"expected an object, got {type_name(value)} {quote(value)}")
        out: list[tuple[str, T]] = []
        for k, v in value.items():
            decoded = self.inner(v)
            if isinstance(decoded, Problem):
                return decoded.within(_key_path(k))
            out.append((k, decoded))
        return tuple(out)


def _key_path(key: str) -> str:
    return child_path("", key)


def optional_object(value: object) -> JsonObject | None | Problem:
    """``null`` or any JSON object, frozen."""
    return None if value is None else json_object(value)


MODULES: Final = optional(string_tuple)
"""``null`` or an array of module names (``modules_to_not_convert``)."""


@attrs.frozen
class TransformersDict:
    """What a Transformers 5 config class's ``to_dict()`` writes, derived from the field table:
    ``quant_method`` and every typed field (``drop`` names keys its ``to_dict`` leaves out;
    ``fill`` gives the value its ``__init__``/``post_init`` substitutes for ``None``)."""

    fields: tuple[FieldSpec[Any], ...]
    drop: tuple[str, ...] = ()
    fill: tuple[tuple[str, Json], ...] = ()
    keep_extras: bool = False

    def __call__(self, config: AbstractQuantConfig) -> dict[str, Json]:
        out: dict[str, Json] = {"quant_method": config.method}
        for f in self.fields:
            if f.attr is not None and f.key not in self.drop:
                out[f.key] = f.encode(getattr(config, f.attr))
        for key, value in self.fill:
            if out.get(key) is None:
                out[key] = value
        if self.keep_extras:
            out.update((k, thaw(v)) for k, v in config.extras.items if k not in out)
        return out
