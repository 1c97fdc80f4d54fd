"""Our own dtype enum, so that the pure core never needs to import torch.

Each member's value is the name torch and Transformers use (``torch.bfloat16`` is ``"bfloat16"``);
the shell turns a member into a ``torch.dtype`` with ``getattr(torch, member.value)``.

>>> DType.from_json("bfloat16") is DType.BFLOAT16
True
>>> DType.from_json("torch.float16") is DType.FLOAT16
True
"""

from __future__ import annotations

import enum

__all__ = ["DType"]


class DType(enum.Enum):
    """A tensor element type, named as torch names it."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT8_E4M3FN = "float8_e4m3fn"
    FLOAT8_E5M2 = "float8_e5m2"
    INT64 = "int64"
    INT32 = "int32"
    INT16 = "int16"
    INT8 = "int8"
    UINT8 = "uint8"

    @property
    def bits(self) -> int:
        """Width of one element in bits."""
        return _BITS[self]

    @property
    def is_floating_point(self) -> bool:
        """Whether this is a floating-point type."""
        return self.value.startswith(("float", "bfloat"))

    @classmethod
    def from_json(cls, value: str) -> DType | None:
        """Return the member a JSON string names, or ``None``.

        Accepts the bare name Transformers writes (``"bfloat16"``) and the ``"torch.bfloat16"``
        spelling users often write by hand (Transformers itself fails on the latter).
        """
        found = _BY_NAME.get(value)
        return found if found is not None else _BY_NAME.get(value.removeprefix("torch."))


_BITS = {
    DType.FLOAT64: 64, DType.FLOAT32: 32, DType.FLOAT16: 16, DType.BFLOAT16: 16,
    DType.FLOAT8_E4M3FN: 8, DType.FLOAT8_E5M2: 8, DType.INT64: 64, DType.INT32: 32,
    DType.INT16: 16, DType.INT8: 8, DType.UINT8: 8,
}
_BY_NAME = {d.value: d for d in DType}
