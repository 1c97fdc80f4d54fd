"""The root of every config type, and the two fields every config carries."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..jsonvalue import EMPTY_OBJECT, FrozenJson, JsonObject

__all__ = ["AbstractQuantConfig", "Extras", "NO_EXTRAS", "Wire", "NO_WIRE"]

Extras = JsonObject
"""Keys of the source document that no field models, in their order, frozen."""

NO_EXTRAS: Extras = EMPTY_OBJECT


@attrs.frozen
class Wire:
    """How the source document spelled what the typed fields say.

    A config parsed from JSON remembers the order of the source's keys and the raw values of the
    keys it understood, so that ``dump`` can write the document back exactly: ``"GEMM"`` stays
    ``"GEMM"``, an integer ``6`` stays ``6``, a key that was absent stays absent. ``dump`` uses a
    raw value only while it still means what the typed field says; a field changed with
    ``attrs.evolve`` is written in its canonical spelling.

    The wire is not part of a config's value: it is excluded from ``==`` and ``hash``, so the same
    quantization written two ways compares equal.
    """

    keys: tuple[str, ...] = ()
    raw: JsonObject = EMPTY_OBJECT

    def get(self, key: str) -> FrozenJson | None:
        """Return the raw value the source had under ``key`` (``None`` when absent or null)."""
        return self.raw.get(key)

    def has(self, key: str) -> bool:
        """Return whether the source had ``key``."""
        return key in self.raw


NO_WIRE = Wire()


@attrs.frozen(kw_only=True)
class AbstractQuantConfig:
    """Base of every config type; only its final subclasses are built.

    Subclasses are frozen, slotted, keyword-only ``attrs`` classes, one per quantization method and
    on-disk variant. Every config carries two bookkeeping fields:

    Attributes:
        extras: Keys of the source document that no field models, kept in order so that
            ``dump(parse(d)) == d``. Part of the value (they compare and hash).
        wire: The source's spelling of the modelled keys (see ``Wire``). Not part of the value.
    """

    method: ClassVar[str] = ""
    """The method string this type is written as (``"gptq"``); set by each final class."""

    extras: Extras = NO_EXTRAS
    wire: Wire = attrs.field(default=NO_WIRE, eq=False, repr=False)
