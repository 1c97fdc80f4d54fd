"""4-bit weights repacked once for torch's CPU int4 kernel, and the module that runs it. Any layout
that converts to ``Int4Weights`` (GPTQ, AWQ, compressed-tensors) reaches it.

torch (2.6+) has a weight-only int4 matmul for the CPU::

    packed = aten._convert_weight_to_int4pack_for_cpu(codes int32 [N, K] in 0..15, inner_k_tiles)   # uint8 [N, K/2]
    y      = aten._weight_int4pack_mm_for_cpu(x [M, K], packed, G, sz [K/G, N, 2])                   # [M, N]

computing ``W[n, k] = (q[n, k] - 8) * sz[k // G, n, 0] + sz[k // G, n, 1]``, with G in 32, 64, 128,
256, N % 16 == 0 and ``sz`` in x's dtype. GPTQ's and AWQ's ``W = (q - z) * s`` map onto it exactly
in real arithmetic: ``scale = s`` and ``zero = (8 - z) * s``; AWQ GEMV_FAST's ``W = q * s + qz``
(``qz`` the stored scaled zero) gives ``zero = 8 * s + qz``. Both are rounded once to the compute
dtype. A group size that is a multiple of a kernel group size (or -1: the whole row) repeats each
scale over the kernel's groups.

Act-order (GPTQ ``desc_act``): ``g_idx`` assigns input columns to groups in a permuted order. The
columns are sorted by group once at load (``perm``), which makes each group a contiguous run; the
forward then reads ``x[:, perm]`` (a gather of the activations, K values per row, never of the
weights). When ``g_idx`` is the trivial ``k // group_size`` there is no gather at all.

The kernel is fast only with bfloat16 activations (``Int4Linear`` always feeds it bf16): about 9x
a float32 dense layer at decode on an AVX512-BF16 CPU (``/work/shared/research/cpu-kernels.md``),
about as fast as float32 dense on an AVX2-only one (``benchmarks/bench_int4_layer.py``), at an
eighth of the memory either way; with float32 activations it is ~10x slower. The model's own
dtype is the plan's (``quantdispatch.methods._common.gpu_or_cpu_dtype``): bf16 where the CPU has
it natively, float32 elsewhere, where bf16 dense layers are emulated.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

from .awq import unpack_awq_gemm, unpack_awq_gemv, unpack_awq_gemv_fast
from .gptq import unpack_gptq_qzeros
from .modules import AwqLinear, GptqLinear

__all__ = ["KERNEL_GROUPS", "Int4Weights", "int4_unfit", "kernel_group", "int4_from_gptq", "int4_from_awq", "Int4Linear"]

KERNEL_GROUPS: Final = (256, 128, 64, 32)
"""Group sizes ``_weight_int4pack_mm_for_cpu`` takes, largest first (fewest scales to read)."""


def kernel_group(group_size: int, in_features: int) -> int | None:
    """The largest kernel group size that divides both the checkpoint's group size (-1: the
    whole row) and ``in_features``; ``None`` when there is none.

    >>> kernel_group(128, 4096), kernel_group(-1, 4096), kernel_group(512, 768), kernel_group(96, 768), kernel_group(16, 256)
    (128, 256, 256, 32, None)
    """
    size = in_features if group_size == -1 else group_size
    return next((g for g in KERNEL_GROUPS if size % g == 0 and in_features % g == 0), None)


def int4_unfit(in_features: int, out_features: int, group_size: int) -> str | None:
    """Why the kernel cannot take one layer of this shape (``None``: it can). Checked before a
    layer is built, so no unfit shape ever reaches the kernel."""
    if out_features % 16:
        return f"out_features={out_features} is not a multiple of 16"
    if kernel_group(group_size, in_features) is None:
        return f"no kernel group size in {list(KERNEL_GROUPS)} divides group_size={group_size} and in_features={in_features}"
    return None


class Int4Weights:
    """One layer's weights in the checkpoint's terms, ready to pack: codes ``[N, K]`` (0..15) in
    kernel column order, and per-group float32 ``scale`` and ``zero`` ``[groups, N]`` (the
    kernel's ``zero``, already ``(8 - z) * s``), groups being runs of ``group_size`` columns."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                 perm: torch.Tensor | None = None) -> None:
        self.codes, self.scale, self.zero, self.group_size, self.perm = codes, scale, zero, group_size, perm


def _gptq_codes_nk(qweight: torch.Tensor) -> torch.Tensor:
    """4-bit codes ``[N, K]`` (uint8) of a GPTQ ``qweight`` ``[K/8, N]``, through bytes only: byte j
    of the little-endian word at ``[r, n]`` holds inputs ``8r + 2j`` (low nibble) and ``8r + 2j + 1``
    (high), so the temporaries are a byte per weight where :func:`.gptq.unpack_gptq_qweight`'s
    general path takes eight, which would set the peak memory of a repack."""
    rows, n = qweight.shape
    b = qweight.contiguous().view(torch.uint8).view(rows, n, 4)
    codes = torch.empty(n, rows, 4, 2, dtype=torch.uint8)
    torch.bitwise_and(b.permute(1, 0, 2), 15, out=codes[..., 0])
    torch.bitwise_right_shift(b.permute(1, 0, 2), 4, out=codes[..., 1])
    return codes.view(n, rows * 8)


def int4_from_gptq(layer: GptqLinear) -> Int4Weights | str:
    """A 4-bit GPTQ layer's weights for the kernel, or why they cannot be taken (a ``g_idx``
    whose groups are not runs of ``group_size`` columns once sorted)."""
    k = layer.in_features
    size = k if layer.group_size == -1 else layer.group_size
    codes = _gptq_codes_nk(layer.qweight)                                               # [N, K]
    zeros = unpack_gptq_qzeros(layer.qzeros, 4, layer.v1)[:, :layer.out_features].to(torch.float32)
    scale = layer.scales.to(torch.float32)
    g_idx = layer.g_idx.to(torch.int64)
    trivial = torch.arange(k, dtype=torch.int64) // size
    perm: torch.Tensor | None = None
    if not torch.equal(g_idx, trivial):
        perm = torch.argsort(g_idx, stable=True)
        if not torch.equal(g_idx[perm], trivial):
            return "its g_idx does not put group_size columns in each group"
        codes = codes[:, perm]
    return Int4Weights(codes, scale, (8 - zeros) * scale, size, perm)


def int4_from_awq(layer: AwqLinear) -> Int4Weights:
    """A GEMM, GEMV or GEMV_FAST AWQ layer's weights for the kernel."""
    n, size = layer.out_features, layer.group_size
    groups = layer.in_features // size
    scale = layer.scales.to(torch.float32)
    if layer.version == "gemm":
        codes = unpack_awq_gemm(layer.qweight).t()
        zeros = unpack_awq_gemm(layer.qzeros)[:, :n].to(torch.float32)
        return Int4Weights(codes, scale, (8 - zeros) * scale, size)
    if layer.version == "gemv":
        codes, zeros_ng = unpack_awq_gemv(layer.qweight, layer.qzeros, groups)
        scale = scale[:, :groups].t()
        return Int4Weights(codes, scale, (8 - zeros_ng.t().to(torch.float32)) * scale, size)
    # GEMV_FAST: W = q * s + qz, so zero = 8 * s + qz (qz already holds -s * z, rounded by the tool).
    codes = unpack_awq_gemv_fast(layer.qweight)
    scale = scale[:groups]
    return Int4Weights(codes, scale, 8 * scale + layer.qzeros[:groups].to(torch.float32), size)


class Int4Linear(nn.Module):
    """A linear layer on torch's CPU int4 kernel, built from a loaded portable layer.

    Buffers: ``packed`` (uint8 ``[N, K/2]``, the kernel's layout), ``scales_and_zeros``
    (``[K/G, N, 2]`` in bfloat16), ``perm`` (int64 ``[K]``, only under act-order) and ``bias`` (in
    the model's dtype). The kernel always runs on bfloat16 activations: it is the only fast path
    torch has for it (with float32 activations it was 10x slower than with bf16 on every CPU
    measured, AVX2 and AVX512-BF16 alike). A float32 model's activations are rounded to bf16 on
    the way in and the output is cast back, as GPTQModel's ``TorchAtenLinear`` does.
    """

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    perm: torch.Tensor | None
    bias: torch.Tensor | None

    kernel_dtype: Final = torch.bfloat16

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        n, k = weights.codes.shape
        group = kernel_group(weights.group_size, k)
        if n % 16 or group is None:
            msg = f"Int4Linear cannot take this layer: {int4_unfit(k, n, weights.group_size)}; check int4_unfit first"
            raise ValueError(msg)
        self.in_features, self.out_features, self.group = k, n, group
        # The checkpoint's group of each kernel group: kernel group i starts at column i * group.
        owner = torch.arange(k // group, dtype=torch.int64) * group // weights.group_size
        sz = torch.stack((weights.scale[owner], weights.zero[owner]), dim=-1).to(self.kernel_dtype).contiguous()
        # Packed 1024 rows at a time (the packing works on independent blocks of 64 rows), so the
        # int32 copy the op wants is never made of the whole layer.
        packed = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(weights.codes[i:i + 1024].to(torch.int32).contiguous(), 1)
                  for i in range(0, n, 1024)]
        self.register_buffer("packed", torch.cat(packed) if len(packed) > 1 else packed[0])
        self.register_buffer("scales_and_zeros", sz)
        self.register_buffer("perm", weights.perm)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, W, bias)`` through the int4 kernel."""
        rows = x.reshape(-1, self.in_features)
        if self.perm is not None:
            rows = rows.index_select(1, self.perm)
        rows = rows.to(self.kernel_dtype).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group, self.scales_and_zeros).to(x.dtype)
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        result: torch.Tensor = out.reshape(*x.shape[:-1], self.out_features)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"act_order={self.perm is not None}, bias={self.bias is not None}")
