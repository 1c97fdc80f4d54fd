"""compressed-tensors (llm-compressor, vLLM): config groups of schemes, each with the
quantization arguments of weights, input and output activations; a sparsity config; a KV-cache
scheme; and ``ignore`` lists whose ``re:`` entries are regular expressions.

The nested values are typed like the top level: frozen, keyword-only, hashable. Keys the
pydantic models forbid (``extra="forbid"`` on the arguments and schemes) are refused when parsed;
the sparsity config, which allows them, keeps them in its own ``extras``.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import attrs

from ..jsonvalue import EMPTY_OBJECT, JsonObject
from .base import AbstractQuantConfig

__all__ = [
    "CtArgs", "CtScheme", "CtPreset", "CtSparsity", "CompressedTensors", "CT_STRATEGIES", "CT_STATUSES", "CT_FORMATS",
    "CT_PRESETS", "CtStrategy",
]

CtStrategy = Literal["tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"]
CT_STRATEGIES: Final[tuple[CtStrategy, ...]] = ("tensor", "channel", "group", "block", "token", "tensor_group", "attn_head")
CT_STATUSES: Final[tuple[Literal["initialized", "calibration", "frozen", "compressed"], ...]] = (
    "initialized", "calibration", "frozen", "compressed")
CT_FORMATS: Final = (
    "dense", "sparse-bitmask", "sparse-24-bitmask", "int-quantized", "float-quantized", "naive-quantized",
    "pack-quantized", "marlin-24", "mixed-precision", "nvfp4-pack-quantized", "mxfp4-pack-quantized",
    "mxfp6-pack-quantized", "mxfp8-quantized",
)
"""compressed-tensors' ``CompressionFormat`` values (the legacy ``fakequant`` is accepted too)."""
CT_PRESETS: Final = (
    "UNQUANTIZED", "W4A16_ASYM", "W8A8", "INT8", "W4AFP8", "FP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4A16", "NVFP4",
    "MXFP4A16", "MXFP4", "MXFP4XFP8", "MXFP6A16", "MXFP6A8", "MXFP8A16", "MXFP8", "W2A4", "W2A8", "W2A16", "W3A4",
    "W3A8", "W3A16", "W4A4", "W4A8", "W4A16", "W5A8", "W5A16", "W6A8", "W6A16", "W7A8", "W7A16", "W8A16",
)
"""Preset scheme names a config group may give instead of a scheme (``"W4A16": ["Linear"]``)."""


@attrs.frozen(kw_only=True)
class CtArgs:
    """``QuantizationArgs``: how one tensor kind (weights, input or output activations, the KV
    cache) is quantized. Values are kept as written; ``effective_strategy`` is the inferred one.

    Attributes:
        num_bits: Bits per value (4 or 8 for ``float``).
        type: ``int`` or ``float``.
        symmetric: No zero point.
        group_size: Values per scale for ``group``/``tensor_group``; ``-1`` means per channel.
        strategy: Scope of one scale; ``None``: inferred from ``group_size``.
        block_structure: ``(rows, columns)`` of a block, for ``block``.
        dynamic: Scales computed at run time (``True``), at calibration (``False``) or only the
            local ones (``"local"``, NVFP4).
        actorder: GPTQ activation ordering: ``weight`` (alias ``static``); ``false`` reads as
            ``None``. compressed-tensors 0.20 removed ``group``/``dynamic`` and ``true``.
        observer: Calibration observer name; ``observer_kwargs`` its arguments.
        scale_dtype: Dtype of the stored scales (``torch.uint8`` for MX formats), if written.
        zp_dtype: Dtype of the stored zero points, if written.
    """

    num_bits: int = 8
    type: Literal["int", "float"] = "int"
    symmetric: bool = True
    group_size: int | None = None
    strategy: CtStrategy | None = None
    block_structure: tuple[int, ...] | None = None
    dynamic: bool | Literal["local"] = False
    actorder: Literal["weight", "static"] | None = None
    observer: str | None = None
    observer_kwargs: JsonObject = EMPTY_OBJECT
    scale_dtype: str | None = None
    zp_dtype: str | None = None

    @property
    def effective_strategy(self) -> CtStrategy:
        """The strategy compressed-tensors infers: given, else group/channel/tensor from ``group_size``."""
        if self.strategy is not None:
            return self.strategy
        if self.group_size is None:
            return "tensor"
        return "channel" if self.group_size == -1 else "group"


@attrs.frozen(kw_only=True)
class CtScheme:
    """``QuantizationScheme``: the modules a group targets and how their tensors are quantized."""

    targets: tuple[str, ...]
    weights: CtArgs | None = None
    input_activations: CtArgs | None = None
    output_activations: CtArgs | None = None
    format: str | None = None


@attrs.frozen(kw_only=True)
class CtPreset:
    """A config group written as a preset name and its targets (``"W4A16": ["Linear"]``)."""

    targets: tuple[str, ...]


@attrs.frozen(kw_only=True)
class CtSparsity:
    """``SparsityCompressionConfig``: how pruned weights are stored (``sparse-24-bitmask`` …).

    Attributes:
        format: The sparse storage format.
        targets: Modules it applies to (``None``: all).
        ignore: Modules left dense.
        global_sparsity: The fraction of zeros, informational.
        sparsity_structure: ``2:4``, ``unstructured`` …
        extras: Other keys (``registry_requires_subclass``), kept.
    """

    format: str
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    global_sparsity: float | None = 0.0
    sparsity_structure: str | None = "unstructured"
    extras: JsonObject = EMPTY_OBJECT


CtGroup = CtScheme | CtPreset


@attrs.frozen(kw_only=True)
class CompressedTensors(AbstractQuantConfig):
    """``quant_method: "compressed-tensors"`` (legacy spellings ``compressed_tensors`` and
    ``sparseml``; legacy top-level key ``compression_config``).

    The format is a field rather than a type: one checkpoint can mix formats per group.

    Attributes:
        config_groups: ``(name, scheme or preset)`` in order; ``None`` for a sparsity-only model.
        format: The storage format (``pack-quantized``, ``float-quantized`` …).
        quantization_status: ``initialized``, ``calibration``, ``frozen`` or ``compressed``.
        kv_cache_scheme: How the KV cache is quantized, if it is.
        global_compression_ratio: Informational.
        ignore: Modules left unquantized: names, class names, or ``re:`` regular expressions.
        sparsity_config: How pruned weights are stored, if they are.
        dequantize: Loading attribute: decompress to dense weights at load.
        use_optimized_inference: Loading attribute: use the FP8 kernels where they exist.
        run_compressed: Deprecated loading attribute; ``false`` means ``dequantize``.
    """

    method: ClassVar[str] = "compressed-tensors"

    config_groups: tuple[tuple[str, CtGroup], ...] | None = None
    format: str = "dense"
    quantization_status: Literal["initialized", "calibration", "frozen", "compressed"] = "initialized"
    kv_cache_scheme: CtArgs | None = None
    global_compression_ratio: float | None = None
    ignore: tuple[str, ...] | None = None
    sparsity_config: CtSparsity | None = None
    dequantize: bool = False
    use_optimized_inference: bool = False
    run_compressed: bool | None = None

    def schemes(self) -> tuple[CtScheme, ...]:
        """The explicit schemes of the config groups (presets excluded)."""
        return tuple(g for _, g in self.config_groups or () if isinstance(g, CtScheme))

    @property
    def effective_dequantize(self) -> bool:
        """Whether weights are decompressed at load (``dequantize`` or ``run_compressed: false``)."""
        return self.dequantize or self.run_compressed is False
