"""AWQ, one type per packing layout (AutoAWQ's ``version``, Transformers' ``format``)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import JsonObject
from .base import AbstractQuantConfig

__all__ = ["AbstractAwq", "AwqGemm", "AwqGemv", "AwqGemvFast", "AwqMarlin", "AwqLlm", "AWQ_BITS"]

AWQ_BITS: Final[tuple[Literal[4], ...]] = (4,)
"""AWQ kernels and packings exist for 4-bit weights only."""


@attrs.frozen(kw_only=True)
class AbstractAwq(AbstractQuantConfig):
    """Fields of an AWQ checkpoint; the final type names the packing.

    Attributes:
        bits: Weight width; always 4 for real AWQ checkpoints.
        group_size: Input columns sharing one scale (and zero point).
        zero_point: Asymmetric quantization with a per-group zero point.
        modules_to_not_convert: Module-name patterns left unquantized (vision towers, gates).
        backend: Loading attribute: the kernel family asked for, kept as written.
        max_input_length: Loading attribute: the ExLlama act-order buffer size.
        do_fuse: Loading attribute of AutoAWQ / Transformers 4.x: fuse attention and MLP modules.
        fuse_max_seq_len: Loading attribute: the fused modules' cache length.
        modules_to_fuse: Loading attribute: which modules to fuse, per architecture.
        exllama_config: Loading attribute: ``{"version": 1 | 2}`` for the ExLlama kernels.
    """

    method: ClassVar[str] = "awq"
    version: ClassVar[str] = ""

    bits: Literal[4] = 4
    group_size: int = 128
    zero_point: bool = True
    modules_to_not_convert: tuple[str, ...] | None = None
    backend: str | None = None
    max_input_length: int | None = None
    do_fuse: bool | None = None
    fuse_max_seq_len: int | None = None
    modules_to_fuse: JsonObject | None = None
    exllama_config: JsonObject | None = None


@attrs.frozen(kw_only=True)
class AwqGemm(AbstractAwq):
    """AutoAWQ GEMM packing (``version: "gemm"``): int32 words along the output dimension,
    eight 4-bit values each in the interleaved order 0, 2, 4, 6, 1, 3, 5, 7."""

    version: ClassVar[str] = "gemm"


@attrs.frozen(kw_only=True)
class AwqGemv(AbstractAwq):
    """AutoAWQ GEMV packing (``version: "gemv"``): int32 words along the input dimension, for
    batch-1 decoding."""

    version: ClassVar[str] = "gemv"


@attrs.frozen(kw_only=True)
class AwqGemvFast(AbstractAwq):
    """AutoAWQ GEMV-fast packing (``version: "gemv_fast"``): weights interleaved for the fast GEMV
    kernel, with scales and zeros stored per group in a padded layout."""

    version: ClassVar[str] = "gemv_fast"


@attrs.frozen(kw_only=True)
class AwqMarlin(AbstractAwq):
    """AutoAWQ Marlin packing (``version: "marlin"``): weights pre-tiled for the Marlin CUDA
    kernel, readable by no portable kernel."""

    version: ClassVar[str] = "marlin"


@attrs.frozen(kw_only=True)
class AwqLlm(AbstractAwq):
    """The original MIT llm-awq layout (``version``/``format`` ``"llm-awq"``, or Transformers'
    legacy ``backend: "llm-awq"``)."""

    version: ClassVar[str] = "llm-awq"
