"""Property tests: the CPU int4 fast path computes what the portable module computes.

Oracle: the portable ``GptqLinear``/``AwqLinear`` holding the same checkpoint tensors, fed the same
bfloat16 activations. The fast path rounds each scale and each zero term ``(8 - z) * s`` to
bfloat16 once (the kernel's format) where the portable module rounds each weight once, so the two
may differ by a few bfloat16 roundings per product; the bound below is exactly that, computed from
the operands. A wrong zero point, a wrong group or a wrong permutation moves an output by whole
quantization steps, hundreds of times the bound.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.backends.cpu_int4 import repack_int4
from quantdispatch.configs import AbstractAwq, AbstractGptq, AwqGemm, AwqGemv, AwqGemvFast, Gptq, GptqV2
from quantdispatch.kernels.int4 import Int4Linear, Int4Weights, int4_from_awq, int4_from_gptq, int4_unfit, kernel_group
from quantdispatch.kernels.int4_native import Q4Linear, native_int4
from quantdispatch.kernels.modules import AwqLinear, GptqLinear
from quantdispatch.testing import quantize_awq, quantize_gptq

torch.set_num_threads(1)

_BF16_HALF_ULP = 2.0**-8  # relative rounding error of bfloat16 is at most 2**-9; doubled for slack


def _gptq_layer(config: AbstractGptq, weight: torch.Tensor, perm: torch.Tensor | None, bias: bool) -> GptqLinear:
    n, k = weight.shape
    q = quantize_gptq(weight, config, perm=perm, bias=torch.randn(n) if bias else None)
    layer = GptqLinear(config, k, n, bias)
    layer.load_state_dict(q.tensors)
    return layer


def _bound(x: torch.Tensor, layer: GptqLinear | AwqLinear, weights: Int4Weights) -> torch.Tensor:
    """Per-output bound on |fast - portable|: bf16 rounding of the kernel's scale and zero terms,
    of the portable module's weight, and of both outputs."""
    w = layer.dequantize(torch.float32).double()                                     # exact weight [N, K]
    size = weights.group_size
    group = (torch.arange(layer.in_features) // size)
    scale, zero = weights.scale.double()[group].t(), weights.zero.double()[group].t()  # [N, K] in kernel column order
    codes = weights.codes.double()
    per_weight = ((codes - 8).abs() * scale.abs() + zero.abs()) * _BF16_HALF_ULP      # kernel order
    if weights.perm is not None:
        unpermuted = torch.empty_like(per_weight)
        unpermuted[:, weights.perm] = per_weight
        per_weight = unpermuted
    per_weight = per_weight + w.abs() * _BF16_HALF_ULP
    xs = x.double().abs()
    exact = (x.double() @ w.t()).abs()
    return xs @ per_weight.t() + 2 * _BF16_HALF_ULP * exact + 1e-3


@st.composite
def gptq_cases(draw: st.DrawFn) -> tuple[AbstractGptq, torch.Tensor, torch.Tensor | None, bool]:
    group_size = draw(st.sampled_from((-1, 32, 64, 96, 128, 256, 512)))
    kind = draw(st.sampled_from((Gptq, GptqV2)))
    act_order = draw(st.booleans())
    config: AbstractGptq = kind(bits=4, group_size=group_size, sym=draw(st.booleans()), desc_act=act_order)
    unit = 32 if group_size == -1 else group_size
    in_features = unit * draw(st.integers(1, max(1, 768 // unit)))
    out_features = 16 * draw(st.integers(1, 6)) * 2  # GPTQ packs zero points 8 to a word; the kernel wants N % 16
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=gen) * 0.05
    if draw(st.booleans()):
        weight = weight.abs()  # every asymmetric zero point 0: v1's hard case
    perm = torch.randperm(in_features, generator=gen) if act_order else None
    return config, weight, perm, draw(st.booleans())


@settings(max_examples=40)
@given(gptq_cases(), st.integers(1, 5))
def test_gptq_fast_path_agrees_with_the_portable_module(case: tuple[AbstractGptq, torch.Tensor, torch.Tensor | None, bool],
                                                        batch: int) -> None:
    """4-bit GPTQ, v1/v2, sym/asym, act-order, group sizes 32…512 and -1: the int4 kernel's output is
    the portable module's on the same bf16 activations, within bf16 rounding."""
    config, weight, perm, bias = case
    layer = _gptq_layer(config, weight, perm, bias)
    weights = int4_from_gptq(layer)
    assert isinstance(weights, Int4Weights)
    assert (weights.perm is None) == (perm is None or bool(torch.equal(layer.g_idx.long(), torch.arange(weight.shape[1]) // weights.group_size)))
    fast = Int4Linear(weights, layer.bias, torch.bfloat16)
    x = torch.randn(batch, weight.shape[1], generator=torch.Generator().manual_seed(batch)).to(torch.bfloat16)
    got, want = fast(x).double(), layer(x).double()
    assert got.dtype == want.dtype and got.shape == want.shape
    excess = (got - want).abs() - _bound(x, layer, weights)
    assert excess.max().item() <= 0, f"worst output {divmod(int(excess.argmax()), weight.shape[0])}"


@st.composite
def awq_cases(draw: st.DrawFn) -> tuple[AbstractAwq, torch.Tensor, bool]:
    layout = draw(st.sampled_from((AwqGemm, AwqGemv, AwqGemvFast)))
    group_size = draw(st.sampled_from((-1, 32, 64, 128, 256)))
    config: AbstractAwq = layout(group_size=group_size, zero_point=draw(st.booleans()))
    in_features = 256 * draw(st.integers(1, 3))
    out_features = 16 * draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    weight = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed)) * 0.05
    return config, weight, draw(st.booleans())


@settings(max_examples=40)
@given(awq_cases(), st.integers(1, 5))
def test_awq_fast_path_agrees_with_the_portable_module(case: tuple[AbstractAwq, torch.Tensor, bool], batch: int) -> None:
    """AWQ GEMM, GEMV and GEMV_FAST, with and without zero points: the int4 kernel's output is the
    portable module's on the same bf16 activations, within bf16 rounding."""
    config, weight, bias = case
    n, k = weight.shape
    q = quantize_awq(weight, config, bias=torch.randn(n) if bias else None)
    layer = AwqLinear(config, k, n, bias)
    layer.load_state_dict(q.tensors)
    weights = int4_from_awq(layer)
    fast = Int4Linear(weights, layer.bias, torch.bfloat16)
    x = torch.randn(batch, k, generator=torch.Generator().manual_seed(batch)).to(torch.bfloat16)
    excess = (fast(x).double() - layer(x).double()).abs() - _bound(x, layer, weights)
    assert excess.max().item() <= 0


def test_float32_models_round_activations_to_bf16_only() -> None:
    """A float32 model's activations go through the kernel as bf16 and come back float32; the
    result is the portable module's on the bf16-rounded input (the weights are exact in both)."""
    config = GptqV2(bits=4, group_size=64, sym=False)
    layer = _gptq_layer(config, torch.randn(32, 128) * 0.05, None, bias=True)
    weights = int4_from_gptq(layer)
    assert isinstance(weights, Int4Weights)
    fast = Int4Linear(weights, layer.bias, torch.float32)
    x = torch.randn(3, 128)
    got = fast(x)
    assert got.dtype == torch.float32
    want = layer(x.to(torch.bfloat16).to(torch.float32))
    assert ((got - want).abs() - _bound(x.to(torch.bfloat16).float(), layer, weights)).max().item() <= 0


@pytest.mark.parametrize(("k", "n", "group_size", "unfit"), [
    (256, 32, 128, None), (256, 32, -1, None), (768, 32, 512, None), (768, 32, 96, None),
    (256, 24, 128, "out_features=24"), (256, 32, 16, "no kernel group size"), (200, 32, -1, "no kernel group size"),
])
def test_unfit_shapes_are_named_before_a_layer_is_built(k: int, n: int, group_size: int, unfit: str | None) -> None:
    """Shapes the kernel cannot take (N % 16, no kernel group dividing the groups) are refused by
    ``int4_unfit`` and by ``Int4Linear`` itself, never by the kernel."""
    reason = int4_unfit(k, n, group_size)
    assert (reason is None) == (unfit is None) and (unfit is None or unfit in str(reason))
    if unfit is not None:
        weights = Int4Weights(torch.zeros(n, k, dtype=torch.uint8), torch.ones(1, n), torch.zeros(1, n), k if group_size == -1 else group_size)
        with pytest.raises(ValueError, match="cannot take this layer"):
            Int4Linear(weights, None)
    else:
        assert kernel_group(group_size, k) in (32, 64, 128, 256)


def test_repack_keeps_layers_the_kernel_cannot_take() -> None:
    """``repack_int4`` swaps fitting 4-bit layers for Int4Linear and leaves others portable (same function)."""
    model = torch.nn.Sequential(
        _gptq_layer(Gptq(bits=4, group_size=32), torch.randn(32, 64), None, bias=False),
        _gptq_layer(Gptq(bits=4, group_size=32), torch.randn(40, 32), None, bias=False),  # N = 40: not a multiple of 16
    )
    x = torch.randn(2, 64).to(torch.bfloat16)
    before = model(x)
    assert repack_int4(model, torch.bfloat16) == 1
    assert isinstance(model[0], Int4Linear) and isinstance(model[1], GptqLinear)
    assert (model(x).float() - before.float()).abs().max().item() < 0.05 * before.float().abs().max().item()


needs_native = pytest.mark.skipif(native_int4() is None, reason="no C compiler, or a CPU without AVX2 and FMA")


def _float32_bound(x: torch.Tensor, layer: GptqLinear | AwqLinear) -> torch.Tensor:
    """float32 summation error of a K-term dot product (each weight exact in float32)."""
    w = layer.dequantize(torch.float32).double()
    return 2 * layer.in_features * torch.finfo(torch.float32).eps * (x.double().abs() @ w.abs().t()) + 1e-6


@needs_native
@settings(max_examples=30)
@given(gptq_cases(), st.sampled_from((1, 3, 4, 9, 33)))
def test_native_kernel_is_float32_exact_for_gptq(case: tuple[AbstractGptq, torch.Tensor, torch.Tensor | None, bool], batch: int) -> None:
    """The native kernel (decode rows 1…8 fused, more rows through dequantized blocks) computes the
    portable module's float32 output up to float32 summation order, for every 4-bit GPTQ variant."""
    config, weight, perm, bias = case
    layer = _gptq_layer(config, weight, perm, bias)
    weights = int4_from_gptq(layer)
    assert isinstance(weights, Int4Weights)
    fast = Q4Linear(weights, layer.bias, torch.float32)
    x = torch.randn(batch, weight.shape[1], generator=torch.Generator().manual_seed(batch))
    excess = (fast(x).double() - layer(x).double()).abs() - _float32_bound(x, layer)
    assert excess.max().item() <= 0


@needs_native
@settings(max_examples=30)
@given(awq_cases(), st.sampled_from((1, 2, 12)))
def test_native_kernel_is_float32_exact_for_awq(case: tuple[AbstractAwq, torch.Tensor, bool], batch: int) -> None:
    """The same for AWQ GEMM, GEMV and GEMV_FAST (whose scaled zeros become the kernel's offsets)."""
    config, weight, bias = case
    n, k = weight.shape
    q = quantize_awq(weight, config, bias=torch.randn(n) if bias else None)
    layer = AwqLinear(config, k, n, bias)
    layer.load_state_dict(q.tensors)
    fast = Q4Linear(int4_from_awq(layer), layer.bias, torch.float32)
    x = torch.randn(batch, k, generator=torch.Generator().manual_seed(batch))
    excess = (fast(x).double() - layer(x).double()).abs() - _float32_bound(x, layer)
    assert excess.max().item() <= 0


@needs_native
def test_native_kernel_takes_any_out_features_and_bf16_models() -> None:
    """out_features need not be a multiple of 16 (N = 40); a bf16 model's activations are read exactly."""
    layer = _gptq_layer(GptqV2(bits=4, group_size=32, sym=False), torch.randn(40, 64) * 0.05, None, bias=False)
    weights = int4_from_gptq(layer)
    assert isinstance(weights, Int4Weights) and int4_unfit(64, 40, 32) is not None
    fast = Q4Linear(weights, layer.bias, torch.bfloat16)
    x = torch.randn(2, 64).to(torch.bfloat16)
    got = fast(x)
    assert got.dtype == torch.bfloat16
    assert ((got.double() - layer(x.float()).double()).abs() - (2.0**-8 * layer(x.float()).double().abs() + 1e-6)).max() <= 0
