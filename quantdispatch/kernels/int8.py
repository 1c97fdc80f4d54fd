"""8-bit integer weights kept as stored, on torch's int8 CPU kernel (``cpu-int8``).

compressed-tensors ``int-quantized`` weights with one symmetric scale per output row (W8A16, and the
weights of W8A8) are a ``[N, K]`` int8 matrix and a ``[N, 1]`` scale: ``W = q * s``. torch's
``_weight_int8pack_mm(x, q, s)`` computes ``(x @ q.T) * s`` from the int8 bytes in place; with
bfloat16 activations on a CPU that computes bfloat16 natively it measured ~3x faster than a bfloat16
dense matmul at decode (4096x4096, one row, AMD EPYC with AVX512-BF16), and it reads a quarter of
the float32 weight's bytes. With float32 activations it was ~10x slower than dense, so the kernel
is planned only for bfloat16 (``kernel.CPU_INT8``'s fit rule).

- Decode (up to ``FUSED_ROWS`` rows): the aten kernel on the bytes. Its scales are bfloat16 (it
  refuses float32 ones), so a float32 scale is rounded once to bfloat16 at load.
- Prefill: blocks of output rows dequantized to bfloat16 (``q * s``, rounded once) into a reused
  buffer and multiplied with torch's GEMM, which reuses each weight over the rows far better.
- torch's kernel crashes on bfloat16 inputs whose ``K`` is not a multiple of 16 (seen on torch
  2.13): such layers, and layers it cannot take, are made dense at load instead (``cpu-dense``).
"""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn

from ..layouts.base import AbstractLayout

__all__ = ["Int8Linear", "prepare_int8", "int8_unfit", "FUSED_ROWS"]

FUSED_ROWS: Final = 8
"""Input rows up to which the aten kernel runs on the bytes (decode); more rows take the GEMM path."""
_BLOCK_WEIGHTS: Final = 1 << 20
"""Weights dequantized per block on the prefill path (2 MiB of bfloat16: the blocks freed into the
heap stay resident, so they are kept small)."""
_K_MULTIPLE: Final = 16


def int8_unfit(in_features: int, dtype: torch.dtype) -> str | None:
    """Why one layer cannot run on torch's int8 kernel here (``None``: it can)."""
    if dtype is not torch.bfloat16:
        return f"torch's int8 kernel is fast with bfloat16 activations only; the model computes in {dtype}"
    if in_features % _K_MULTIPLE:
        return f"in_features={in_features} is not a multiple of {_K_MULTIPLE} (torch's bfloat16 int8 kernel needs it)"
    return None


class Int8Linear(nn.Module):
    """A linear layer on int8 codes ``[N, K]`` and one bfloat16 scale per output row ``[N]``;
    ``bias`` in the model's dtype. Activations are bfloat16."""

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if codes.dtype is not torch.int8 or codes.dim() != 2 or scale.numel() != codes.shape[0]:
            raise ValueError(f"Int8Linear needs int8 codes [N, K] and N scales; got {codes.dtype} {list(codes.shape)} and "
                             f"{scale.numel()} scales")
        self.out_features, self.in_features = codes.shape
        self.register_buffer("weight", codes.contiguous())
        self.register_buffer("scale", scale.reshape(-1).to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, q * s, bias)`` for bfloat16 ``x``."""
        rows = x.reshape(-1, self.in_features)
        if rows.dtype is not torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        if rows.shape[0] <= FUSED_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.weight, self.scale)
        else:
            out = self._prefill(rows)
        if self.bias is not None:
            out = out + self.bias
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return result

    def _prefill(self, rows: torch.Tensor) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        step = max(1, _BLOCK_WEIGHTS // k)
        out = torch.empty(rows.shape[0], n, dtype=torch.bfloat16)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            # int8 -> bf16 is exact (|q| <= 128 has 8 significant bits); the bf16 product is rounded once,
            # as the float32 product (exact) rounded to bf16 would be.
            block = self.weight[n0:n1].to(torch.bfloat16).mul_(self.scale[n0:n1, None])
            torch.mm(rows, block.t(), out=out[:, n0:n1])
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def prepare_int8(module: Any, layout: AbstractLayout, dtype: torch.dtype) -> nn.Module | None:
    """An ``Int8Linear`` on the loaded layer's stored codes and row scales, or the dense layer
    ``cpu-dense`` would make where torch's kernel cannot take it (``int8_unfit``)."""
    from ..backends.cpu_int4 import prepare_dense

    tensors = module.tensors()
    codes, scale = tensors["weight"], tensors["weight_scale"]
    if int8_unfit(codes.shape[1], dtype) is not None or codes.dtype is not torch.int8 or "weight_zero_point" in tensors:
        return prepare_dense(module, layout, dtype)
    bias: object = getattr(module, "bias", None)
    return Int8Linear(codes, scale, bias if isinstance(bias, torch.Tensor) else None)
