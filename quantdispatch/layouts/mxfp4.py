"""MXFP4 as gpt-oss stores it: each mixture-of-experts block's experts as 3-D tensors of E2M1 codes,
two per byte, with one E8M0 (power-of-two) scale per 32 of them; everything else (attention, the
router, embeddings) stays in the checkpoint's float dtype.

An E2M1 code is 4 bits, the sign then an index into ``0, 0.5, 1, 1.5, 2, 3, 4, 6`` (the table of
``fp4.E2M1``); two codes share a byte, the even column in the low nibble. An E8M0 scale byte ``s``
is ``2 ** (s - 127)``; 255 is NaN. A block of E experts with hidden size H and intermediate size I
(``GptOssExperts``) holds::

    gate_up_proj_blocks  U8    [E, 2I, H/32, 16]    gate and up rows interleaved: row 2j gate j, 2j+1 up j
    gate_up_proj_scales  U8    [E, 2I, H/32]        E8M0
    gate_up_proj_bias    BF16  [E, 2I]
    down_proj_blocks     U8    [E, H, I/32, 16]
    down_proj_scales     U8    [E, H, I/32]
    down_proj_bias       BF16  [E, H]

so each expert's projection is stored as a linear weight ``[out, in]`` in blocks along ``in``:
``W[e, n, 32 g + j] = e2m1(code) * 2 ** (scale[e, n, g] - 127)``. Transformers'
``convert_moe_packed_tensors`` (its dequantization, and its fallback where Triton is missing,
as on any CPU) returns the transpose, ``[E, in, out]``, which ``GptOssExperts`` multiplies as
``x @ W[e]``; ``dense_experts`` here returns exactly that, bit for bit (float32 products, rounded
once to the dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from ..configs.fp4 import Mxfp4
from .base import FLOAT_CODES, AbstractLayout, Lazy, TensorDecl, Tensors, Unpackable, declare_layout, layout_of
from .fp4 import e2m1_unpack

if TYPE_CHECKING:
    import torch

__all__ = ["MXFP4_BLOCK", "MXFP4_BIAS", "E8M0_NAN", "Mxfp4Experts", "ExpertSizes", "mxfp4_rows", "dense_experts"]

MXFP4_BLOCK: Final = 32
"""Weights per E8M0 block scale (16 bytes of codes)."""
E8M0_NAN: Final = 255
"""The E8M0 byte that is NaN, not a scale."""
MXFP4_BIAS: Final = 127
"""E8M0's exponent bias: byte ``s`` is ``2 ** (s - 127)``."""
_PROJECTIONS: Final = ("gate_up_proj", "down_proj")


@attrs.frozen
class ExpertSizes:
    """A mixture-of-experts block's sizes: ``experts`` experts mapping ``hidden`` inputs through
    ``intermediate`` gated units (``2 * intermediate`` gate and up rows) back to ``hidden``."""

    experts: int
    hidden: int
    intermediate: int


@declare_layout
@attrs.frozen(kw_only=True)
class Mxfp4Experts(AbstractLayout):
    """gpt-oss' MXFP4 experts (``quant_method: "mxfp4"``): the whole experts module is one stored
    layer; linear layers are not stored in this layout.

    Attributes:
        dense_at_load: The config's ``dequantize``: dense experts (in the compute dtype) at load, as
            Transformers' fallback has them, rather than kept packed.
    """

    dense_at_load: bool = False

    marker: ClassVar[str] = "gate_up_proj_blocks"
    portable: ClassVar[Lazy[Any] | None] = Lazy("quantdispatch.kernels.mxfp4", "Mxfp4ExpertsModule")
    whole_modules: ClassVar[bool] = True

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        return Unpackable("mxfp4.layer.not_experts", "MXFP4 stores mixture-of-experts blocks (3-D expert tensors), "
                          f"not single linear layers; a {in_features} -> {out_features} linear layer cannot be stored in it")

    def expert_tensors(self, sizes: ExpertSizes) -> Tensors | Unpackable:
        """The tensors of one experts module, by name, or why these sizes cannot be stored."""
        e, h, i = sizes.experts, sizes.hidden, sizes.intermediate
        if min(e, h, i) <= 0 or h % MXFP4_BLOCK or i % MXFP4_BLOCK:
            return Unpackable("mxfp4.shape.not_blocks", f"MXFP4 scales blocks of {MXFP4_BLOCK} inputs; experts of hidden size {h} "
                              f"and intermediate size {i} ({e} experts) are not whole blocks")
        half = MXFP4_BLOCK // 2
        return {
            "gate_up_proj_blocks": TensorDecl((e, 2 * i, h // MXFP4_BLOCK, half), "U8"),
            "gate_up_proj_scales": TensorDecl((e, 2 * i, h // MXFP4_BLOCK), "U8"),
            "gate_up_proj_bias": TensorDecl((e, 2 * i), "BF16", FLOAT_CODES),
            "down_proj_blocks": TensorDecl((e, h, i // MXFP4_BLOCK, half), "U8"),
            "down_proj_scales": TensorDecl((e, h, i // MXFP4_BLOCK), "U8"),
            "down_proj_bias": TensorDecl((e, h), "BF16", FLOAT_CODES),
        }

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        down = shapes.get("down_proj_blocks")
        return down[1] if down is not None and len(down) == 4 else None

    def finite(self) -> frozenset[str]:
        return frozenset({"gate_up_proj_scales", "down_proj_scales"})

    def views(self) -> Mapping[str, str]:
        return {"gate_up_proj_scales": "F8_E8M0", "down_proj_scales": "F8_E8M0"}

    def describe(self) -> str:
        dense = ", dequantized to dense experts at load (dequantize is set)" if self.dense_at_load else ""
        return ("MXFP4 mixture-of-experts (gpt-oss): E2M1 codes two per byte in 3-D expert tensors, an E8M0 "
                f"power-of-two scale per 32 inputs; attention and router in the checkpoint's dtype{dense}")


def mxfp4_rows(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weights ``[..., N, G * 32]`` (rows: outputs) of ``blocks`` ``[..., N, G, 16]`` and E8M0
    ``scales`` ``[..., N, G]``: ``e2m1(code) * 2 ** (s - 127)`` in float32, rounded once to ``dtype``."""
    import torch

    values = e2m1_unpack(blocks)  # [..., N, G, 32]
    # torch.pow(2.0, int32) is float32, as in Transformers' ldexp (an exact power of two down to 2**-127).
    exponents = scales.to(torch.int32) - MXFP4_BIAS
    values.mul_(torch.pow(2.0, exponents).unsqueeze(-1))
    return values.flatten(-2).to(dtype)


def dense_experts(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Transformers' ``convert_moe_packed_tensors``: the dense experts ``[E, in, out]`` (the
    ``GptOssExperts`` parameter) of ``blocks`` ``[E, out, in/32, 16]`` and ``scales`` ``[E, out, in/32]``."""
    return mxfp4_rows(blocks, scales, dtype).transpose(-1, -2).contiguous()


@layout_of.register(Mxfp4)
def _mxfp4(config: Mxfp4, /) -> Mxfp4Experts:
    return Mxfp4Experts(dense_at_load=config.dequantize)
