"""GPTQ, as AutoGPTQ, GPTQModel and Transformers write it: two types for two zero-point layouts."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = ["AbstractGptq", "Gptq", "GptqV2", "GPTQ_BITS"]

GPTQ_BITS: Final[tuple[Literal[2, 3, 4, 8], ...]] = (2, 3, 4, 8)


@attrs.frozen(kw_only=True)
class AbstractGptq(AbstractQuantConfig):
    """Fields of a GPTQ checkpoint; the final type says how zero points are stored.

    Attributes:
        bits: Weight width. 2, 3, 4 or 8.
        group_size: Input columns sharing one scale and zero point; ``-1`` means one group per
            output row (the whole input dimension).
        desc_act: Act-order: columns were quantized in order of decreasing activation, so the
            checkpoint carries a ``g_idx`` permutation.
        sym: Symmetric quantization (zero point fixed at the midpoint).
        true_sequential: Layers inside a block were quantized one after another.
        damp_percent: Hessian dampening used during quantization, in (0, 1).
        static_groups: Group parameters were fixed before act-order reordering (AutoGPTQ).
        act_group_aware: GPTQModel's group-aware act-order (only meaningful with
            ``desc_act=False``).
        modules_in_block_to_quantize: The linear layers quantized inside each block, as
            sequential groups; ``None`` means all of them.
        lm_head: Whether the output head is quantized too (GPTQModel).
        meta: Free-form tooling metadata (``quantizer``, ``uri``, …), kept verbatim.
        backend: Loading attribute: the kernel family asked for (``"auto"``, ``"marlin"``,
            ``"exllama_v2"`` …), kept as written; ``None`` when unset.
        max_input_length: Loading attribute: the ExLlama act-order buffer size.
        use_exllama: Loading attribute of Transformers 4.x (ignored by Transformers 5).
        disable_exllama: Its older, inverted spelling.
        use_cuda_fp16: Loading attribute of AutoGPTQ's CUDA kernels.
        exllama_config: Loading attribute: ``{"version": 1 | 2}`` for the ExLlama kernels.

    Calibration settings (``dataset``, ``tokenizer``, ``model_seqlen``, ``batch_size`` …) do not
    change how a checkpoint loads: they are checked when parsed and kept in ``extras``.
    """

    method: ClassVar[str] = "gptq"
    checkpoint_format: ClassVar[str] = ""

    bits: Literal[2, 3, 4, 8]
    group_size: int = 128
    desc_act: bool = False
    sym: bool = True
    true_sequential: bool = True
    damp_percent: float = 0.1
    static_groups: bool = False
    act_group_aware: bool = True
    modules_in_block_to_quantize: tuple[tuple[str, ...], ...] | None = None
    lm_head: bool = False
    meta: JsonObject | None = None
    backend: str | None = None
    max_input_length: int | None = None
    use_exllama: bool | None = None
    disable_exllama: bool | None = None
    use_cuda_fp16: bool | None = None
    exllama_config: JsonObject | None = None


@attrs.frozen(kw_only=True)
class Gptq(AbstractGptq):
    """GPTQ v1 layout (``format``/``checkpoint_format`` ``"gptq"``, the default).

    Packed zero points are stored minus one, the historical AutoGPTQ convention: a loader adds
    one back when unpacking.

    >>> Gptq(bits=4, group_size=-1).group_size
    -1
    """

    checkpoint_format: ClassVar[str] = "gptq"


@attrs.frozen(kw_only=True)
class GptqV2(AbstractGptq):
    """GPTQ v2 layout (``format`` ``"gptq_v2"``, written by GPTQModel and Optimum).

    Zero points are stored as they are, without the v1 minus-one offset.
    """

    checkpoint_format: ClassVar[str] = "gptq_v2"
