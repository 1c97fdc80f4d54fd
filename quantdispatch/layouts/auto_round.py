"""AutoRound's integer exports: which existing layout each ``packing_format`` stores.

AutoRound (intel/auto-round) has no packing of its own for integer weights: every integer export
is GPTQ's or AutoAWQ's bytes under ``quant_method: "auto-round"``. Read from its source
(``auto_round/export/export_to_autoround/export.py``: ``dynamic_import_quant_linear_for_packing``
picks the packer from the ``packing_format`` string; ``auto_round/inference/backend.py`` lists
which strings its readers take as "zp+-1" and which as "no zp")::

    packing_format         packer (auto_round_extension/torch/ …)   zero points   g_idx   bits        layout
    auto_round:auto_gptq   qlinear_torch_zp.QuantLinear             stored - 1    no      2, 3, 4, 8  GptqPacked(v1=True)
    auto_round:gptq        (Transformers' default; the reader maps it to auto_gptq)                    GptqPacked(v1=True)
    auto_round:gptqmodel   qlinear_torch.QuantLinear(g_idx=True)    as they are   k // S  2, 3, 4, 8  GptqPacked(v1=False)
    auto_round             qlinear_torch.QuantLinear                as they are   no      2, 3, 4, 8  GptqPacked(v1=False)
    auto_round:auto_awq    export_to_awq/utils.py WQLinear_GEMM     as they are   no      4           AwqPacked("gemm")

All of them: ``qweight`` I32, ``qzeros`` I32, ``scales`` F16, ``bias`` F16, no act-order (AutoRound
never permutes columns). ``format="auto_round"`` writes ``auto_round:auto_gptq`` for symmetric
integer schemes and ``auto_round:auto_awq`` for asymmetric 4-bit ones
(``auto_round/export/formats/backends/autoround.py``), so the bare ``auto_round`` string is left
for asymmetric 2/3/8-bit weights. Symmetric scales may be negative (``quant_tensor_sym`` in
``auto_round/data_type/int.py`` keeps the sign of the larger extreme); zero points are then
``2 ** (bits - 1)``. ``auto_gptq`` packs each zero-point word as the int32 sum of ``(z - 1) << (bits * j)``,
so a zero point of 0 borrows from the next field; for 2, 4 and 8 bits that is exactly the word-wise
offset ``GptqPacked(v1=True)`` undoes (``tests/unit/test_auto_round_layouts.py``); the 3-bit packer's
split fields are not checked for that case (asymmetric zero points of 0 need a group with no
negative weight).

Not an integer layout here: activation-quantized exports (``act_bits`` ≤ 8, packed by
``qlinear_triton_act``), non-integer ``data_type`` (``mx_fp``, ``nv_fp``, ``fp8``, ``mx_int`` …,
packed by ``export_to_nvfp_mx.py`` / ``export_to_fp8.py`` under other ``packing_format`` strings),
widths 5–7, and per-layer overrides (``extra_config``) of width or group size, which one layout per
checkpoint cannot describe. Those stay with the auto-round package.
"""

from __future__ import annotations

from typing import Final

from ..configs.integer import AbstractAutoRound, AutoRound, AutoRoundAwq
from ..jsonvalue import JsonObject
from ..text import quote
from .awq import AwqPacked
from .base import layout_of
from .gptq import GptqPacked

__all__ = ["auto_round_layout", "AUTO_ROUND_GPTQ_BITS"]

AUTO_ROUND_GPTQ_BITS: Final = (2, 3, 4, 8)
"""Widths AutoRound's GPTQ packers take (``QuantLinear.__init__`` refuses others)."""


def _unmodelled(config: AbstractAutoRound) -> str | None:
    """Why the checkpoint's layers are not one integer layout, whatever the packing (``None``: they are)."""
    act_bits = config.extras.get("act_bits")
    if isinstance(act_bits, int) and not isinstance(act_bits, bool) and act_bits <= 8:
        return f"activations are quantized too (act_bits {act_bits}): AutoRound packs those layers with its own triton module"
    data_type = config.extras.get("data_type")
    if data_type is not None and not (isinstance(data_type, str) and "int" in data_type and "mx" not in data_type):
        return f"data_type {quote(data_type)} is not AutoRound's integer quantization"
    overrides = config.extras.get("extra_config")
    if isinstance(overrides, JsonObject):
        for name in overrides:
            entry = overrides.get(name)
            if not isinstance(entry, JsonObject):
                continue
            bits, group = entry.get("bits"), entry.get("group_size")
            quantized = not (isinstance(bits, int) and bits >= 16)
            if quantized and ((bits is not None and bits != config.bits) or (group is not None and group != config.group_size)):
                return (f"extra_config gives {quote(name, 60)} its own width or group size: one layout per checkpoint "
                        "cannot hold layers of several")
    return None


def auto_round_layout(config: AbstractAutoRound) -> GptqPacked | AwqPacked | str:
    """The existing layout an AutoRound checkpoint's bytes are, or why they are none of them.

    >>> from quantdispatch.configs import AutoRound, AutoRoundGptq
    >>> auto_round_layout(AutoRoundGptq(bits=4, packing_format="auto_round:auto_gptq")).v1
    True
    >>> auto_round_layout(AutoRound(bits=2, sym=False)).v1
    False
    >>> auto_round_layout(AutoRound(packing_format="auto_round:llm_compressor"))
    "packing_format 'auto_round:llm_compressor' is not one of AutoRound's integer packings"
    """
    why = _unmodelled(config)
    if why is not None:
        return why
    if isinstance(config, AutoRoundAwq):
        if config.bits != 4:
            return f"AutoRound's AWQ packing (WQLinear_GEMM) holds 4-bit codes, not {config.bits}-bit"
        return AwqPacked(bits=4, group_size=config.group_size, version="gemm")
    if isinstance(config, AutoRound) and config.packing_format.lower() != "auto_round":
        return f"packing_format {quote(config.packing_format)} is not one of AutoRound's integer packings"
    if config.bits not in AUTO_ROUND_GPTQ_BITS:
        return f"AutoRound's GPTQ packing holds {list(AUTO_ROUND_GPTQ_BITS)}-bit codes, not {config.bits}-bit"
    # Only auto_round:auto_gptq (and the spellings its reader maps to it) subtracts one from zero points.
    v1 = not isinstance(config, AutoRound) and "gptqmodel" not in config.packing_format.lower()
    return GptqPacked(bits=config.bits, group_size=config.group_size, v1=v1, desc_act=False)


@layout_of.register(AbstractAutoRound)
def _auto_round_layout(config: AbstractAutoRound, /) -> GptqPacked | AwqPacked | None:
    found = auto_round_layout(config)
    return None if isinstance(found, str) else found
