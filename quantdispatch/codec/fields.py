"""Field codecs: how one JSON key becomes one typed field, and back.

A ``FieldSpec`` pairs a JSON key with a config attribute, a total decoder (raw JSON → value or a
``Problem``) and an encoder (value → canonical JSON). The same table drives ``parse`` and ``dump``,
so the two directions cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs

from ..dtypes import DType
from ..jsonvalue import Json, JsonObject, freeze, thaw, type_name

__all__ = [
    "Problem", "FieldSpec", "Decoder", "boolean", "one_of", "integer", "number", "text",
    "optional", "string_tuple", "nested_string_tuple", "dtype", "json_object", "any_json",
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
    """

    kind: str
    message: str
    hint: str | None = None


Decoder = Callable[[object], "T | Problem"]


@attrs.frozen
class FieldSpec(Generic[T]):
    """One JSON key of a config type.

    Attributes:
        key: The key ``dump`` writes.
        attr: The config attribute it fills; ``None`` for a key the format knows but that carries
            nothing for this type (an 8-bit threshold in a 4-bit config, calibration settings): it
            is checked, kept in the wire, and written back as it was.
        decode: Raw JSON to value, or a ``Problem``. Must never raise.
        encode: Value to canonical JSON.
        default: The value when the key is absent (Transformers' default).
        required: Absence is an issue.
        aliases: Other keys meaning the same (legacy spellings); where several are present they
            must agree.
    """

    key: str
    attr: str | None
    decode: Callable[[object], T | Problem]
    encode: Callable[[T], Json]
    default: T
    required: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The primary key and its aliases."""
        return (self.key, *self.aliases)


def _plain(value: Any) -> Json:
    return value  # type: ignore[no-any-return]


def boolean(value: object) -> bool | Problem:
    """Decode a JSON boolean (``1`` and ``"true"`` are not booleans)."""
    if isinstance(value, bool):
        return value
    return Problem("type", f"expected a boolean, got {type_name(value)} {value!r}", "write true or false")


def one_of(allowed: tuple[L, ...], hint: str | None = None) -> Callable[[object], L | Problem]:
    """Decode one of ``allowed``, compared by type and value (``True`` is not ``1``)."""

    def decode(value: object) -> L | Problem:
        for a in allowed:
            if type(value) is type(a) and value == a:
                return a
        listed = ", ".join(repr(a) for a in allowed)
        return Problem("not_allowed", f"expected one of {listed}, got {value!r}", hint)

    return decode


def integer(lo: int | None = None, hi: int | None = None, also: tuple[int, ...] = ()) -> Callable[[object], int | Problem]:
    """Decode an integer in ``[lo, hi]`` or in ``also``."""

    def decode(value: object) -> int | Problem:
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return Problem("type", f"expected an integer, got {value!r}", f"write {int(value)}")
        if not isinstance(value, int) or isinstance(value, bool):
            return Problem("type", f"expected an integer, got {type_name(value)} {value!r}")
        if value in also or ((lo is None or value >= lo) and (hi is None or value <= hi)):
            return value
        bounds = f"≥ {lo}" if hi is None else f"in [{lo}, {hi}]"
        extra = f" or one of {list(also)}" if also else ""
        return Problem("range", f"expected an integer {bounds}{extra}, got {value}")

    return decode


def number(lo: float | None = None, hi: float | None = None, open_interval: bool = False) -> Callable[[object], float | Problem]:
    """Decode a finite number (an integer is accepted and read as a float) within bounds."""

    def decode(value: object) -> float | Problem:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Problem("type", f"expected a number, got {type_name(value)} {value!r}")
        x = float(value)
        if not math.isfinite(x):
            return Problem("range", f"expected a finite number, got {value!r}")
        low_ok = lo is None or (x > lo if open_interval else x >= lo)
        high_ok = hi is None or (x < hi if open_interval else x <= hi)
        if low_ok and high_ok:
            return x
        brackets = "()" if open_interval else "[]"
        return Problem("range", f"expected a number in {brackets[0]}{lo}, {hi}{brackets[1]}, got {value!r}")

    return decode


def text(value: object) -> str | Problem:
    """Decode a JSON string."""
    if isinstance(value, str):
        return value
    return Problem("type", f"expected a string, got {type_name(value)} {value!r}")


def optional(inner: Callable[[object], T | Problem]) -> Callable[[object], T | None | Problem]:
    """Accept ``null`` as ``None``, anything else through ``inner``."""

    def decode(value: object) -> T | None | Problem:
        return None if value is None else inner(value)

    return decode


def string_tuple(value: object) -> tuple[str, ...] | Problem:
    """Decode an array of strings into a tuple."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return Problem("type", f"expected an array of strings, got {type_name(value)} {value!r}")
    return tuple(value)


def nested_string_tuple(value: object) -> tuple[tuple[str, ...], ...] | Problem:
    """Decode an array of arrays of strings (``modules_in_block_to_quantize``)."""
    if not isinstance(value, list) or not all(
        isinstance(row, list) and all(isinstance(v, str) for v in row) for row in value
    ):
        return Problem("type", f"expected an array of arrays of strings, got {value!r}")
    return tuple(tuple(row) for row in value)


def dtype(allowed: Sequence[DType] | None = None) -> Callable[[object], DType | Problem]:
    """Decode a dtype name (``"bfloat16"``, also ``"torch.bfloat16"``)."""

    permitted = frozenset(allowed if allowed is not None else DType)

    def decode(value: object) -> DType | Problem:
        if not isinstance(value, str):
            return Problem("type", f"expected a dtype name, got {type_name(value)} {value!r}")
        found = DType.from_json(value)
        if found is None or found not in permitted:
            names = [d.value for d in (allowed or list(DType))]
            return Problem("not_allowed", f"expected one of {names}, got {value!r}")
        return found

    return decode


def json_object(value: object) -> JsonObject | Problem:
    """Decode any JSON object, frozen."""
    if not isinstance(value, dict):
        return Problem("type", f"expected an object, got {type_name(value)} {value!r}")
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


PLAIN: Final = _plain


def optional_default(inner: Callable[[object], T | Problem], default: T) -> Callable[[object], T | Problem]:
    """Read ``null`` as ``default`` (Transformers' ``None → float32`` for dtypes)."""

    def decode(value: object) -> T | Problem:
        return default if value is None else inner(value)

    return decode


GPTQ_DATASETS: Final = ("wikitext2", "c4", "c4-new")


def dataset(value: object) -> object:
    """Decode a GPTQ calibration dataset: a known name or a list of strings (Transformers' rule)."""
    if isinstance(value, str):
        if value in GPTQ_DATASETS:
            return value
        return Problem("not_allowed", f"expected one of {list(GPTQ_DATASETS)} or a list of texts, got {value!r}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return Problem("type", f"expected a dataset name or an array of strings, got {type_name(value)}")
