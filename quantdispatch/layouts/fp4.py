"""NVFP4: 4-bit E2M1 floating-point weights, two per byte, an FP8 (E4M3) scale per 16 of them and
one float32 scale per tensor, as compressed-tensors (``nvfp4-pack-quantized``) and NVIDIA ModelOpt
(``quant_algo: "NVFP4"``) store them.

An E2M1 code is 4 bits, ``s e e m``: the sign, then an index into the eight magnitudes
``0, 0.5, 1, 1.5, 2, 3, 4, 6``. Two codes share a byte along the input dimension, the first (even
column) in the low nibble::

    byte  = code[2j + 1] << 4 | code[2j]          bits 7..4: column 2j+1, bits 3..0: column 2j

(compressed-tensors' ``pack_fp4_to_uint8`` and ModelOpt's ``NVFP4QTensor.quantize`` agree). A layer
with ``in_features`` K (a multiple of 16) and ``out_features`` N holds, in each format::

    compressed-tensors                          ModelOpt
    weight_packed        U8       [N, K / 2]    weight          U8       [N, K / 2]
    weight_scale         F8_E4M3  [N, K / 16]   weight_scale    F8_E4M3  [N, K / 16]
    weight_global_scale  F32      [1]   g       weight_scale_2  F32      []    s2
    input_global_scale   F32      [1]  (W4A4)   input_scale     F32      []   (activations)

and the weight of column k in row n, with ``b = k // 16``, is

- compressed-tensors: ``e2m1(code) * (scale[n, b] / g)`` (``NVFP4PackedCompressor.decompress`` and
  ``_dequantize``, 0.20.1: the global scale divides);
- ModelOpt: ``e2m1(code) * (scale[n, b] * s2)`` (``NVFP4QTensor.dequantize``: it multiplies), so
  compressed-tensors' ModelOpt converter stores ``g = 1 / s2``.

Both are computed in float32 and rounded once to the compute dtype. Activations are not quantized
here; a checkpoint that asks for FP4 activations gets a note in its plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import attrs

from ..configs.compressed_tensors import CtArgs, CtScheme
from ..configs.modelopt import ModeloptMixed, ModeloptNvfp4
from .base import FLOAT_CODES, AbstractLayout, Lazy, Sign, TensorDecl, Tensors, Unpackable, declare_layout, layout_of

if TYPE_CHECKING:
    import torch

__all__ = ["E2M1", "NVFP4_BLOCK", "NVFP4_FORMAT", "CtNvfp4", "ModeloptNvfp4Blocks", "ct_nvfp4_layout", "modelopt_nvfp4_layout",
           "e2m1_unpack", "nvfp4_weights"]

E2M1: Final[tuple[float, ...]] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
"""The value of each 4-bit E2M1 code: bit 3 the sign, bits 2..0 the magnitude's index."""
_BYTE_PAIRS: Final = tuple((E2M1[b & 0x0F], E2M1[b >> 4]) for b in range(256))
"""The two values of each byte, low nibble first."""
NVFP4_BLOCK: Final = 16
"""Weights per FP8 block scale."""

NVFP4_FORMAT: Final = "nvfp4-pack-quantized"
"""compressed-tensors' format string."""
_E4M3_SPELLINGS: Final = (None, "torch.float8_e4m3fn", "float8_e4m3fn")
FP4Activations = Literal["float", "dynamic", "static"]


_FORMS: Final[Mapping[str, Lazy[Any]]] = MappingProxyType({"nvfp4": Lazy(__name__, "nvfp4_weights")})
"""The NVFP4 kernels' input: the stored codes and one float32 scale per block."""


def _unpackable(in_features: int, out_features: int) -> Unpackable | None:
    if in_features <= 0 or out_features <= 0 or in_features % NVFP4_BLOCK:
        return Unpackable("nvfp4.shape.not_blocks", f"NVFP4 scales blocks of {NVFP4_BLOCK} input columns; a {in_features} -> "
                          f"{out_features} layer is not a whole number of blocks per row")
    return None


def _blocks(in_features: int, out_features: int) -> tuple[TensorDecl, TensorDecl]:
    """The packed codes and the block scales, as both formats store them."""
    return (TensorDecl((out_features, in_features // 2), "U8"), TensorDecl((out_features, in_features // NVFP4_BLOCK), "F8_E4M3"))


def _out_features(shapes: Mapping[str, tuple[int, ...]], name: str) -> int | None:
    packed = shapes.get(name)
    return packed[0] if packed is not None and len(packed) == 2 else None


def _fp4_note(kind: str) -> tuple[str, ...]:
    return (f"the checkpoint quantizes activations to FP4 ({kind}); this kernel computes them in floating point against "
            "the exact FP4 weights",)


@declare_layout
@attrs.frozen(kw_only=True)
class CtNvfp4(AbstractLayout):
    """compressed-tensors ``nvfp4-pack-quantized`` weights (presets ``NVFP4A16`` and ``NVFP4``).

    Attributes:
        activations: ``float`` (W4A16), ``dynamic`` (FP4 activations, nothing stored) or
            ``static`` (FP4 activations with a stored ``input_global_scale``).
    """

    activations: FP4Activations = "float"

    marker: ClassVar[str] = "weight_packed"
    forms: ClassVar[Mapping[str, Lazy[Any]]] = _FORMS

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        bad = _unpackable(in_features, out_features)
        if bad is not None:
            return bad
        packed, scale = _blocks(in_features, out_features)
        found = {"weight_packed": packed, "weight_scale": scale, "weight_global_scale": TensorDecl((1,), "F32", FLOAT_CODES)}
        if self.activations == "static":
            found["input_global_scale"] = TensorDecl((1,), "F32", FLOAT_CODES)
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        return _out_features(shapes, "weight_packed")

    def finite(self) -> frozenset[str]:
        return frozenset({"weight_scale", "weight_global_scale", "input_global_scale"})

    def signs(self) -> Mapping[str, Sign]:
        return {"weight_scale": "nonnegative", "weight_global_scale": "positive", "input_global_scale": "positive"}

    def describe(self) -> str:
        acts = "" if self.activations == "float" else f", FP4 activations ({self.activations}) computed in floating point"
        return ("compressed-tensors nvfp4-pack-quantized: E2M1 codes two per byte, an E4M3 scale per 16 inputs, "
                f"divided by a float32 global scale{acts}")

    def notes(self) -> tuple[str, ...]:
        return () if self.activations == "float" else _fp4_note(self.activations)

    def block_scales(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The float32 scale of each block, ``scale / global_scale`` ``[N, K / 16]``."""
        import torch

        return tensors["weight_scale"].to(torch.float32) / tensors["weight_global_scale"].to(torch.float32)

    def dequantize(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """``e2m1(code) * (scale / global_scale)`` in float32, rounded once to ``dtype``."""
        return _scaled(tensors["weight_packed"], self.block_scales(tensors), dtype)


@declare_layout
@attrs.frozen(kw_only=True)
class ModeloptNvfp4Blocks(AbstractLayout):
    """NVIDIA ModelOpt NVFP4 weights (``hf_quant_config.json``, ``quant_algo: "NVFP4"``): FP4
    weights and activations; the stored per-tensor ``input_scale`` is loaded and not applied.

    Attributes:
        kv_cache: The checkpoint quantizes the KV cache (``kv_cache_quant_algo``): ``k_proj`` and
            ``v_proj`` also store ``k_scale`` / ``v_scale``, which are not read (the cache stays in
            the compute dtype).
    """

    kv_cache: bool = False

    marker: ClassVar[str] = "weight_scale_2"
    forms: ClassVar[Mapping[str, Lazy[Any]]] = _FORMS

    def tensors(self, in_features: int, out_features: int, bias: bool) -> Tensors | Unpackable:
        bad = _unpackable(in_features, out_features)
        if bad is not None:
            return bad
        packed, scale = _blocks(in_features, out_features)
        found = {"weight": packed, "weight_scale": scale, "weight_scale_2": TensorDecl((), "F32", FLOAT_CODES),
                 "input_scale": TensorDecl((), "F32", FLOAT_CODES)}
        if bias:
            found["bias"] = TensorDecl((out_features,), "F16", FLOAT_CODES)
        return found

    def out_features(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        return _out_features(shapes, "weight")

    def finite(self) -> frozenset[str]:
        return frozenset({"weight_scale", "weight_scale_2", "input_scale"})

    def signs(self) -> Mapping[str, Sign]:
        return {"weight_scale": "nonnegative", "weight_scale_2": "positive", "input_scale": "positive"}

    def describe(self) -> str:
        return ("ModelOpt NVFP4: E2M1 codes two per byte, an E4M3 scale per 16 inputs, times a float32 per-tensor scale "
                "(weight_scale_2); FP4 activations computed in floating point")

    def unused(self) -> frozenset[str]:
        return frozenset({"k_scale", "v_scale"}) if self.kv_cache else frozenset()

    def notes(self) -> tuple[str, ...]:
        kv = ("the checkpoint quantizes the KV cache; it stays in the compute dtype here (k_scale/v_scale are not read)",)
        return _fp4_note("static, input_scale loaded and not applied") + (kv if self.kv_cache else ())

    def block_scales(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The float32 scale of each block, ``weight_scale * weight_scale_2`` ``[N, K / 16]``."""
        import torch

        return tensors["weight_scale"].to(torch.float32) * tensors["weight_scale_2"].to(torch.float32)

    def dequantize(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """``e2m1(code) * (weight_scale * weight_scale_2)`` in float32, rounded once to ``dtype``."""
        return _scaled(tensors["weight"], self.block_scales(tensors), dtype)


def e2m1_unpack(packed: torch.Tensor) -> torch.Tensor:
    """The float32 values ``[..., 2 * C]`` of packed E2M1 codes ``[..., C]`` (uint8, low nibble first)."""
    import torch

    # One lookup per byte in a 256-entry table of value pairs: half the gathers of a nibble table
    # and no interleaving step (about twice as fast on a CPU).
    pairs = torch.tensor(_BYTE_PAIRS, dtype=torch.float32, device=packed.device)
    return pairs.index_select(0, packed.reshape(-1).int()).view(*packed.shape[:-1], 2 * packed.shape[-1])


def nvfp4_weights(module: Any) -> Any:
    """A loaded NVFP4 layer's ``"nvfp4"`` form (``Nvfp4Blocks``): its packed codes (uint8 ``[N, K / 2]``)
    and E4M3 block scales (viewed as uint8 ``[N, K / 16]``), both the loaded storage as stored, and its
    float32 per-tensor scale; the kernel computes each block's scale as ``block_scales`` does."""
    import torch

    from ..kernels.fp4_native import Nvfp4Blocks

    layout: CtNvfp4 | ModeloptNvfp4Blocks = module.layout
    tensors = module.tensors()
    ct = isinstance(layout, CtNvfp4)
    packed, scale = tensors["weight_packed" if ct else "weight"], tensors["weight_scale"]
    tensor_scale = tensors["weight_global_scale" if ct else "weight_scale_2"].to(torch.float32).reshape(1)
    return Nvfp4Blocks(packed, scale.view(torch.uint8), tensor_scale, ct)


def _scaled(packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values of ``packed`` ``[N, K / 2]`` times ``scale`` ``[N, K / 16]`` per block, then in ``dtype``."""
    values = e2m1_unpack(packed)
    n, k = values.shape
    values = values.view(n, k // NVFP4_BLOCK, NVFP4_BLOCK).mul_(scale.unsqueeze(-1))
    return values.view(n, k).to(dtype)


def _fp4_activations(inputs: CtArgs | None) -> FP4Activations | None:
    if inputs is None:
        return "float"
    if inputs.type != "float" or inputs.num_bits != 4 or inputs.effective_strategy != "tensor_group":
        return None
    if inputs.dynamic is True:
        return "dynamic"
    return "static" if inputs.dynamic == "local" else None


def ct_nvfp4_layout(scheme: CtScheme) -> CtNvfp4 | None:
    """The layout of an ``nvfp4-pack-quantized`` checkpoint's scheme (symmetric FP4 weights in
    blocks of 16 with E4M3 scales and a global scale), or ``None``."""
    w, activations = scheme.weights, _fp4_activations(scheme.input_activations)
    if (w is None or activations is None or scheme.output_activations is not None or w.type != "float" or w.num_bits != 4
            or w.group_size != NVFP4_BLOCK or w.effective_strategy != "tensor_group" or not w.symmetric or w.dynamic is not False
            or w.scale_dtype not in _E4M3_SPELLINGS):
        return None
    return CtNvfp4(activations=activations)


def modelopt_nvfp4_layout(config: ModeloptNvfp4 | ModeloptMixed) -> ModeloptNvfp4Blocks | None:
    """The layout of a ModelOpt NVFP4 checkpoint (a mixed one whose every quantized layer is NVFP4),
    in blocks of 16, or ``None``."""
    if isinstance(config, ModeloptMixed):
        if config.algorithms() != ("NVFP4",) or any(layer.group_size not in (None, NVFP4_BLOCK) for _, layer in config.quantized_layers):
            return None
    return ModeloptNvfp4Blocks(kv_cache=config.kv_cache_quant_algo is not None) if config.group_size in (None, NVFP4_BLOCK) else None


@layout_of.register(ModeloptNvfp4)
def _modelopt_nvfp4(config: ModeloptNvfp4, /) -> ModeloptNvfp4Blocks | None:
    return modelopt_nvfp4_layout(config)


@layout_of.register(ModeloptMixed)
def _modelopt_mixed(config: ModeloptMixed, /) -> ModeloptNvfp4Blocks | None:
    return modelopt_nvfp4_layout(config)
