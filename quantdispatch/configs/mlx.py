"""MLX (Apple's array framework): the ``quantization`` block of an MLX-LM ``config.json``."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = ["Mlx", "MLX_BITS", "MLX_GROUPS", "MLX_MODES"]

MLX_BITS: Final[tuple[int, ...]] = (2, 3, 4, 5, 6, 8)
MLX_GROUPS: Final[tuple[int, ...]] = (32, 64, 128)
MLX_MODES: Final[tuple[Literal["affine", "mxfp4", "nvfp4", "mxfp8"], ...]] = ("affine", "mxfp4", "nvfp4", "mxfp8")


@attrs.frozen(kw_only=True)
class Mlx(AbstractQuantConfig):
    """MLX-LM quantized weights (``{"group_size": 64, "bits": 4}``, written without a method
    string; ``quant_method: "mlx"`` where a tool adds one).

    Per-module overrides (``"model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 64}``, or
    ``false`` for a module left in full precision) are keys no field models: they ride in
    ``extras``, are checked by ``validate`` and read by ``overrides()``.

    Attributes:
        bits: Bits per weight: 2, 3, 4, 5, 6 or 8.
        group_size: Weights per scale and bias: 32, 64 or 128.
        mode: ``affine`` (scale and bias) or a microscaling float format.
    """

    method: ClassVar[str] = "mlx"

    bits: int = 4
    group_size: int = 64
    mode: Literal["affine", "mxfp4", "nvfp4", "mxfp8"] = "affine"

    def overrides(self) -> tuple[tuple[str, tuple[int, int] | None], ...]:
        """Per-module ``(bits, group_size)``, ``None`` for a module left unquantized; malformed
        entries (which ``validate`` reports) are skipped."""
        out: list[tuple[str, tuple[int, int] | None]] = []
        for key, value in self.extras.items:
            if value is False:
                out.append((key, None))
            elif isinstance(value, JsonObject):
                bits, group = value.get("bits"), value.get("group_size")
                if type(bits) is int:
                    out.append((key, (bits, group if type(group) is int else self.group_size)))
        return tuple(out)
