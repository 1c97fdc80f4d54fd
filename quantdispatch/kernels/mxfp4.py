"""MXFP4 experts kept packed: the module that takes ``GptOssExperts``' place, and its native op.

``Mxfp4ExpertsModule`` holds the stored tensors as buffers under their stored names (``U8`` codes
and E8M0 scales as read, biases as stored) and runs ``GptOssExperts.forward`` (the same routing
loop over the experts the router picked, the same interleaved gate/up split, clamp and
``(up + 1) * gate * sigmoid(alpha * gate)``), computing each picked expert's projections from the
packed weights in one of three ways:

- portable (``torch-packed``): that expert's weights dequantized now (``mxfp4_rows``), in the
  input's dtype, and multiplied as ``GptOssExperts`` does; only the picked experts are dequantized;
- ``dequantize_at_load`` (or the config's ``dequantize``): every expert dequantized once, at the
  first forward, into Transformers' dense ``[E, in, out]`` parameters (``dense_experts``, bit-equal
  to ``convert_moe_packed_tensors``); then exactly ``GptOssExperts``' arithmetic;
- native (``cpu-fp4-experts``, ``prepare_mxfp4``): ``torch.ops.quantdispatch.mxfp4_matmul``, the C loop of
  ``fp4_native.c`` reading the codes and scale bytes in place, summing in float32 (for more
  than ``FUSED_ROWS`` tokens per expert, blocks of rows dequantized to float32 and a GEMM).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import torch
from torch import nn

from ..layouts.base import AbstractLayout
from ..layouts.mxfp4 import MXFP4_BLOCK, ExpertSizes, Mxfp4Experts, dense_experts, mxfp4_rows
from ._common import specs_of
from ._native import custom_op, fused_or_blocked
from .fp4_native import FUSED_ROWS, native_fp4

__all__ = ["Mxfp4ExpertsModule", "MXFP4_MATMUL", "mxfp4_matmul", "prepare_mxfp4"]

_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the native prefill path (4 MiB of float32)."""
Path = Literal["torch", "native"]


def _check(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> None:
    """Refuse what the C loops would read out of bounds (they index flat buffers by ``M, N, K``)."""
    k, n = x.shape[-1], blocks.shape[0]
    if (x.dim() != 2 or k % MXFP4_BLOCK or blocks.dtype is not torch.uint8 or blocks.numel() != n * (k // 2)
            or scales.dtype is not torch.uint8 or scales.numel() != n * (k // MXFP4_BLOCK) or not x.dtype.is_floating_point):
        raise ValueError(f"mxfp4_matmul needs float x [M, K], uint8 blocks [N, K/32, 16] and uint8 E8M0 scales [N, K/32], K a "
                         f"multiple of {MXFP4_BLOCK}; got x {x.dtype} {list(x.shape)}, blocks {blocks.dtype} {list(blocks.shape)}, "
                         f"scales {scales.dtype} {list(scales.shape)}")


def _mxfp4_matmul(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``quantdispatch::mxfp4_matmul``: ``x @ W.T`` in float32 for ``x`` ``[M, K]`` of any float dtype."""
    lib = native_fp4()
    if lib is None:
        raise RuntimeError("the native FP4 kernel is not available here; check native_fp4() first")
    _check(x, blocks, scales)
    x = x.to(torch.float32).contiguous()
    blocks, scales = blocks.contiguous(), scales.contiguous()
    m, k = x.shape

    def fused(y: torch.Tensor) -> None:
        lib.mxfp4_matvec(blocks.data_ptr(), scales.data_ptr(), x.data_ptr(), y.data_ptr(), m, y.shape[1], k)

    def dequant(block: torch.Tensor, n0: int, n1: int) -> None:
        lib.mxfp4_dequant(blocks.data_ptr(), scales.data_ptr(), block.data_ptr(), n0, n1, k)

    return fused_or_blocked(x, blocks.shape[0], FUSED_ROWS, _BLOCK_WEIGHTS, fused, dequant)


def _mxfp4_matmul_fake(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], blocks.shape[0]), dtype=torch.float32)


MXFP4_MATMUL: Final = custom_op("mxfp4_matmul", "(Tensor x, Tensor blocks, Tensor scales) -> Tensor", _mxfp4_matmul,
                                _mxfp4_matmul_fake)
"""``torch.ops.quantdispatch.mxfp4_matmul(x, blocks, scales)``: one expert's projection as one op."""


def mxfp4_matmul(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` in float32, ``W[n, k] = e2m1(code) * 2 ** (scales[n, k // 32] - 127)``. Needs ``native_fp4()``.

    Raises:
        ValueError: the shapes or dtypes do not agree.
    """
    out: torch.Tensor = MXFP4_MATMUL(x, blocks, scales)
    return out


def _sizes(module: nn.Module) -> tuple[ExpertSizes, float, float]:
    """A ``GptOssExperts``-like module's sizes and its SwiGLU ``alpha`` and ``limit``.

    Raises:
        ValueError: It does not say them.
    """
    found = {n: getattr(module, n, None) for n in ("num_experts", "hidden_size", "intermediate_size", "alpha", "limit")}
    ints = [found[n] for n in ("num_experts", "hidden_size", "intermediate_size")]
    floats = [found["alpha"], found["limit"]]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not all(isinstance(v, (int, float)) for v in floats):
        raise ValueError(f"{type(module).__name__} is not a mixture-of-experts block with stacked experts (it does not say "
                         "num_experts, hidden_size, intermediate_size, alpha and limit)")
    e, h, i = (int(v) for v in ints if isinstance(v, int))
    alpha, limit = (float(v) for v in floats if isinstance(v, (int, float)))
    return ExpertSizes(e, h, i), alpha, limit


class Mxfp4ExpertsModule(nn.Module):
    """``GptOssExperts`` on MXFP4 weights kept packed (see the module docstring)."""

    gate_up_proj_blocks: torch.Tensor
    gate_up_proj_scales: torch.Tensor
    gate_up_proj_bias: torch.Tensor
    down_proj_blocks: torch.Tensor
    down_proj_scales: torch.Tensor
    down_proj_bias: torch.Tensor

    def __init__(self, layout: Mxfp4Experts, sizes: ExpertSizes, *, alpha: float, limit: float,
                 device: torch.device | str | None = None, dequantize_at_load: bool = False) -> None:
        super().__init__()
        declared = layout.expert_tensors(sizes)
        specs = specs_of(declared)
        for name, spec in specs.items():
            self.register_buffer(name, torch.zeros(spec.shape, dtype=spec.dtype, device=device))
        self.layout = layout
        self.num_experts, self.hidden_size, self.intermediate_size = sizes.experts, sizes.hidden, sizes.intermediate
        self.in_features = self.out_features = sizes.hidden
        self.alpha, self.limit = alpha, limit
        self.dequantize_at_load = dequantize_at_load or layout.dense_at_load
        self.path: Path = "torch"
        self._dense: dict[str, torch.Tensor] = {}
        self._dense_key: tuple[object, ...] = ()

    @classmethod
    def from_module(cls, layout: Mxfp4Experts, module: nn.Module, *, device: torch.device | str | None = None,
                    dequantize_at_load: bool = False) -> Mxfp4ExpertsModule:
        """The packed module in place of ``module`` (a ``GptOssExperts``: its sizes, ``alpha`` and ``limit``).

        Raises:
            ValueError: ``module`` is not such a block, or its sizes are not whole blocks of 32.
        """
        sizes, alpha, limit = _sizes(module)
        return cls(layout, sizes, alpha=alpha, limit=limit, device=device, dequantize_at_load=dequantize_at_load)

    def dense(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        """Transformers' dense parameters ``gate_up_proj`` ``[E, H, 2I]`` and ``down_proj`` ``[E, I, H]``
        (``convert_moe_packed_tensors``, bit for bit) in ``dtype``."""
        return {p: dense_experts(getattr(self, f"{p}_blocks"), getattr(self, f"{p}_scales"), dtype) for p in ("gate_up_proj", "down_proj")}

    def _project(self, proj: str, expert: int, x: torch.Tensor) -> torch.Tensor:
        """``x @ W[expert] + bias[expert]`` for one projection, in ``x``'s dtype."""
        bias: torch.Tensor = getattr(self, f"{proj}_bias")[expert].to(x.dtype)
        if self._dense:
            weight = self._dense[proj][expert]
        else:
            blocks: torch.Tensor = getattr(self, f"{proj}_blocks")[expert]
            scales: torch.Tensor = getattr(self, f"{proj}_scales")[expert]
            if self.path == "native":
                product: torch.Tensor = MXFP4_MATMUL(x, blocks, scales)
                return product.to(x.dtype) + bias
            # The expert's weight as GptOssExperts holds it ([in, out], contiguous), so the product is its own.
            weight = mxfp4_rows(blocks, scales, x.dtype).t().contiguous()
        return x @ weight + bias

    def _apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=self.limit)
        up = up.clamp(min=-self.limit, max=self.limit)
        glu = gate * torch.sigmoid(gate * self.alpha)
        return (up + 1) * glu

    def _settle_dense(self, dtype: torch.dtype, device: torch.device) -> None:
        key = (dtype, device, *((id(b), b._version) for b in self.buffers()))
        if not self._dense or key != self._dense_key:
            self._dense = self.dense(dtype)
            self._dense_key = key

    def forward(self, hidden_states: torch.Tensor, router_indices: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        """``GptOssExperts.forward``: each token's picked experts, weighted by the router and summed."""
        if self.dequantize_at_load:
            self._settle_dense(hidden_states.dtype, hidden_states.device)
        next_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = torch.nn.functional.one_hot(router_indices, num_classes=self.num_experts).permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for hit in expert_hit:
            expert = int(hit[0])
            if expert == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(expert_mask[expert])
            current_state = hidden_states[token_idx]
            gated_output = self._apply_gate(self._project("gate_up_proj", expert, current_state))
            out = self._project("down_proj", expert, gated_output)
            weighted_output = out * routing_weights[token_idx, top_k_pos, None]
            next_states.index_add_(0, token_idx, weighted_output.to(hidden_states.dtype))
        return next_states

    def extra_repr(self) -> str:
        return (f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}, "
                f"path={self.path}, dequantize_at_load={self.dequantize_at_load}")


def prepare_mxfp4(module: Any, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """The loaded experts on the native kernel (the same buffers; ``path = "native"``), or ``None``
    to keep the portable module where the kernel cannot be built."""
    if native_fp4() is None or not isinstance(module, Mxfp4ExpertsModule) or not isinstance(layout, Mxfp4Experts):
        return None
    native = Mxfp4ExpertsModule(layout, ExpertSizes(module.num_experts, module.hidden_size, module.intermediate_size),
                                alpha=module.alpha, limit=module.limit, device="meta")
    for name, buffer in module.named_buffers():
        setattr(native, name, buffer)
    native.path = "native"
    return native
