"""The root of every config type, and the two fields every config carries."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..jsonvalue import EMPTY_OBJECT, JsonObject

__all__ = ["AbstractQuantConfig", "Extras", "NO_EXTRAS"]

Extras = JsonObject
"""Keys of the source document that no typed field models, in their order, frozen."""

NO_EXTRAS: Extras = EMPTY_OBJECT


@attrs.frozen(kw_only=True)
class AbstractQuantConfig:
    """Base of every config type; only its final subclasses are built.

    Subclasses are frozen, slotted, keyword-only ``attrs`` classes, one per quantization method and
    on-disk variant. Everything that changes what a load does is a typed field; two configs that
    compare equal plan, reconcile, validate and dump (up to the source's spelling) the same way.

    Attributes:
        extras: Keys of the source document that no typed field models (calibration settings,
            tool metadata, keys of newer tools), kept in order. Part of the value. They must not
            repeat a modelled key or a discriminator key: ``validate`` refuses that.
        source: The JSON object this config was parsed from, frozen, or ``None`` for a config
            built in code. Not part of the value (excluded from ``==`` and ``hash``): ``dump``
            writes it back verbatim while it still decodes to this very value (same spelling, key
            order, ``"GEMM"`` vs ``"gemm"``, ``6`` vs ``6.0``), and the canonical form otherwise.
    """

    method: ClassVar[str] = ""
    """The method string this type is written as (``"gptq"``); set once, by each family's base."""

    extras: Extras = NO_EXTRAS
    source: JsonObject | None = attrs.field(default=None, eq=False, repr=False)
    # Bookkeeping, not part of the value: how far this very object has been checked (0 not yet,
    # 1 its fields came from the codec's decoders, 2 ``validate`` accepted it). A config made
    # with ``attrs.evolve`` is a new object and starts at 0.
    _checked: int = attrs.field(default=0, init=False, eq=False, repr=False)
