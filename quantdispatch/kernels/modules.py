"""Portable quantized linear layers: the checkpoint's packed tensors as buffers, a torch forward.

``GptqLinear`` and ``AwqLinear`` hold their buffers under the names the checkpoint uses
(``qweight``, ``qzeros``, ``scales``, ``g_idx``, ``bias``), so ``load_state_dict`` and safetensors
names match. Two modes:

- default: every forward dequantizes (vectorized, no Python loop over groups) and calls
  ``F.linear``; memory stays at the packed size.
- ``dequantize_at_load=True``: the first forward after loading dequantizes once and keeps the dense
  weight (in the input's dtype, outside the state dict); later forwards are a plain ``F.linear``.
  Bigger (a dense weight per layer), as fast as a dense layer. Loading or moving the buffers
  drops the cache.

The forward is exact in float32 (the dequantized weight is exact); in fp16 and bf16 the weight is
rounded once to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from ..configs.awq import AbstractAwq
from ..configs.gptq import AbstractGptq
from ..layouts.awq import AwqPacked, awq_layout
from ..layouts.base import AbstractLayout
from ..layouts.gptq import GptqPacked, gptq_layout
from ._common import TensorSpec, specs_of
from .awq import dequantize_awq_gemm, dequantize_awq_gemv, dequantize_awq_gemv_fast
from .gptq import dequantize_gptq, gptq_linear, gptq_trivial_g_idx

__all__ = ["GptqLinear", "AwqLinear", "PackedLinear", "dense_linear", "features", "layout_of_module"]


class _PackedLinear(nn.Module):
    """Buffers from a spec map, the optional dense cache, and the forward both methods share."""

    per_call_block: int = 1 << 20
    """Weights dequantized at a time by the per-call forward: small enough to stay in cache."""
    indexes: Mapping[str, tuple[str, int]] = MappingProxyType({})
    """The layout's index tensors: each buffer whose values index another buffer's first
    dimension, with that buffer's name and size. Loading checks every value lies in ``[0, size)``
    before a forward or a repack reads it (``loading.stream.check_values``)."""
    finite: frozenset[str] = frozenset({"scales"})
    """Float buffers that must hold no NaN or infinity (checked at load with the indexes): one
    non-finite scale makes every output of the layer NaN."""
    _dense: torch.Tensor | None
    _dense_key: tuple[tuple[int, int], ...]

    def __init__(
        self, specs: Mapping[str, TensorSpec], in_features: int, out_features: int, *,
        device: torch.device | str | None, dequantize_at_load: bool,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.dequantize_at_load = dequantize_at_load
        self.bias: torch.Tensor | None
        if "bias" not in specs:
            self.bias = None
        for name, spec in specs.items():
            self.register_buffer(name, torch.zeros(spec.shape, dtype=spec.dtype, device=device))
        self._dense = None
        self._dense_key = ()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out_features, in_features]`` these buffers hold."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` with W dequantized now, or once if ``dequantize_at_load``."""
        if self.dequantize_at_load:
            # Keyed on the buffers' identity and version: loading or moving them drops the cache.
            key = tuple((id(b), b._version) for b in self.buffers())
            dense = self._dense
            if dense is None or dense.dtype != x.dtype or dense.device != x.device or key != self._dense_key:
                dense = self._dense = self.dequantize(x.dtype)
                self._dense_key = key
            return F.linear(x, dense, None if self.bias is None else self.bias.to(x.dtype))
        return self.linear_per_call(x)

    def linear_per_call(self, x: torch.Tensor) -> torch.Tensor:
        """The forward without a dense cache; subclasses may avoid materializing the weight."""
        return F.linear(x, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dequantize_at_load={self.dequantize_at_load}")


class GptqLinear(_PackedLinear):
    """A GPTQ linear layer (v1 or v2 zero points, 2/3/4/8 bits, any group size, act-order).

    >>> from quantdispatch.configs import GptqV2
    >>> layer = GptqLinear(GptqV2(bits=4, group_size=32), 64, 32, bias=True, device="meta")
    >>> sorted(name for name, _ in layer.named_buffers())
    ['bias', 'g_idx', 'qweight', 'qzeros', 'scales']
    """

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    g_idx: torch.Tensor
    derivable: frozenset[str]
    """Buffers a checkpoint may leave out because this module computes them (``derive_missing``)."""

    def __init__(
        self, config: AbstractGptq | GptqPacked, in_features: int, out_features: int, bias: bool, *,
        device: torch.device | str | None = None, dequantize_at_load: bool = False,
    ) -> None:
        layout = config if isinstance(config, GptqPacked) else gptq_layout(config)
        super().__init__(specs_of(layout.tensors(in_features, out_features, bias)), in_features, out_features,
                         device=device, dequantize_at_load=dequantize_at_load)
        self.layout = layout
        self.bits = layout.bits
        self.group_size = layout.group_size
        self.v1 = layout.v1
        self.indexes = layout.indexes(in_features, out_features)  # g picks rows of scales and qzeros
        # Without act-order, g_idx is k // group_size; old GPTQ-for-LLaMa checkpoints do not store it.
        self.derivable = layout.derivable()
        if self.g_idx.device.type != "meta":
            self.g_idx.copy_(self._trivial_g_idx(self.g_idx.device))
        self._trivial: bool = False
        self._trivial_key: tuple[int, int, torch.device] | None = None

    def _trivial_g_idx(self, device: torch.device) -> torch.Tensor:
        size = self.in_features if self.group_size == -1 else self.group_size
        return torch.arange(self.in_features, dtype=torch.int32, device=device) // size

    def derive_missing(self) -> None:
        """Compute the ``derivable`` buffers that loading left on the meta device (a checkpoint
        without ``g_idx``, where ``desc_act`` is false: the trivial ``k // group_size``)."""
        if "g_idx" in self.derivable and self.g_idx.device.type == "meta":
            self.g_idx = self._trivial_g_idx(self.qweight.device if self.qweight.device.type != "meta" else torch.device("cpu"))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out_features, in_features]``, exact in float32."""
        return dequantize_gptq(self.qweight, self.qzeros, self.scales, self.g_idx, bits=self.bits, v1=self.v1,
                               group_size=self.group_size, dtype=dtype)

    def after_load(self) -> None:
        """Decide once, from the loaded ``g_idx``, whether its groups are runs of rows (the loader
        calls this when every tensor is in), so that a compiled forward does not read ``g_idx``."""
        self._trivial_g_idx_now()

    def _trivial_g_idx_now(self) -> bool:
        g = self.g_idx
        if torch.compiler.is_compiling():
            # Decided in eager (after_load, or the last eager call); False before that: the gather
            # path, exact for any g_idx, only slower.
            return self._trivial
        key = (id(g), g._version, g.device)
        if key != self._trivial_key and g.device.type != "meta":
            size = self.in_features if self.group_size == -1 else self.group_size
            self._trivial, self._trivial_key = gptq_trivial_g_idx(g, size), key
        return self._trivial

    def linear_per_call(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantize a few hundred input rows at a time and accumulate (see :func:`.gptq.gptq_linear`)."""
        return gptq_linear(x, self.qweight, self.qzeros, self.scales, self.g_idx, bits=self.bits, v1=self.v1,
                           group_size=self.group_size, bias=self.bias, chunk=self.per_call_block // self.out_features,
                           trivial=self._trivial_g_idx_now())

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}, v1={self.v1}, " + super().extra_repr()


_AwqDequantize = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor]


class AwqLinear(_PackedLinear):
    """An AWQ linear layer in GEMM, GEMV or GEMV_FAST packing.

    >>> from quantdispatch.configs import AwqGemvFast
    >>> layer = AwqLinear(AwqGemvFast(group_size=64), 128, 64, bias=False, device="meta")
    >>> layer.qweight.shape, layer.qweight.dtype
    (torch.Size([16, 128]), torch.int16)
    """

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor

    def __init__(
        self, config: AbstractAwq | AwqPacked, in_features: int, out_features: int, bias: bool, *,
        device: torch.device | str | None = None, dequantize_at_load: bool = False,
    ) -> None:
        layout = config if isinstance(config, AwqPacked) else awq_layout(config)
        if layout is None:
            raise ValueError(f"{type(config).__name__} is not a packing the portable AWQ kernels read")
        super().__init__(specs_of(layout.tensors(in_features, out_features, bias)), in_features, out_features,
                         device=device, dequantize_at_load=dequantize_at_load)
        self.layout = layout
        self.group_size = layout.size(in_features)
        self.version = layout.version
        self.finite = layout.finite()  # GEMV_FAST's qzeros are scaled zeros: floats added to every weight
        self._dequantize = _awq_dequantizer(layout, self.group_size)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out_features, in_features]``, rounded once to ``dtype``."""
        return self._dequantize(self.qweight, self.qzeros, self.scales, dtype)

    def linear_per_call(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantize a block of output rows at a time (about a million weights, cache-sized) and multiply.

        Every output element comes from one block's full dot product, so the result is
        ``F.linear`` of the rounded weight.
        """
        rows = x.reshape(-1, self.in_features)
        out = torch.empty(rows.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        step = max(8, self.per_call_block // self.in_features // 8 * 8)
        for n0 in range(0, self.out_features, step):
            n1 = min(self.out_features, n0 + step)
            out[:, n0:n1] = rows @ self._dequantize(*self._output_rows(n0, n1), x.dtype).t()
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def _output_rows(self, n0: int, n1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``qweight``, ``qzeros``, ``scales`` of output rows ``n0:n1`` (multiples of 8), in the packing's own layout."""
        if self.version == "gemm":
            return self.qweight[:, n0 // 8:n1 // 8], self.qzeros[:, n0 // 8:n1 // 8], self.scales[:, n0:n1]
        if self.version == "gemv":
            return self.qweight[n0:n1], self.qzeros[n0:n1], self.scales[n0:n1]
        return self.qweight[n0 // 4:n1 // 4], self.qzeros[:, n0:n1], self.scales[:, n0:n1]

    def extra_repr(self) -> str:
        return f"version={self.version}, group_size={self.group_size}, " + super().extra_repr()


def _awq_dequantizer(layout: AwqPacked, group_size: int) -> _AwqDequantize:
    """The plain function for this packing, chosen once per layer (never per call)."""
    if layout.version == "gemm":
        return lambda qw, qz, s, dtype: dequantize_awq_gemm(qw, qz, s, dtype=dtype)
    if layout.version == "gemv":
        return lambda qw, qz, s, dtype: dequantize_awq_gemv(qw, qz, s, group_size=group_size, dtype=dtype)
    return lambda qw, qz, s, dtype: dequantize_awq_gemv_fast(qw, qz, s, group_size=group_size, dtype=dtype)


class PackedLinear(_PackedLinear):
    """The portable module of any layout that dequantizes generically: the layout's declared
    tensors as buffers (under their stored names), and ``layout.dequantize`` for the weight.

    What a new layout gets without writing a module: it runs everywhere torch does, exact to the
    layout's own dequantization, at the cost of a dense weight per call (or once, with
    ``dequantize_at_load``).
    """

    def __init__(
        self, layout: AbstractLayout, in_features: int, out_features: int, bias: bool, *,
        device: torch.device | str | None = None, dequantize_at_load: bool = False,
    ) -> None:
        specs = specs_of(layout.tensors(in_features, out_features, bias))
        super().__init__(specs, in_features, out_features, device=device, dequantize_at_load=dequantize_at_load)
        self.layout = layout
        self.indexes = layout.indexes(in_features, out_features)
        self.finite = layout.finite()
        self._names = tuple(n for n in specs if n != "bias")

    def tensors(self) -> dict[str, torch.Tensor]:
        """The layer's stored tensors (bias aside), by name."""
        found: dict[str, torch.Tensor] = {n: getattr(self, n) for n in self._names}
        return found

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out_features, in_features]``, as the layout dequantizes it."""
        weight: torch.Tensor = self.layout.dequantize(self.tensors(), dtype)
        return weight

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, " + super().extra_repr()


def features(module: nn.Module) -> tuple[int, int]:
    """A linear-like module's ``(in_features, out_features)``.

    Raises:
        ValueError: It does not say them.
    """
    found: tuple[object, object] = (getattr(module, "in_features", None), getattr(module, "out_features", None))
    k, n = found
    if not isinstance(k, int) or not isinstance(n, int):
        raise ValueError(f"{type(module).__name__} does not say its in_features and out_features")
    return k, n


def layout_of_module(module: nn.Module) -> AbstractLayout:
    """The layout a portable module was built for.

    Raises:
        ValueError: It is not a portable module.
    """
    layout: object = getattr(module, "layout", None)
    if not isinstance(layout, AbstractLayout):
        raise ValueError(f"{type(module).__name__} is not a portable module of a layout")
    return layout


def dense_linear(module: nn.Module, dtype: torch.dtype) -> nn.Linear:
    """An ``nn.Linear`` holding a portable module's dequantized weight (and bias) in ``dtype``."""
    dequantize: object = getattr(module, "dequantize", None)
    in_features, out_features = features(module)
    bias: object = getattr(module, "bias", None)
    if not callable(dequantize):
        raise ValueError(f"{type(module).__name__} cannot dequantize its weight")
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device="meta", dtype=dtype)
    linear.weight = nn.Parameter(dequantize(dtype), requires_grad=False)
    if isinstance(bias, torch.Tensor):
        linear.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
    return linear
