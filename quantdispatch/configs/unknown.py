"""A checkpoint whose method string nobody registered: kept as read, so a plan can say what happens."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..jsonvalue import EMPTY_OBJECT, JsonObject
from .base import AbstractQuantConfig

__all__ = ["UnknownMethod"]


@attrs.frozen(kw_only=True)
class UnknownMethod(AbstractQuantConfig):
    """The quantization config of a checkpoint whose ``quant_method`` no registered family reads.

    It is never the result of ``parse`` (which returns ``method.unknown`` with the nearest known
    method), only of ``read_config(path, keep_unknown_method=True)``: a checkpoint is what it is,
    and ``plan`` must say what happens to it. By default the plan refuses it; with
    ``LoadOptions(unknown_method="full_precision")`` it loads the weights as stored, ignoring the
    config, and says so.

    Attributes:
        name: The method string the checkpoint gives.
        document: The quantization config as read.
    """

    method: ClassVar[str] = ""

    name: str
    document: JsonObject = EMPTY_OBJECT
