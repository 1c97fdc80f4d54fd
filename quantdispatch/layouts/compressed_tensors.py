"""compressed-tensors' ``pack-quantized`` integer weights, as llm-compressor writes them (W4A16, W8A16).

One linear layer with ``in_features`` K, ``out_features`` N, ``bits`` b and G groups (G = 1 for
the ``channel`` strategy) holds::

    weight_packed      I32  [N, K * b / 32]   codes ``q + 2**(b-1)`` as one little-endian bit stream per row
    weight_scale       F16  [N, G]            (BF16 or F32 as the model was)
    weight_zero_point  I32  [N * b / 32, G]   asymmetric only: zero points, the same stream along the output dimension
    weight_shape       I64  [2]               ``[N, K]``

and ``W[n, k] = (q[n, k] - z[n, g]) * s[n, g]`` with ``g = k // group_size`` (compressed-tensors'
``PackedQuantizationCompressor`` and ``_dequantize``, 0.20.1). In the stored unsigned codes ``u = q + 2**(b-1)``
this is ``(u - (z + 2**(b-1))) * s``; a symmetric layer has ``z = 0``.

``int-quantized`` (and ``naive-quantized``) 8-bit checkpoints, W8A16 and W8A8, store one int8
per weight instead (``CtIntQuantized``, below); their activation quantization is not applied here.

This file is the whole of the format's support: the pure description, the ``layout_of`` rule, and
(imported only when a load runs) the dequantization the portable module calls and the conversion
to the int4 kernels' input. Transformers 5.24 with compressed-tensors 0.20.1 cannot load the
asymmetric checkpoints packed (their zero points stay unpacked on the meta device); here they load
packed, on the portable module or on the CPU int4 kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from ..configs.compressed_tensors import CompressedTensors, CtArgs, CtScheme
from .base import FLOAT_CODES, AbstractIntLayout, AbstractLayout, Lazy, Sign, TensorDecl, Tensors, Unpackable, declare_layout, layout_of
from .fp4 import NVFP4_FORMAT, ct_nvfp4_layout

if TYPE_CHECKING:
    import torch

__all__ = ["CtPackQuantized", "CtIntQuantized", "ct_layout", "ct_int_layout", "int4_weights"]

_PACK_QUANTIZED = "pack-quantized"
_BITS = (4, 8)


@declare_layout
@attrs.frozen(kw_only=True)
class CtPackQuantized(AbstractIntLayout):
    """compressed-tensors ``pack-quantized`` integer weights: ``bits`` 4 or 8, ``group_size`` -1
    for the ``channel`` strategy, ``symmetric``: no zero points stored."""

    symmetric: bool

    marker: ClassVar[str] = "weight_packed"
    forms: ClassVar[Mapping[str, Lazy[Any]]] = MappingProxyType({"int4": Lazy(__name__, "int4_weights")})

    def groups(self, in_features: int) -> int:
        """Scales per output row."""
        return 1 if self.group_size == -1 else in_features // self.group_size

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        per_word = 32 // self.bits
        if in_features <= 0 or out_features <= 0 or in_features % per_word:
            return Unpackable("compressed-tensors.shape.not_packable", f"pack-quantized {self.bits}-bit packs {per_word} values per "
                              f"int32 word; in_features={in_features} is not a multiple")
        if self.group_size != -1 and (self.group_size <= 0 or in_features % self.group_size):
            return Unpackable("compressed-tensors.shape.not_packable",
                              f"in_features={in_features} is not a whole number of groups of {self.group_size}")
        if not self.symmetric and out_features % per_word:
            return Unpackable("compressed-tensors.shape.not_packable", f"asymmetric zero points pack {per_word} output rows per "
                              f"int32 word; out_features={out_features} is not a multiple")
        groups = self.groups(in_features)
        found = {"weight_packed": TensorDecl((out_features, in_features // per_word), "I32"),
                 "weight_scale": TensorDecl((out_features, groups), "F16", FLOAT_CODES),
                 "weight_shape": TensorDecl((2,), "I64", ("I64", "I32"))}
        if not self.symmetric:
            found["weight_zero_point"] = TensorDecl((out_features // per_word, groups), "I32")
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        packed = shapes.get("weight_packed")
        return packed[0] if packed is not None and len(packed) == 2 else None

    def finite(self) -> frozenset[str]:
        return frozenset({"weight_scale"})

    def fixed(self, in_features: int, out_features: int) -> Mapping[str, tuple[int, ...]]:
        """``weight_shape`` is ``[N, K]``."""
        return {"weight_shape": (out_features, in_features)}

    def describe(self) -> str:
        groups = "one scale per output row (channel)" if self.group_size == -1 else f"groups of {self.group_size}"
        zeros = "symmetric" if self.symmetric else "asymmetric (zero points packed along the output dimension)"
        return f"compressed-tensors pack-quantized {self.bits}-bit codes in int32 words along the input dimension, {groups}, {zeros}"

    def dequantize(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """``(u - z) * s`` in float32 (exact for fp16/bf16 scales), rounded once to ``dtype``."""
        import torch

        codes, zeros, scale = _unpacked(self, tensors)
        n, k = codes.shape
        size = k if self.group_size == -1 else self.group_size
        weight = codes.to(torch.float32).view(n, k // size, size)
        weight.sub_(zeros.unsqueeze(2)).mul_(scale.unsqueeze(2))
        return weight.view(n, k).to(dtype)


def _unpacked(layout: CtPackQuantized, tensors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unsigned codes ``[N, K]`` (uint8), zero points in the same unsigned terms and scales
    ``[N, G]`` (float32)."""
    import torch

    from ..kernels._bits import unpack_last

    bits = layout.bits
    codes = unpack_last(tensors["weight_packed"], bits)
    scale = tensors["weight_scale"].to(torch.float32)
    n = codes.shape[0]
    if layout.symmetric:
        zeros = torch.full_like(scale, float(1 << (bits - 1)))
    else:
        zeros = unpack_last(tensors["weight_zero_point"].t().contiguous(), bits).t()[:n].to(torch.float32)
    return codes, zeros, scale


def int4_weights(module: Any) -> Any:
    """A loaded 4-bit layer's ``Int4Weights`` (the int4 kernels' input): ``zero = (8 - z) * s``."""
    from ..kernels.int4 import Int4Weights

    layout: CtPackQuantized = module.layout
    if layout.bits != 4:
        return f"{layout.bits}-bit codes: the int4 kernels take 4-bit ones"
    codes, zeros, scale = _unpacked(layout, module.tensors())
    size = codes.shape[1] if layout.group_size == -1 else layout.group_size
    return Int4Weights(codes, scale.t().contiguous(), ((8 - zeros) * scale).t().contiguous(), size)


_INT_QUANTIZED = ("int-quantized", "naive-quantized")
CtIntStrategy = Literal["tensor", "channel", "group"]
CtActivations = Literal["float", "dynamic", "static", "static-asymmetric"]


@declare_layout
@attrs.frozen(kw_only=True)
class CtIntQuantized(AbstractIntLayout):
    """compressed-tensors ``int-quantized`` (and ``naive-quantized``) 8-bit integer weights, one
    int8 code per weight (W8A16, W8A8). One layer with ``in_features`` K and ``out_features`` N holds::

        weight             I8   [N, K]   signed codes q
        weight_scale       F16  S        (BF16 or F32 as the model was)
        weight_zero_point  I8   S        asymmetric only
        input_scale        F16  [1]      W8A8 with static activation scales only
        input_zero_point   I8   [1]      and asymmetric activations

    with S ``[1]`` (``tensor``), ``[N, 1]`` (``channel``) or ``[N, K / group_size]`` (``group``),
    and ``W[n, k] = (q[n, k] - z) * s`` (``NaiveQuantizationCompressor`` and ``_dequantize``, 0.20.1).
    Activations are not quantized here: ``activations`` says what the checkpoint asks, and the
    plan says it in a note.

    Attributes:
        strategy: Scope of one weight scale; ``group_size`` is -1 unless ``group``.
        symmetric: No weight zero points stored.
        activations: ``float`` (W8A16), ``dynamic`` (W8A8, scales computed per call: none stored),
            ``static`` (one stored scale) or ``static-asymmetric`` (and a zero point).
    """

    strategy: CtIntStrategy
    symmetric: bool
    activations: CtActivations = "float"

    marker: ClassVar[str] = "weight_scale"

    def scale_shape(self, in_features: int, out_features: int) -> tuple[int, ...]:
        """The shape of ``weight_scale`` (and of ``weight_zero_point``)."""
        if self.strategy == "tensor":
            return (1,)
        return (out_features, 1 if self.strategy == "channel" else in_features // self.group_size)

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        if in_features <= 0 or out_features <= 0:
            return Unpackable("compressed-tensors.shape.not_packable", f"a {in_features} -> {out_features} layer holds no weights")
        if self.strategy == "group" and (self.group_size <= 0 or in_features % self.group_size):
            return Unpackable("compressed-tensors.shape.not_packable",
                              f"in_features={in_features} is not a whole number of groups of {self.group_size}")
        scale = self.scale_shape(in_features, out_features)
        found = {"weight": TensorDecl((out_features, in_features), "I8"), "weight_scale": TensorDecl(scale, "F16", FLOAT_CODES)}
        if not self.symmetric:
            found["weight_zero_point"] = TensorDecl(scale, "I8")
        if self.activations in ("static", "static-asymmetric"):
            found["input_scale"] = TensorDecl((1,), "F16", FLOAT_CODES)
        if self.activations == "static-asymmetric":
            found["input_zero_point"] = TensorDecl((1,), "I8")
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        weight = shapes.get("weight")
        return weight[0] if weight is not None and len(weight) == 2 else None

    def finite(self) -> frozenset[str]:
        return frozenset({"weight_scale", "input_scale"})

    def signs(self) -> Mapping[str, Sign]:
        return {"weight_scale": "nonnegative", "input_scale": "nonnegative"}

    def describe(self) -> str:
        scope = {"tensor": "one scale per tensor", "channel": "one scale per output row (channel)",
                 "group": f"groups of {self.group_size}"}[self.strategy]
        zeros = "symmetric" if self.symmetric else "asymmetric (int8 zero points)"
        acts = "" if self.activations == "float" else f", int8 activations ({self.activations}) computed in floating point"
        return f"compressed-tensors int-quantized 8-bit codes, one int8 per weight, {scope}, {zeros}{acts}"

    def notes(self) -> tuple[str, ...]:
        if self.activations == "float":
            return ()
        kept = "; its stored input scales are loaded and not applied" if self.activations != "dynamic" else ""
        return (f"the checkpoint quantizes activations to int8 ({self.activations}); this kernel computes them in "
                f"floating point against the exact int8 weights{kept}",)

    def dequantize(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """``(q - z) * s`` in float32 (exact for fp16/bf16 scales), rounded once to ``dtype``."""
        import torch

        codes = tensors["weight"]
        n, k = codes.shape
        rows = 1 if self.strategy == "tensor" else n
        groups = k // self.group_size if self.strategy == "group" else 1
        weight = codes.to(torch.float32).view(rows, groups, -1)
        if not self.symmetric:
            weight.sub_(tensors["weight_zero_point"].to(torch.float32).view(rows, groups, 1))
        weight.mul_(tensors["weight_scale"].to(torch.float32).view(rows, groups, 1))
        return weight.view(n, k).to(dtype)


def _weights(config: CompressedTensors) -> CtArgs | None:
    """The one weight scheme every group shares, if the checkpoint is weight-only pack-quantized."""
    schemes = config.schemes()
    if not schemes or len(schemes) != len(config.config_groups or ()):
        return None  # presets or nothing: no explicit weight arguments
    args = {s.weights for s in schemes}
    if len(args) != 1 or not all(_weight_only_packed(s, config.format) for s in schemes):
        return None
    return next(iter(args))


def _weight_only_packed(scheme: CtScheme, default_format: str) -> bool:
    return (scheme.format or default_format) == _PACK_QUANTIZED and scheme.input_activations is None and scheme.output_activations is None


def _uniform_scheme(config: CompressedTensors) -> tuple[CtScheme, str] | None:
    """The one scheme every config group shares (targets aside), with its format, if there is one."""
    schemes = config.schemes()
    if not schemes or len(schemes) != len(config.config_groups or ()):
        return None  # presets or nothing: no explicit arguments
    kinds = {(s.weights, s.input_activations, s.output_activations, s.format or config.format) for s in schemes}
    return (schemes[0], schemes[0].format or config.format) if len(kinds) == 1 else None


def _int_activations(inputs: CtArgs | None) -> CtActivations | None:
    """What an int8 checkpoint stores for its input activations (``None``: a scheme not loaded here)."""
    if inputs is None:
        return "float"
    if inputs.type != "int" or inputs.num_bits != 8:
        return None
    if inputs.dynamic is True:
        return "dynamic"
    if inputs.dynamic is False and inputs.effective_strategy == "tensor":
        return "static" if inputs.symmetric else "static-asymmetric"
    return None


def ct_int_layout(scheme: CtScheme) -> CtIntQuantized | None:
    """The layout of an ``int-quantized`` / ``naive-quantized`` checkpoint's scheme: 8-bit integer
    weights (W8A16, W8A8), or ``None``."""
    weights, activations = scheme.weights, _int_activations(scheme.input_activations)
    if (weights is None or activations is None or scheme.output_activations is not None or weights.type != "int"
            or weights.num_bits != 8 or weights.actorder is not None or weights.dynamic is not False):
        return None
    strategy = weights.effective_strategy
    if strategy == "tensor" or strategy == "channel":
        return CtIntQuantized(bits=8, group_size=-1, strategy=strategy, symmetric=weights.symmetric, activations=activations)
    if strategy == "group" and weights.group_size is not None and weights.group_size > 0:
        return CtIntQuantized(bits=8, group_size=weights.group_size, strategy="group", symmetric=weights.symmetric,
                              activations=activations)
    return None


def ct_layout(config: CompressedTensors) -> AbstractLayout | None:
    """The layout of a ``pack-quantized`` weight-only integer checkpoint, an ``int-quantized`` 8-bit
    one or an ``nvfp4-pack-quantized`` one (``None`` for anything else: other formats, act-order,
    mixed schemes)."""
    uniform = _uniform_scheme(config)
    if uniform is not None:
        scheme, fmt = uniform
        found = ct_int_layout(scheme) if fmt in _INT_QUANTIZED else ct_nvfp4_layout(scheme) if fmt == NVFP4_FORMAT else None
        if found is not None:
            return found  # else fall through: naive-quantized float weights, for one, are not int8
    weights = _weights(config)
    if weights is None or weights.type != "int" or weights.num_bits not in _BITS or weights.actorder is not None or weights.dynamic:
        return None
    strategy = weights.effective_strategy
    if strategy == "channel":
        return CtPackQuantized(bits=weights.num_bits, group_size=-1, symmetric=weights.symmetric)
    if strategy == "group" and weights.group_size is not None and weights.group_size > 0:
        return CtPackQuantized(bits=weights.num_bits, group_size=weights.group_size, symmetric=weights.symmetric)
    return None


@layout_of.register(CompressedTensors)
def _ct_layout(config: CompressedTensors, /) -> AbstractLayout | None:
    from .fp8 import ct_fp8_layout  # 8-bit float weights have their own layout file

    return ct_layout(config) or ct_fp8_layout(config)
