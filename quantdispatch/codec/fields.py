"""Field codecs: how one JSON key becomes one typed field, and back.

A ``FieldSpec`` pairs a JSON key with a config attribute, a total decoder (raw JSON → value or a
``Problem``) and an encoder (value → canonical JSON). The same table drives ``parse`` and ``dump``,
so the two directions cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from ..dtypes import DType
from ..jsonvalue import Json, JsonObject, freeze, thaw, type_name
from ..text import digits, quote

__all__ = [
    "Problem", "FieldSpec", "Decoder", "boolean", "one_of", "integer", "number", "text", "optional",
    "string_tuple", "nested_string_tuple", "dtype", "json_object", "any_json", "field", "inert",
]

T = TypeVar("T")
L = TypeVar("L")


@attrs.frozen
class Problem:
    """What a decoder found wrong with one value; the codec adds the code prefix and the path.

    Attributes:
        kind: The last part of the issue code: ``type``, ``not_allowed``, ``range`` …
        message: What is wrong, quoting the value.
        hint: What to write instead.
        at: Where inside the value, as a relative JSON path (``[2].weights.num_bits``), for
            decoders of nested structures; empty when the problem is the value as a whole.
    """

    kind: str
    message: str
    hint: str | None = None
    at: str = ""

    def within(self, prefix: str) -> Problem:
        """The same problem, located ``prefix`` deeper (``prefix`` comes first in the path)."""
        return attrs.evolve(self, at=prefix + self.at)


Decoder = Callable[[object], "T | Problem"]


@attrs.frozen
class FieldSpec(Generic[T]):
    """One JSON key of a config type.

    Build them with ``field`` (a typed attribute; key and default come from the attrs field) or
    ``inert`` (a key the format knows that does not change the load: checked, kept in extras).

    Attributes:
        key: The key ``dump`` writes.
        attr: The config attribute it fills; ``None`` for an inert key (calibration settings, the
            8-bit threshold in a 4-bit config): its value is checked and kept in ``extras``.
        decode: Raw JSON to value, or a ``Problem``. Must never raise.
        encode: Value to canonical JSON.
        default: The value when the key is absent (Transformers' default).
        required: Absence is an issue.
        aliases: Other keys meaning the same (legacy spellings); where several are present they
            must agree.
        omit_default: The canonical dump leaves the key out while it holds its default (loading
            attributes that are usually unset).
    """

    key: str
    attr: str | None
    decode: Callable[[object], T | Problem]
    encode: Callable[[T], Json]
    default: T
    required: bool = False
    aliases: tuple[str, ...] = ()
    omit_default: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """The primary key and its aliases."""
        return (self.key, *self.aliases)


def _plain(value: Any) -> Json:
    return value  # type: ignore[no-any-return]


PLAIN: Final = _plain



def field(cls: type, attr: str, decode: Callable[[object], T | Problem], encode: Callable[[T], Json] = PLAIN, *,
          key: str | None = None, aliases: tuple[str, ...] = (), omit_default: bool = False) -> FieldSpec[T]:
    """The codec entry of attribute ``attr`` of ``cls``: the JSON key is ``attr`` unless given, the
    default is the attrs field's own, and a field without a default is required."""
    a = getattr(attrs.fields(cls), attr)
    required = a.default is attrs.NOTHING
    default: Any = None if required else a.default
    return FieldSpec(key or attr, attr, decode, encode, default, required=required, aliases=aliases,
                     omit_default=omit_default)


def inert(key: str, decode: Callable[[object], object | Problem]) -> FieldSpec[Any]:
    """A known key that does not change the load: checked when parsed, then kept in ``extras``."""
    return FieldSpec(key, None, decode, PLAIN, None)


def boolean(value: object) -> bool | Problem:
    """Decode a JSON boolean (``1`` and ``"true"`` are not booleans)."""
    if isinstance(value, bool):
        return value
    return Problem("type", f"expected a boolean, got {type_name(value)} {quote(value)}", "write true or false")


@attrs.frozen
class one_of(Generic[L]):  # noqa: N801 - a decoder, named like the functions beside it
    """Decode one of ``allowed``, compared by type and value (``True`` is not ``1``)."""

    allowed: tuple[L, ...]
    hint: str | None = None

    def __call__(self, value: object) -> L | Problem:
        for a in self.allowed:
            if type(value) is type(a) and value == a:
                return a
        listed = ", ".join(repr(a) for a in self.allowed)
        return Problem("not_allowed", f"expected one of {listed}, got {quote(value)}", self.hint)


INT64_MAX: Final = 2**63 - 1


@attrs.frozen
class integer:  # noqa: N801
    """Decode an integer in ``[lo, hi]`` or in ``also``; without ``hi``, at most ``INT64_MAX``
    (a larger count or size reaches no tensor library)."""

    lo: int | None = None
    hi: int | None = None
    also: tuple[int, ...] = ()

    def __call__(self, value: object) -> int | Problem:
        if isinstance(value, float) and value.is_integer() and math.isfinite(value) and abs(value) < 1e18:
            return Problem("type", f"expected an integer, got {value!r}", f"write {int(value)}")
        if not isinstance(value, int) or isinstance(value, bool):
            return Problem("type", f"expected an integer, got {type_name(value)} {quote(value)}")
        lo, hi = self.lo, INT64_MAX if self.hi is None else self.hi
        if value in self.also or ((lo is None or value >= lo) and value <= hi):
            return value
        bounds = f"in [{lo}, {hi}]" if lo is not None else f"≤ {hi}"
        extra = f" or one of {list(self.also)}" if self.also else ""
        return Problem("range", f"expected an integer {bounds}{extra}, got {quote(value)}")


@attrs.frozen
class number:  # noqa: N801
    """Decode a finite number (an integer is accepted and read as a float) within bounds."""

    lo: float | None = None
    hi: float | None = None
    open_interval: bool = False

    def __call__(self, value: object) -> float | Problem:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Problem("type", f"expected a number, got {type_name(value)} {quote(value)}")
        try:
            x = float(value)
        except OverflowError:  # an integer beyond the float range (1e309 written out in digits)
            return Problem("range", f"expected a finite number, got an integer of {digits(int(value))} digits")
        if not math.isfinite(x):
            return Problem("range", f"expected a finite number, got {value!r}")
        lo, hi = self.lo, self.hi
        low_ok = lo is None or (x > lo if self.open_interval else x >= lo)
        high_ok = hi is None or (x < hi if self.open_interval else x <= hi)
        if low_ok and high_ok:
            return x
        brackets = "()" if self.open_interval else "[]"
        return Problem("range", f"expected a number in {brackets[0]}{lo}, {hi}{brackets[1]}, got {quote(value)}")


def text(value: object) -> str | Problem:
    """Decode a JSON string."""
    if isinstance(value, str):
        return value
    return Problem("type", f"expected a string, got {type_name(value)} {quote(value)}")


@attrs.frozen
class optional(Generic[T]):  # noqa: N801
    """Accept ``null`` as ``None``, anything else through ``inner``."""

    inner: Callable[[object], T | Problem]

    def __call__(self, value: object) -> T | None | Problem:
        return None if value is None else self.inner(value)


def string_tuple(value: object) -> tuple[str, ...] | Problem:
    """Decode an array of strings into a tuple."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return Problem("type", f"expected an array of strings, got {type_name(value)} {quote(value)}")
    return tuple(value)


def nested_string_tuple(value: object) -> tuple[tuple[str, ...], ...] | Problem:
    """Decode an array of arrays of strings (``modules_in_block_to_quantize``)."""
    if not isinstance(value, list) or not all(
        isinstance(row, list) and all(isinstance(v, str) for v in row) for row in value
    ):
        return Problem("type", f"expected an array of arrays of strings, got {quote(value)}")
    return tuple(tuple(row) for row in value)


@attrs.frozen
class dtype:  # noqa: N801
    """Decode a dtype name (``"bfloat16"``, also ``"torch.bfloat16"``)."""

    allowed: tuple[DType, ...] = tuple(DType)

    def __call__(self, value: object) -> DType | Problem:
        if not isinstance(value, str):
            return Problem("type", f"expected a dtype name, got {type_name(value)} {quote(value)}")
        found = DType.from_json(value)
        if found is None or found not in self.allowed:
            return Problem("not_allowed", f"expected one of {[d.value for d in self.allowed]}, got {quote(value)}")
        return found


def json_object(value: object) -> JsonObject | Problem:
    """Decode any JSON object, frozen."""
    if not isinstance(value, dict):
        return Problem("type", f"expected an object, got {type_name(value)} {quote(value)}")
    frozen = freeze(value)
    assert isinstance(frozen, JsonObject)
    return frozen


def any_json(value: object) -> object:
    """Accept any JSON value (for keys kept verbatim)."""
    return value


def encode_tuple(value: tuple[str, ...] | None) -> Json:
    """Encode a tuple of strings (or ``None``) as a JSON array (or ``null``)."""
    return None if value is None else list(value)


def encode_nested(value: tuple[tuple[str, ...], ...] | None) -> Json:
    """Encode a tuple of tuples of strings as nested arrays."""
    return None if value is None else [list(row) for row in value]


def encode_dtype(value: DType) -> Json:
    """Encode a dtype by its bare name, as Transformers writes it."""
    return value.value


def encode_object(value: JsonObject | None) -> Json:
    """Encode a frozen object back into a dict."""
    return None if value is None else thaw(value)




@attrs.frozen
class optional_default(Generic[T]):  # noqa: N801
    """Read ``null`` as ``default`` (Transformers' ``None → float32`` for dtypes)."""

    inner: Callable[[object], T | Problem]
    default: T

    def __call__(self, value: object) -> T | Problem:
        return self.default if value is None else self.inner(value)


GPTQ_DATASETS: Final = ("wikitext2", "c4", "c4-new")


def dataset(value: object) -> object:
    """Decode a GPTQ calibration dataset: a known name or a list of strings (Transformers' rule)."""
    if isinstance(value, str):
        if value in GPTQ_DATASETS:
            return value
        return Problem("not_allowed", f"expected one of {list(GPTQ_DATASETS)} or a list of texts, got {quote(value)}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return Problem("type", f"expected a dataset name or an array of strings, got {type_name(value)}")
