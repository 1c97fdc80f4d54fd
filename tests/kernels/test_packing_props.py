"""Property tests: every packing round-trips, and the portable modules compute ``F.linear`` of it.

The writers in ``quantdispatch.testing`` quantize by round-to-nearest and pack; here we check that
unpacking gives back exactly the codes, zero points and weight they started from, for every bit
width, group size and layout, and that the tensors have the shapes ``*_expected_tensors`` promise.
Self-consistency only: agreement with the real tools' layouts is in ``test_vs_gptqmodel.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from quantdispatch.configs import AbstractAwq, AbstractGptq, AwqGemm, AwqGemv, AwqGemvFast, Gptq, GptqV2
from quantdispatch.configs.gptq import GPTQ_BITS
from quantdispatch.kernels._bits import pack_last, unpack_last
from quantdispatch.kernels.awq import (
    awq_expected_tensors,
    dequantize_awq_gemm,
    dequantize_awq_gemv,
    dequantize_awq_gemv_fast,
    unpack_awq_gemm,
    unpack_awq_gemv,
    unpack_awq_gemv_fast,
)
from quantdispatch.kernels.gptq import (
    dequantize_gptq,
    gptq_expected_tensors,
    gptq_linear,
    gptq_v1_zeros,
    unpack_gptq_qweight,
    unpack_gptq_qzeros,
)
from quantdispatch.kernels.modules import AwqLinear, GptqLinear
from quantdispatch.testing import Quantized, quantize_awq, quantize_gptq

torch.set_num_threads(1)

SHAPES = {"normal": 1.0, "positive": 0.0, "zeros": -1.0}
"""Weight distributions: N(0,1); |N(0,1)| (every asymmetric zero point 0, v1's hard case); all zero."""


def _weight(seed: int, out_features: int, in_features: int, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=gen) * 0.05
    return w.abs() if kind == "positive" else torch.zeros_like(w) if kind == "zeros" else w


@st.composite
def gptq_cases(draw: st.DrawFn) -> tuple[AbstractGptq, torch.Tensor, torch.Tensor | None]:
    bits = draw(st.sampled_from(GPTQ_BITS))
    group_size = draw(st.sampled_from((-1, 16, 32, 64, 128)))
    kind = draw(st.sampled_from(("gptq", "gptq_v2")))
    sym = draw(st.booleans())
    config: AbstractGptq = (Gptq if kind == "gptq" else GptqV2)(bits=bits, group_size=group_size, sym=sym, desc_act=draw(st.booleans()))
    in_features = 32 * draw(st.integers(1, 6))
    out_features = 32 * draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    weight = _weight(seed, out_features, in_features, draw(st.sampled_from(tuple(SHAPES))))
    perm = torch.randperm(in_features, generator=torch.Generator().manual_seed(seed)) if config.desc_act else None
    return config, weight, perm


def _specs_of(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


@given(bits=st.sampled_from((2, 3, 4, 8)), blocks=st.integers(1, 4), rows=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_bit_stream_round_trips(bits: int, blocks: int, rows: int, seed: int) -> None:
    """Packing any ``bits``-wide values into int32 words and unpacking them gives them back."""
    values = torch.randint(0, 1 << bits, (rows, 32 * blocks), generator=torch.Generator().manual_seed(seed))
    packed = pack_last(values, bits)
    assert packed.dtype == torch.int32 and packed.shape == (rows, blocks * bits)
    assert torch.equal(unpack_last(packed, bits).to(torch.int64), values)


def test_three_bit_stream_is_little_endian_across_words() -> None:
    """3-bit value k occupies bits 3k … 3k+2 of the 96-bit block (AutoGPTQ's 10-1-10-1-10 scheme)."""
    values = torch.arange(32) % 8
    stream = sum(int(v) << (3 * k) for k, v in enumerate(values.tolist()))
    words = [(stream >> (32 * j)) & 0xFFFFFFFF for j in range(3)]
    assert [w & 0xFFFFFFFF for w in pack_last(values, 3).tolist()] == words


@given(gptq_cases())
def test_gptq_unpack_of_pack_is_the_quantized_weight(case: tuple[AbstractGptq, torch.Tensor, torch.Tensor | None]) -> None:
    """Every GPTQ width/group/sym/v1-v2/act-order: the tensors have the expected shapes and unpack to the RTN codes and weight."""
    config, weight, perm = case
    out_features, in_features = weight.shape
    q = quantize_gptq(weight, config, perm=perm, bias=torch.ones(out_features))
    expected = gptq_expected_tensors(config, in_features, out_features, bias=True)
    assert _specs_of(q.tensors) == {name: (spec.shape, spec.dtype) for name, spec in expected.items()}
    t, v1 = q.tensors, gptq_v1_zeros(config)
    assert torch.equal(unpack_gptq_qweight(t["qweight"], config.bits).to(torch.int64), q.codes.t())
    assert torch.equal(unpack_gptq_qzeros(t["qzeros"], config.bits, v1).to(torch.int64), q.zeros.t())
    for group_size in (config.group_size, None):
        got = dequantize_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=config.bits, v1=v1, group_size=group_size)
        assert torch.equal(got, q.weight)


@given(gptq_cases(), st.sampled_from((32, 64, 256)), st.integers(1, 3))
def test_gptq_linear_in_chunks_is_linear_of_the_weight(
    case: tuple[AbstractGptq, torch.Tensor, torch.Tensor | None], chunk: int, batch: int,
) -> None:
    """The chunked per-call forward (any chunk, partial and act-order groups) is F.linear of the reference weight, up to float32 summation order."""
    config, weight, perm = case
    out_features, in_features = weight.shape
    q = quantize_gptq(weight, config, perm=perm)
    t = q.tensors
    x = torch.randn(batch, in_features, generator=torch.Generator().manual_seed(chunk))
    y = gptq_linear(x, t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=config.bits, v1=gptq_v1_zeros(config),
                    group_size=config.group_size, chunk=chunk)
    exact = F.linear(x.double(), q.weight.double())
    bound = in_features * torch.finfo(torch.float32).eps * (x.double().abs() @ q.weight.double().abs().t()).max()
    assert (y.double() - exact).abs().max() <= bound
    # With the identity as input every output is one product: the chunked dequantization itself must be exact.
    eye = gptq_linear(torch.eye(in_features), t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=config.bits,
                      v1=gptq_v1_zeros(config), group_size=config.group_size, chunk=chunk)
    assert torch.equal(eye, q.weight.t())


@st.composite
def awq_cases(draw: st.DrawFn) -> tuple[AbstractAwq, torch.Tensor]:
    layout = draw(st.sampled_from((AwqGemm, AwqGemv, AwqGemvFast)))
    group_size = draw(st.sampled_from((-1, 16, 32, 64, 128)))
    config: AbstractAwq = layout(group_size=group_size, zero_point=draw(st.booleans()))
    in_features = 128 * draw(st.integers(1, 3))
    out_features = 8 * draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    return config, _weight(seed, out_features, in_features, draw(st.sampled_from(tuple(SHAPES))))


def _awq_unpacked(config: AbstractAwq, t: dict[str, torch.Tensor], groups: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes ``[N, K]`` and, where stored as integers, zero points ``[N, G]``."""
    if isinstance(config, AwqGemm):
        return unpack_awq_gemm(t["qweight"]).t(), unpack_awq_gemm(t["qzeros"]).t()
    if isinstance(config, AwqGemv):
        return unpack_awq_gemv(t["qweight"], t["qzeros"], groups)
    return unpack_awq_gemv_fast(t["qweight"]), None


def _awq_dequantize(config: AbstractAwq, t: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    if isinstance(config, AwqGemm):
        return dequantize_awq_gemm(t["qweight"], t["qzeros"], t["scales"], dtype=dtype)
    if isinstance(config, AwqGemv):
        return dequantize_awq_gemv(t["qweight"], t["qzeros"], t["scales"], group_size=config.group_size, dtype=dtype)
    return dequantize_awq_gemv_fast(t["qweight"], t["qzeros"], t["scales"], group_size=config.group_size, dtype=dtype)


@given(awq_cases())
def test_awq_unpack_of_pack_is_the_quantized_weight(case: tuple[AbstractAwq, torch.Tensor]) -> None:
    """GEMM, GEMV and GEMV_FAST, with and without zero points: expected shapes, codes and weight come back."""
    config, weight = case
    out_features, in_features = weight.shape
    q = quantize_awq(weight, config)
    expected = awq_expected_tensors(config, in_features, out_features, bias=False)
    assert _specs_of(q.tensors) == {name: (spec.shape, spec.dtype) for name, spec in expected.items()}
    codes, zeros = _awq_unpacked(config, q.tensors, q.zeros.shape[1])
    assert torch.equal(codes.to(torch.int64), q.codes)
    if zeros is not None:
        assert torch.equal(zeros.to(torch.int64), q.zeros)
    assert torch.equal(_awq_dequantize(config, q.tensors, torch.float32), q.weight)


def _module_for(config: AbstractGptq | AbstractAwq, q: Quantized, bias: bool, dequantize_at_load: bool) -> GptqLinear | AwqLinear:
    out_features, in_features = q.codes.shape
    module: GptqLinear | AwqLinear
    if isinstance(config, AbstractGptq):
        module = GptqLinear(config, in_features, out_features, bias, device="meta", dequantize_at_load=dequantize_at_load)
    else:
        module = AwqLinear(config, in_features, out_features, bias, device="meta", dequantize_at_load=dequantize_at_load)
    module.load_state_dict(q.tensors, assign=True)
    return module


CONFIGS = (
    Gptq(bits=4, group_size=32, sym=False, desc_act=True), GptqV2(bits=3, group_size=64), Gptq(bits=2, group_size=-1),
    GptqV2(bits=8, group_size=16, sym=False), AwqGemm(group_size=32), AwqGemv(group_size=64), AwqGemvFast(group_size=128),
)


def _quantize(config: AbstractGptq | AbstractAwq, weight: torch.Tensor, bias: torch.Tensor) -> Quantized:
    if isinstance(config, AbstractGptq):
        perm = torch.randperm(weight.shape[1], generator=torch.Generator().manual_seed(1)) if config.desc_act else None
        return quantize_gptq(weight, config, perm=perm, bias=bias)
    return quantize_awq(weight, config, bias=bias)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{type(c).__name__}-{getattr(c, 'bits', 4)}b-g{c.group_size}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dequantize_at_load", [False, True], ids=["per-call", "at-load"])
def test_module_forward_is_linear_of_the_weight(config: AbstractGptq | AbstractAwq, dtype: torch.dtype, dequantize_at_load: bool) -> None:
    """Built on meta, loaded with assign: forward(x) is F.linear(x, W, b), W the reference rounded once to x's dtype."""
    weight, bias = _weight(3, 64, 256, "normal"), torch.randn(64, generator=torch.Generator().manual_seed(4))
    q = _quantize(config, weight, bias)
    module = _module_for(config, q, True, dequantize_at_load)
    module.per_call_block = 2048  # several blocks of output rows (AWQ) or input rows (GPTQ) per call
    dense = module.dequantize(dtype)
    assert torch.equal(dense, q.weight.to(dtype)) and dense.is_contiguous()
    x = torch.randn(2, 5, 256, generator=torch.Generator().manual_seed(5)).to(dtype)
    w, b = q.weight.to(dtype).double(), bias.to(torch.float16).to(dtype).double()
    exact = F.linear(x.double(), w, b)
    # One rounding to the output dtype, plus float32 accumulation error over 256 products.
    tolerance = 2 * torch.finfo(dtype).eps * exact.abs().max() + 256 * torch.finfo(torch.float32).eps * (x.double().abs() @ w.abs().t()).max()
    for _ in range(2):  # twice: the at-load cache must give the same answer
        y = module(x)
        assert y.dtype == dtype and y.shape == exact.shape
        assert (y.double() - exact).abs().max() <= tolerance


def test_dequantize_at_load_cache_follows_reloads() -> None:
    """Loading new tensors into a dequantize-at-load module replaces its cached dense weight."""
    config = GptqV2(bits=4, group_size=32)
    first, second = (quantize_gptq(_weight(seed, 32, 64, "normal"), config) for seed in (1, 2))
    module = GptqLinear(config, 64, 32, bias=False, dequantize_at_load=True)
    x = torch.randn(1, 64)
    for q in (first, second):
        module.load_state_dict(q.tensors)
        torch.testing.assert_close(module(x), F.linear(x, q.weight))


@pytest.mark.parametrize(
    ("config", "in_features", "out_features", "expected"),
    [
        # Shapes from the tools' own constructors (GPTQModel BaseQuantLinear; AutoAWQ WQLinear_*), worked by hand.
        (Gptq(bits=4, group_size=128), 4096, 11008, {"qweight": ((512, 11008), "int32"), "qzeros": ((32, 1376), "int32"),
                                                     "scales": ((32, 11008), "float16"), "g_idx": ((4096,), "int32")}),
        (GptqV2(bits=3, group_size=-1), 96, 64, {"qweight": ((9, 64), "int32"), "qzeros": ((1, 6), "int32"),
                                                 "scales": ((1, 64), "float16"), "g_idx": ((96,), "int32")}),
        (Gptq(bits=8, group_size=100), 256, 32, {"qweight": ((64, 32), "int32"), "qzeros": ((3, 8), "int32"),
                                                 "scales": ((3, 32), "float16"), "g_idx": ((256,), "int32")}),
        (AwqGemm(group_size=128), 4096, 4096, {"qweight": ((4096, 512), "int32"), "qzeros": ((32, 512), "int32"),
                                               "scales": ((32, 4096), "float16")}),
        (AwqGemv(group_size=64), 4096, 4096, {"qweight": ((4096, 512), "int32"), "qzeros": ((4096, 8), "int32"),
                                              "scales": ((4096, 64), "float16")}),
        (AwqGemv(group_size=32), 256, 64, {"qweight": ((64, 32), "int32"), "qzeros": ((64, 4), "int32"),
                                           "scales": ((64, 32), "float16")}),
        (AwqGemvFast(group_size=128), 4096, 4096, {"qweight": ((1024, 4096), "int16"), "qzeros": ((32, 4096), "float16"),
                                                   "scales": ((32, 4096), "float16")}),
    ],
)
def test_expected_tensors(config: AbstractGptq | AbstractAwq, in_features: int, out_features: int,
                          expected: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """The expected-tensor map gives the shapes and dtypes the producing tools allocate, plus a bias when asked."""
    if isinstance(config, AbstractGptq):
        specs = gptq_expected_tensors(config, in_features, out_features, True)
    else:
        specs = awq_expected_tensors(config, in_features, out_features, True)
    bias = {"bias": ((out_features,), "float16")}
    assert {name: (spec.shape, str(spec.dtype).removeprefix("torch.")) for name, spec in specs.items()} == {**expected, **bias}


@pytest.mark.parametrize(
    ("config", "in_features", "out_features"),
    [(Gptq(bits=3, group_size=128), 48, 64), (Gptq(bits=4, group_size=0), 64, 64), (AwqGemvFast(group_size=128), 96, 64),
     (AwqGemv(group_size=8), 128, 64), (AwqGemm(group_size=48), 128, 64)],
)
def test_expected_tensors_refuse_unpackable_layers(config: AbstractGptq | AbstractAwq, in_features: int, out_features: int) -> None:
    """Dimensions a packing cannot hold raise ValueError before anything is allocated."""
    with pytest.raises(ValueError):
        if isinstance(config, AbstractGptq):
            gptq_expected_tensors(config, in_features, out_features, False)
        else:
            awq_expected_tensors(config, in_features, out_features, False)
