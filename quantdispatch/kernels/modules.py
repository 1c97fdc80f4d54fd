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

from ..configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from ..configs.gptq import AbstractGptq
from ._common import TensorSpec
from .awq import awq_expected_tensors, dequantize_awq_gemm, dequantize_awq_gemv, dequantize_awq_gemv_fast
from .gptq import dequantize_gptq, gptq_expected_tensors, gptq_groups, gptq_linear, gptq_v1_zeros

__all__ = ["GptqLinear", "AwqLinear"]


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
        self, config: AbstractGptq, in_features: int, out_features: int, bias: bool, *,
        device: torch.device | str | None = None, dequantize_at_load: bool = False,
    ) -> None:
        super().__init__(gptq_expected_tensors(config, in_features, out_features, bias), in_features, out_features,
                         device=device, dequantize_at_load=dequantize_at_load)
        self.bits = config.bits
        self.group_size = config.group_size
        self.v1 = gptq_v1_zeros(config)
        self.indexes = {"g_idx": ("scales", gptq_groups(in_features, config.group_size))}  # g picks rows of scales and qzeros
        # Without act-order, g_idx is k // group_size; old GPTQ-for-LLaMa checkpoints do not store it.
        self.derivable = frozenset() if config.desc_act else frozenset({"g_idx"})
        if self.g_idx.device.type != "meta":
            self.g_idx.copy_(self._trivial_g_idx(self.g_idx.device))

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

    def linear_per_call(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantize a few hundred input rows at a time and accumulate (see :func:`.gptq.gptq_linear`)."""
        return gptq_linear(x, self.qweight, self.qzeros, self.scales, self.g_idx, bits=self.bits, v1=self.v1,
                           group_size=self.group_size, bias=self.bias, chunk=self.per_call_block // self.out_features)

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
        self, config: AbstractAwq, in_features: int, out_features: int, bias: bool, *,
        device: torch.device | str | None = None, dequantize_at_load: bool = False,
    ) -> None:
        super().__init__(awq_expected_tensors(config, in_features, out_features, bias), in_features, out_features,
                         device=device, dequantize_at_load=dequantize_at_load)
        self.group_size = in_features if config.group_size == -1 else config.group_size
        self.version = config.version
        self._layout = type(config)
        if isinstance(config, AwqGemvFast):
            self.finite = frozenset({"scales", "qzeros"})  # GEMV_FAST's qzeros are scaled zeros: floats added to every weight
        self._dequantize = _awq_dequantizer(config, self.group_size)

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
        if issubclass(self._layout, AwqGemm):
            return self.qweight[:, n0 // 8:n1 // 8], self.qzeros[:, n0 // 8:n1 // 8], self.scales[:, n0:n1]
        if issubclass(self._layout, AwqGemv):
            return self.qweight[n0:n1], self.qzeros[n0:n1], self.scales[n0:n1]
        return self.qweight[n0 // 4:n1 // 4], self.qzeros[:, n0:n1], self.scales[:, n0:n1]

    def extra_repr(self) -> str:
        return f"version={self.version}, group_size={self.group_size}, " + super().extra_repr()


def _awq_dequantizer(config: AbstractAwq, group_size: int) -> _AwqDequantize:
    """The plain function for this packing, chosen once per layer (never per call)."""
    if isinstance(config, AwqGemm):
        return lambda qw, qz, s, dtype: dequantize_awq_gemm(qw, qz, s, dtype=dtype)
    if isinstance(config, AwqGemv):
        return lambda qw, qz, s, dtype: dequantize_awq_gemv(qw, qz, s, group_size=group_size, dtype=dtype)
    if isinstance(config, AwqGemvFast):
        return lambda qw, qz, s, dtype: dequantize_awq_gemv_fast(qw, qz, s, group_size=group_size, dtype=dtype)
    raise ValueError(f"{type(config).__name__} is not a packing the portable AWQ kernels read")
