"""JSON values, plain and frozen.

``Json`` is what ``json.loads`` returns. ``FrozenJson`` is the same data made immutable and
hashable (lists become tuples, objects become ``JsonObject``), so that config values can carry
unmodelled keys and still be frozen, hashable and structurally comparable.

>>> frozen = freeze({"a": [1, {"b": None}]})
>>> thaw(frozen)
{'a': [1, {'b': None}]}
>>> hash(frozen) == hash(freeze({"a": [1, {"b": None}]}))
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TypeAlias, cast

import attrs

__all__ = [
    "Json", "FrozenJson", "JsonObject", "EMPTY_OBJECT", "MAX_JSON_DEPTH", "freeze", "freeze_bounded", "thaw", "type_name", "too_deep",
    "TooDeepError",
]

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects any config may have. Real configs nest 4 levels
(compressed-tensors); every recursive walk over JSON (freeze, thaw, equality, hashing) happens
only after ``too_deep`` has checked this bound, without recursion."""

Json: TypeAlias = "None | bool | int | float | str | list[Json] | dict[str, Json]"
FrozenJson: TypeAlias = "None | bool | int | float | str | tuple[FrozenJson, ...] | JsonObject"


@attrs.frozen
class JsonObject:
    """An immutable, ordered JSON object: a tuple of ``(key, value)`` pairs with unique keys."""

    items: tuple[tuple[str, FrozenJson], ...] = ()
    _index: dict[str, FrozenJson] | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def _lookup(self) -> dict[str, FrozenJson]:
        # Built on first lookup, so that lookups stay O(1) and freezing stays cheap.
        index = self._index
        if index is None:
            index = dict(self.items)
            object.__setattr__(self, "_index", index)
        return index

    def get(self, key: str) -> FrozenJson | None:
        """Return the value under ``key``, or ``None`` when absent."""
        return self._lookup().get(key)

    def keys(self) -> tuple[str, ...]:
        """Return the keys in order."""
        return tuple(k for k, _ in self.items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items)


EMPTY_OBJECT = JsonObject()


_SCALARS = (str, int, bool, type(None))
_FLAT: frozenset[type] = frozenset(_SCALARS)
_STR: frozenset[type] = frozenset({str})


def freeze(value: Json) -> FrozenJson:
    """Turn a JSON value into its frozen, hashable form.

    Raises:
        ValueError: ``value`` is not JSON: a non-string key, NaN or infinity, another type.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, list):
        if set(map(type, value)) <= _FLAT:  # the common case, long module lists: no call per element
            return tuple(cast("list[FrozenJson]", value))
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        if not set(map(type, value)) <= _STR:
            raise ValueError("object keys must be strings")
        if set(map(type, value.values())) <= _FLAT:  # a flat object: its items are already frozen
            return JsonObject(tuple(cast("dict[str, FrozenJson]", value).items()))
        return JsonObject(tuple((k, freeze(v)) for k, v in value.items()))
    raise ValueError(f"{type(value).__name__} is not a JSON type")


class TooDeepError(ValueError):
    """A value nests deeper than ``MAX_JSON_DEPTH``; raised before the walk goes any deeper."""


def freeze_bounded(value: Json, limit: int = MAX_JSON_DEPTH) -> FrozenJson:
    """``freeze``, refusing values nested deeper than ``limit`` in the same single walk
    (``too_deep`` then ``freeze`` walk twice). Recursion is bounded by ``limit``.

    Raises:
        TooDeepError: ``value`` nests arrays and objects deeper than ``limit``.
        ValueError: ``value`` is not JSON.
    """
    if isinstance(value, _SCALARS) or isinstance(value, float):
        return freeze(value)
    if limit <= 0:
        raise TooDeepError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list):
        if set(map(type, value)) <= _FLAT:
            return tuple(cast("list[FrozenJson]", value))
        return tuple(cast("FrozenJson", v) if type(v) in _FLAT else freeze_bounded(v, limit - 1) for v in value)
    if isinstance(value, dict):
        if not set(map(type, value)) <= _STR:
            raise ValueError("object keys must be strings")
        if set(map(type, value.values())) <= _FLAT:
            return JsonObject(tuple(cast("dict[str, FrozenJson]", value).items()))
        return JsonObject(tuple((k, cast("FrozenJson", v) if type(v) in _FLAT else freeze_bounded(v, limit - 1)) for k, v in value.items()))
    raise ValueError(f"{type(value).__name__} is not a JSON type")


def thaw(value: FrozenJson) -> Json:
    """Turn a frozen JSON value back into plain lists and dicts."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, JsonObject):
        return {k: thaw(v) for k, v in value.items}
    return value


_LEAVES: frozenset[type] = frozenset({*_SCALARS, float})


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Return whether ``value`` nests arrays and objects (plain or frozen) deeper than ``limit``.

    Iterative, so that it is safe on any value, and linear in the size of the value.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict, JsonObject)):
            if depth >= limit:
                return True
            if isinstance(item, dict):
                children: object = item.values()
            elif isinstance(item, JsonObject):
                children = [v for _, v in item.items]
            else:
                children = item
            if set(map(type, children)) <= _LEAVES:  # type: ignore[call-overload]
                continue  # a flat array or object (most are): nothing deeper to visit
            stack.extend((c, depth + 1) for c in children)  # type: ignore[attr-defined]
    return False


def type_name(value: object) -> str:
    """Name the JSON type of ``value`` for messages: ``string``, ``integer``, ``object`` …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (dict, JsonObject)):
        return "object"
    return type(value).__name__
