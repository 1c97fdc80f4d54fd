"""Writers for tests: round-to-nearest quantize a float weight and pack it as a checkpoint would.

Each writer returns the checkpoint tensors of one linear layer (named by suffix, as
``gptq_expected_tensors``/``awq_expected_tensors`` describe them) together with the integer codes,
the zero points, the fp16 scales and the reference weight computed from those directly, so that
a property test can check ``dequantize(pack(w)) == reference`` for every width and layout.

Round-to-nearest follows the producing tools' own min/max rules (GPTQ's ``Quantizer.find_params``,
AutoAWQ's ``pseudo_quantize_tensor``) without GPTQ's error feedback; codes are computed with the
scales already rounded to fp16, as stored.

This module imports torch: it is part of the shell, for tests and benchmarks.
"""

from __future__ import annotations

import attrs
import torch

from .configs.awq import AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast
from .configs.gptq import AbstractGptq
from .kernels.awq import awq_zeros_width, pack_awq_gemm, pack_awq_gemv, pack_awq_gemv_fast
from .kernels.gptq import gptq_groups, gptq_v1_zeros, pack_gptq_qweight, pack_gptq_qzeros

__all__ = ["Quantized", "quantize_gptq", "quantize_awq", "act_order_g_idx"]


@attrs.frozen(eq=False)
class Quantized:
    """One quantized linear layer: what the checkpoint holds and what it means.

    Attributes:
        tensors: The checkpoint tensors by suffix (``qweight``, ``qzeros``, ``scales``, …).
        codes: Integer codes ``[out_features, in_features]`` (int64).
        zeros: Zero points ``[out_features, groups]`` (int64), as dequantization uses them.
        scales: Scales ``[out_features, groups]`` (fp16).
        group_of: Group of each input column ``[in_features]`` (int64).
        weight: The reference float32 weight ``[out_features, in_features]``, from the above.
    """

    tensors: dict[str, torch.Tensor]
    codes: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor
    group_of: torch.Tensor
    weight: torch.Tensor


def act_order_g_idx(perm: torch.Tensor, group_size: int) -> torch.Tensor:
    """GPTQ act-order ``g_idx``: column ``perm[j]`` was quantized j-th, so it is in group ``j // group_size``."""
    g_idx = torch.empty_like(perm, dtype=torch.int64)
    g_idx[perm] = torch.arange(perm.shape[0], dtype=torch.int64, device=perm.device) // group_size
    return g_idx


def _group_extremes(weight: torch.Tensor, group_of: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (row, group) minimum and maximum of ``weight`` ``[N, K]``; groups may be any column sets."""
    index = group_of.unsqueeze(0).expand_as(weight)
    shape = (weight.shape[0], groups)
    low = torch.full(shape, torch.inf).scatter_reduce(1, index, weight, "amin")
    high = torch.full(shape, -torch.inf).scatter_reduce(1, index, weight, "amax")
    return low, high


def _fp16_scales(scales: torch.Tensor) -> torch.Tensor:
    """Scales as stored: fp16, never zero (a zero would make every code a division by zero)."""
    tiny = torch.finfo(torch.float16).tiny
    return scales.clamp(min=tiny).to(torch.float16)


def quantize_gptq(
    weight: torch.Tensor, config: AbstractGptq, *, perm: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> Quantized:
    """RTN-quantize ``weight`` ``[N, K]`` and pack it as GPTQ (``config`` gives bits, group size, sym, v1/v2).

    ``perm`` is an act-order permutation of the input columns (``g_idx`` becomes non-monotonic);
    ``None`` means columns in order.
    """
    n, k = weight.shape
    bits, maxq = config.bits, (1 << config.bits) - 1
    size = k if config.group_size == -1 else config.group_size
    groups = gptq_groups(k, config.group_size)
    order = torch.arange(k) if perm is None else perm
    group_of = act_order_g_idx(order, size)
    low, high = _group_extremes(weight.to(torch.float32), group_of, groups)
    low, high = low.clamp(max=0), high.clamp(min=0)
    if config.sym:
        high = torch.maximum(low.abs(), high)
        low = torch.where(low < 0, -high, low)
    empty = (low == 0) & (high == 0)
    low, high = torch.where(empty, -1.0, low), torch.where(empty, 1.0, high)
    scales = _fp16_scales((high - low) / maxq)
    s32 = scales.to(torch.float32)
    zeros = torch.full_like(s32, (maxq + 1) // 2) if config.sym else torch.round(-low / s32).clamp(0, maxq)
    codes = torch.clamp(torch.round(weight / s32[:, group_of]) + zeros[:, group_of], 0, maxq).to(torch.int64)
    zeros_i = zeros.to(torch.int64)
    reference = s32[:, group_of] * (codes - zeros_i[:, group_of]).to(torch.float32)
    tensors = {
        "qweight": pack_gptq_qweight(codes.t(), bits),
        "qzeros": pack_gptq_qzeros(zeros_i.t(), bits, gptq_v1_zeros(config)),
        "scales": scales.t().contiguous(),
        "g_idx": group_of.to(torch.int32),
    }
    if bias is not None:
        tensors["bias"] = bias.to(torch.float16)
    return Quantized(tensors, codes, zeros_i, scales, group_of, reference)


def quantize_awq(weight: torch.Tensor, config: AbstractAwq, *, bias: torch.Tensor | None = None) -> Quantized:
    """RTN-quantize ``weight`` ``[N, K]`` as AutoAWQ does and pack it in the config's layout.

    Without ``zero_point`` the codes are symmetric and every zero point is 8, as GPTQModel writes
    them (AutoAWQ itself refuses to pack without zero points).
    """
    n, k = weight.shape
    size = k if config.group_size == -1 else config.group_size
    groups = k // size
    grouped = weight.to(torch.float32).reshape(n, groups, size)
    if config.zero_point:
        high, low = grouped.amax(dim=2), grouped.amin(dim=2)
        scales = _fp16_scales((high - low).clamp(min=1e-5) / 15)
        s32 = scales.to(torch.float32)
        zeros = (-torch.round(low / s32)).clamp(0, 15)
        codes = torch.clamp(torch.round(grouped / s32.unsqueeze(2)) + zeros.unsqueeze(2), 0, 15)
    else:
        scales = _fp16_scales(grouped.abs().amax(dim=2).clamp(min=1e-5) / 7)
        s32 = scales.to(torch.float32)
        zeros = torch.full_like(s32, 8)
        codes = torch.clamp(torch.round(grouped / s32.unsqueeze(2)), -8, 7) + 8
    codes_i, zeros_i = codes.reshape(n, k).to(torch.int64), zeros.to(torch.int64)
    group_of = torch.arange(k) // size
    tensors, reference = _pack_awq(config, codes_i, zeros_i, scales, k, size)
    if bias is not None:
        tensors["bias"] = bias.to(torch.float16)
    return Quantized(tensors, codes_i, zeros_i, scales, group_of, reference)


def _pack_awq(
    config: AbstractAwq, codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, k: int, size: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The layout's tensors and its reference weight (GEMV_FAST dequantizes by fused multiply-add)."""
    group_of = torch.arange(k) // size
    s32, groups = scales.to(torch.float32), zeros.shape[1]
    if isinstance(config, AwqGemm):
        reference = (codes - zeros[:, group_of]).to(torch.float32) * s32[:, group_of]
        return {"qweight": pack_awq_gemm(codes.t()), "qzeros": pack_awq_gemm(zeros.t()), "scales": scales.t().contiguous()}, reference
    rows = awq_zeros_width(k, size) * 8
    padded = torch.zeros((scales.shape[0], rows), dtype=torch.float16)
    padded[:, :groups] = scales
    if isinstance(config, AwqGemv):
        reference = (codes - zeros[:, group_of]).to(torch.float32) * s32[:, group_of]
        qweight, qzeros = pack_awq_gemv(codes, zeros, k, size)
        return {"qweight": qweight, "qzeros": qzeros, "scales": padded}, reference
    if isinstance(config, AwqGemvFast):
        scaled_zeros = torch.zeros_like(padded)
        scaled_zeros[:, :groups] = -(s32 * zeros.to(torch.float32)).to(torch.float16)
        exact = codes.to(torch.float64) * s32[:, group_of].double() + scaled_zeros[:, group_of].double()
        return {"qweight": pack_awq_gemv_fast(codes), "qzeros": scaled_zeros.t().contiguous(),
                "scales": padded.t().contiguous()}, exact.to(torch.float32)
    raise ValueError(f"{type(config).__name__} is not a packing these writers produce")
