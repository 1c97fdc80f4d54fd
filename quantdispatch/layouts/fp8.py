"""FP8 (E4M3) weights with float scales: Transformers' fine-grained ``fp8``, ``fbgemm_fp8``,
compressed-tensors' ``float-quantized`` and NVIDIA ModelOpt's ``FP8``.

One linear layer with ``in_features`` K and ``out_features`` N holds::

    weight            F8_E4M3  [N, K]
    <scale>           F32      one scale per tensor, per output row ([N, 1]) or per block
                               ([ceil(N / bn), ceil(K / bk)] for blocks of bn rows and bk columns)
    input_scale       F32      ModelOpt and static compressed-tensors activations: read, not used

MXFP8 (OCP MX, ``quant_method: "mxfp8"``, Transformers' fine-grained FP8 path) is the block case
with ``[1, 32]`` blocks and E8M0 scales stored as bytes (``U8``): byte ``b`` is ``2 ** (b - 127)``,
and 255 is NaN, refused at load as a non-finite scale.

and ``W[n, k] = float(w[n, k]) * s`` with ``s`` the scale of the tensor, of row n, or of the
block ``(n // bn, k // bk)``: a partial block at the bottom or right edge has its own scale, as
Transformers' ``FP8Linear`` allocates them and its ``_dequantize_fp8_weight`` applies them, and as
compressed-tensors pads the weight before it quantizes by blocks. The scale is called
``weight_scale_inv`` in Transformers' ``fp8`` checkpoints (it multiplies, despite the name) and
``weight_scale`` everywhere else.

The weight is one float32 multiplication of the byte's value by its scale (one rounding, exact for
bfloat16 and float16 scales: 4 significant bits times 8 or 11 fit in float32's 24), as Transformers
computes it. compressed-tensors computes it in the scale's own dtype (``_dequantize``:
``x_q.to(scale.dtype) * scale``): with bfloat16 or float16 scales its weight is the exact float32
product rounded once to that dtype, and so is this layout's for its checkpoints.

The weight is computed in float; activations stay in the compute dtype (no FP8 matmul runs), so a
checkpoint's activation scales are read and left unused. Only the e4m3 bytes stay in memory: the
portable module dequantizes per call, or once with ``dequantize_at_load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import attrs

from ..configs.compressed_tensors import CompressedTensors, CtArgs, CtScheme
from ..configs.fp8 import FbgemmFp8, Fp8, Mxfp8
from ..configs.modelopt import ModeloptFp8
from .base import FLOAT_CODES, AbstractLayout, Lazy, Sign, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

if TYPE_CHECKING:
    import torch

__all__ = ["Granularity", "AbstractFp8Layout", "Fp8ScaleInv", "Fp8Scaled", "fp8_layout", "mxfp8_layout", "fbgemm_fp8_layout",
           "modelopt_fp8_layout", "ct_fp8_layout", "fp8_blocks", "float_scales", "MX_BLOCK"]

Granularity = Literal["tensor", "channel", "block"]
E4M3: Final = "F8_E4M3"
SCALE_CODES: Final = (*FLOAT_CODES, "F8_E8M0")
"""Scale dtypes read: any float, and E8M0 (UE8M0 powers of two, as Transformers writes them)."""
EXPONENT_CODES: Final = ("U8", "F8_E8M0")
"""Scale dtypes of an exponent-scaled (MX) layout: E8M0 bytes as ``U8`` (as MXFP8 checkpoints ship them) or typed."""
MX_BLOCK: Final = (1, 32)
"""OCP MX's block: 32 consecutive weights of a row share one E8M0 scale."""
_CT_FORMATS: Final = ("float-quantized", "naive-quantized")
"""compressed-tensors formats that store 8-bit float weights as e4m3 bytes (the naive compressor
casts to the args' dtype; ``float-quantized`` is its FP8 alias)."""


@attrs.frozen(kw_only=True)
class AbstractFp8Layout(AbstractLayout):
    """E4M3 weights and one float scale per tensor, output row or block; the subclasses name the scale.

    Attributes:
        granularity: What one scale covers: the ``tensor``, an output row (``channel``), a ``block``.
        block: ``(rows, columns)`` of a block, for ``block``.
        scalar_shape: The shape a per-tensor scale is stored in (``()`` or ``(1,)``, by producer).
        activation_scales: Float tensors a layer stores that weight-only compute does not read (activation scales).
        scale_rounding: The weight is rounded to the scale's dtype, as the producer's own
            dequantization computes it (compressed-tensors).
        exponent_scales: The scales are E8M0 exponents (MX), stored as bytes: ``2 ** (b - 127)``.
        producer: Who writes this layout, for ``describe``.
        kv_cache: The checkpoint quantizes the KV cache (ModelOpt ``kv_cache_quant_algo``):
            ``k_proj`` and ``v_proj`` also store ``k_scale`` / ``v_scale``, which are not read (the
            cache stays in the compute dtype).
    """

    scale_name: ClassVar[str] = "weight_scale"
    forms: ClassVar[Mapping[str, Lazy[Any]]] = MappingProxyType({"fp8": Lazy(__name__, "fp8_blocks")})

    granularity: Granularity
    block: tuple[int, int] | None = None
    scalar_shape: tuple[int, ...] = ()
    activation_scales: tuple[str, ...] = ()
    scale_rounding: bool = False
    exponent_scales: bool = False
    producer: str = "FP8"
    kv_cache: bool = False

    def scale_shape(self, in_features: int, out_features: int) -> tuple[int, ...] | Unpackable:
        """The scale tensor's shape for a layer of this size, or why there is none."""
        if self.granularity == "tensor":
            return self.scalar_shape
        if self.granularity == "channel":
            return (out_features, 1)
        if self.block is None or min(self.block) <= 0:
            return Unpackable("fp8.block.invalid", f"a block scale needs a block of two positive sizes (rows, columns), got {self.block}")
        rows, cols = self.block
        return (-(-out_features // rows), -(-in_features // cols))

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        if in_features <= 0 or out_features <= 0:
            return Unpackable("fp8.shape.empty", f"a layer of {in_features} -> {out_features} holds no weights")
        shape = self.scale_shape(in_features, out_features)
        if isinstance(shape, Unpackable):
            return shape
        scale = TensorDecl(shape, "U8", EXPONENT_CODES) if self.exponent_scales else TensorDecl(shape, "F32", SCALE_CODES)
        found = {"weight": TensorDecl((out_features, in_features), E4M3), self.scale_name: scale}
        found.update((name, TensorDecl(self.scalar_shape, "F32", FLOAT_CODES)) for name in self.activation_scales)
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        weight = shapes.get("weight")
        return weight[0] if weight is not None and len(weight) == 2 else None

    def finite(self) -> frozenset[str]:
        return frozenset({"weight", self.scale_name})

    def signs(self) -> Mapping[str, Sign]:
        return {} if self.exponent_scales else {self.scale_name: "nonnegative"}

    def views(self) -> Mapping[str, str]:
        return {self.scale_name: "F8_E8M0"} if self.exponent_scales else {}

    def unused(self) -> frozenset[str]:
        return frozenset({"k_scale", "v_scale"}) if self.kv_cache else frozenset()

    def notes(self) -> tuple[str, ...]:
        return ("the checkpoint quantizes the KV cache; it stays in the compute dtype here (k_scale/v_scale are not read)",) if (
            self.kv_cache) else ()

    def describe(self) -> str:
        if self.granularity == "block" and self.block is not None:
            scope = f"one {self.scale_name} per block of {self.block[0]}x{self.block[1]}"
        else:
            scope = f"one {self.scale_name} per {'output row' if self.granularity == 'channel' else 'tensor'}"
        unused = f"; {', '.join(self.activation_scales)} read and unused" if self.activation_scales else ""
        return (f"{self.producer} FP8 E4M3 weights kept as stored, {scope}; weight-only compute: activations stay in the "
                f"compute dtype{unused}")

    def dequantize(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """``float(w) * s`` in float32 (one rounding), rounded to the scale's dtype where the producer does, then to ``dtype``."""
        import torch

        stored = tensors[self.scale_name]
        weight = tensors["weight"].to(torch.float32)
        scale = float_scales(stored)
        if self.granularity == "block" and self.block is not None:
            _scale_blocks(weight, scale, self.block)
        else:
            weight.mul_(scale.reshape(-1, 1) if self.granularity == "channel" else scale.reshape(()))
        if self.scale_rounding and stored.dtype != torch.float32:
            weight = weight.to(stored.dtype)
        return weight.to(dtype)


def float_scales(stored: torch.Tensor) -> torch.Tensor:
    """Scales as float32: E8M0 bytes (``uint8``) are ``2 ** (b - 127)``, computed as Transformers'
    ``Fp8Dequantize`` does (exact: every value is a power of two float32 holds); floats convert."""
    import torch

    if stored.dtype == torch.uint8:
        return (stored.to(torch.float32) - 127.0).exp2()
    return stored.to(torch.float32)


def _scale_blocks(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> None:
    """Multiply ``weight`` ``[N, K]`` in place by its block scales ``[ceil(N/bn), ceil(K/bk)]``.

    The scales are repeated over rows only (``N * ceil(K/bk)`` values); over columns they
    broadcast through a view of the weight, and the last partial column block takes the last scale."""
    rows, cols = block
    n, k = weight.shape
    per_row = scale.repeat_interleave(rows, dim=0)[:n]
    full = k // cols
    weight[:, :full * cols].view(n, full, cols).mul_(per_row[:, :full, None])  # splits the one column dimension: a view
    if k > full * cols:
        weight[:, full * cols:].mul_(per_row[:, full:])


def fp8_blocks(module: Any) -> Any:
    """A loaded layer's ``Fp8Blocks`` (the native FP8 kernel's input), or why it has none: every
    granularity is a block (the tensor, a row); the bytes are the loaded weight's storage."""
    import torch

    from ..kernels.fp8_native import Fp8Blocks

    layout: AbstractFp8Layout = module.layout
    tensors = module.tensors()
    weight, stored = tensors["weight"], tensors[layout.scale_name]
    round_bf16 = layout.scale_rounding and stored.dtype == torch.bfloat16  # the kernel rounds each weight as the producer does
    if layout.scale_rounding and stored.dtype not in (torch.float32, torch.bfloat16):
        return f"each weight is rounded to its {stored.dtype} scale's dtype, which the kernel does only for bfloat16"
    n, k = weight.shape
    scale = float_scales(stored)
    if layout.granularity == "block" and layout.block is not None:
        return Fp8Blocks(weight.view(torch.uint8), scale.contiguous(), *layout.block, round_bf16=round_bf16)
    if layout.granularity == "channel":
        return Fp8Blocks(weight.view(torch.uint8), scale.reshape(n, 1).contiguous(), 1, k, round_bf16=round_bf16)
    return Fp8Blocks(weight.view(torch.uint8), scale.reshape(1, 1).contiguous(), n, k, round_bf16=round_bf16)


@declare_layout
@attrs.frozen(kw_only=True)
class Fp8ScaleInv(AbstractFp8Layout):
    """Transformers' fine-grained FP8 (DeepSeek-V3, Qwen3-FP8): ``weight_scale_inv`` per block, or
    one per tensor without ``weight_block_size``."""

    scale_name: ClassVar[str] = "weight_scale_inv"
    marker: ClassVar[str] = "weight_scale_inv"


@declare_layout
@attrs.frozen(kw_only=True)
class Fp8Scaled(AbstractFp8Layout):
    """FP8 weights with a ``weight_scale``: FBGEMM's per row, compressed-tensors' per tensor, row or
    block, ModelOpt's per tensor."""

    scale_name: ClassVar[str] = "weight_scale"
    marker: ClassVar[str] = "weight_scale"


def fp8_layout(config: Fp8) -> Fp8ScaleInv | None:
    """Transformers ``fp8``: blocks of ``weight_block_size``, or one scale per tensor. UE8M0 scales
    (``scale_fmt``) are powers of two, stored as float32 or as ``float8_e8m0fnu``: the same product."""
    producer = "Transformers fine-grained" + (" (UE8M0 scales)" if config.scale_fmt == "ue8m0" else "")
    block = config.weight_block_size
    if block is None:
        return Fp8ScaleInv(granularity="tensor", producer=producer)
    if len(block) != 2:
        return None
    return Fp8ScaleInv(granularity="block", block=(block[0], block[1]), producer=producer)


def mxfp8_layout(config: Mxfp8) -> Fp8ScaleInv:
    """MXFP8: E4M3 weights, one E8M0 byte per ``[1, 32]`` block. The block is the format's
    definition, not the config's ``weight_block_size`` (which the shared fine-grained FP8 config
    defaults to 128x128); Transformers likewise reads the block from the scale grid."""
    return Fp8ScaleInv(granularity="block", block=MX_BLOCK, exponent_scales=True, producer="MXFP8 (OCP MX, E8M0 scales)")


def fbgemm_fp8_layout(config: FbgemmFp8) -> Fp8Scaled:
    """FBGEMM's FP8: one float32 scale per output row, ``[N, 1]``."""
    return Fp8Scaled(granularity="channel", producer="FBGEMM")


def modelopt_fp8_layout(config: ModeloptFp8) -> Fp8Scaled:
    """ModelOpt FP8: a scalar ``weight_scale`` and a scalar static ``input_scale`` per layer; with an
    FP8 KV cache, ``k_scale`` / ``v_scale`` beside ``k_proj`` / ``v_proj`` (declared unused)."""
    return Fp8Scaled(granularity="tensor", activation_scales=("input_scale",), producer="ModelOpt",
                     kv_cache=config.kv_cache_quant_algo is not None)


def _ct_weights(config: CompressedTensors) -> CtScheme | None:
    """The one scheme every config group shares, if all store their weights as 8-bit floats."""
    schemes = config.schemes()
    if not schemes or len(schemes) != len(config.config_groups or ()):
        return None  # presets or nothing: no explicit weight arguments
    if len({(s.weights, s.input_activations, s.output_activations, s.format or config.format) for s in schemes}) != 1:
        return None
    return schemes[0]


def _float8(args: CtArgs) -> bool:
    return args.type == "float" and args.num_bits == 8 and args.symmetric


def ct_fp8_layout(config: CompressedTensors) -> Fp8Scaled | None:
    """compressed-tensors ``float-quantized`` (or ``naive-quantized``) 8-bit float weights, per
    tensor, channel or block; ``None`` for anything else (zero points, groups, output activations,
    mixed schemes)."""
    scheme = _ct_weights(config)
    if scheme is None or (scheme.format or config.format) not in _CT_FORMATS or scheme.output_activations is not None:
        return None
    weights, inputs = scheme.weights, scheme.input_activations
    if weights is None or not _float8(weights) or weights.dynamic or weights.actorder is not None:
        return None
    static_inputs = inputs is not None and inputs.dynamic is False
    if inputs is not None and not (_float8(inputs) and (inputs.dynamic is True or inputs.effective_strategy == "tensor")):
        return None  # only a dynamic or a per-tensor static activation scheme: its one scale is all it stores
    unused = ("input_scale",) if static_inputs else ()
    producer = "compressed-tensors float-quantized"
    strategy = weights.effective_strategy
    block = weights.block_structure
    if strategy == "tensor" or strategy == "channel":
        return Fp8Scaled(granularity=strategy, activation_scales=unused, scale_rounding=True, scalar_shape=(1,), producer=producer)
    if strategy == "block" and block is not None and len(block) == 2:
        return Fp8Scaled(granularity="block", block=(block[0], block[1]), activation_scales=unused, scale_rounding=True, scalar_shape=(1,),
                         producer=producer)
    return None


@layout_of.register(Fp8)
def _fp8(config: Fp8, /) -> Fp8ScaleInv | None:
    return fp8_layout(config)


@layout_of.register(Mxfp8)
def _mxfp8(config: Mxfp8, /) -> Fp8ScaleInv:
    return mxfp8_layout(config)


@layout_of.register(FbgemmFp8)
def _fbgemm(config: FbgemmFp8, /) -> Fp8Scaled:
    return fbgemm_fp8_layout(config)


@layout_of.register(ModeloptFp8)
def _modelopt(config: ModeloptFp8, /) -> Fp8Scaled:
    return modelopt_fp8_layout(config)
