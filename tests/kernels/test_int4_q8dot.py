"""The int8-activation int4 kernel (``cpu-q4-q8dot``): its layout, its arithmetic, its levels and threads.

Oracles, computed by torch from the documented formats and never by the kernel's code:

- the weights ``W = q * scale + offset`` in float64;
- the activations rounded as documented (per 32 columns ``d = absmax / 127`` in float32,
  ``xq = round(x * (1 / d))`` away from zero at halves), so ``W @ (d * xq)`` in float64 is what
  the kernel computes up to float32 rounding of its few float steps (the integer sums are exact);
- and the float64 ``W @ x``, from which the kernel may differ by at most the int8 rounding
  (half a step ``d / 2`` per activation) times ``|W|``.

Levels are selected the way a user selects them (``QUANTDISPATCH_CPU_FEATURES``); the integer sums
and float operations are the same at every level, so outputs must be equal bit for bit, and
equal on 1 and 2 threads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantdispatch.kernels._native import Isa, isa_level
from quantdispatch.kernels._simd import LEVELS
from quantdispatch.kernels.int4 import Int4Weights
from quantdispatch.kernels.int4_q8dot import (
    ROW_GROUP,
    Q4Q8Linear,
    native_q4q8,
    pack_q4q8,
    q4q8_matmul,
    unpack_q4q8,
)
from tests.cpu import cpu_mask

torch.set_num_threads(1)

_HOST = isa_level()
_MASKS = {"avx2": "avx2,fma", "avx512": "avx2,fma,avx512f", "avx512-vnni": "avx2,fma,avx512f,avx512_vnni"}
RUNNABLE: tuple[Isa, ...] = LEVELS[:LEVELS.index(_HOST) + 1] if _HOST is not None else ()

needs_kernel = pytest.mark.skipif(native_q4q8() is None, reason="the int8-activation int4 kernel cannot be built or run here")
EPS = torch.finfo(torch.float32).eps


def _weights(n: int, k: int, group: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes [N, K], scale and offset [N, G] (GPTQ-like: offset = -z * scale, plus AWQ-like noise), W float64 [N, K]."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
    scale = torch.rand(n, k // group, generator=g) * 0.02 + 1e-4
    offset = -torch.randint(0, 16, (n, k // group), generator=g).float() * scale + torch.randn(n, k // group, generator=g) * 1e-3
    weight = codes.double() * scale.double().repeat_interleave(group, 1) + offset.double().repeat_interleave(group, 1)
    return codes, scale, offset, weight


def _rounded(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented int8 rounding of x [M, K] (float32): (xq as float64 [M, K], d float32 [M, K/32])."""
    m, k = x.shape
    blocks = x.view(m, k // 32, 32)
    d = blocks.abs().amax(dim=2) / torch.tensor(127.0)
    inv = torch.where(d != 0, torch.tensor(1.0) / d, torch.zeros_like(d))
    v = blocks * inv.unsqueeze(2)                                 # float32 product, as in C
    q = torch.sign(v) * torch.floor(v.abs() + 0.5)                # roundf: halves away from zero
    return q.clamp(-127, 127).reshape(m, k).double(), d


def _oracle(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W @ dequant(xq) in float64, and a float32 bound on the kernel's distance from it."""
    q, d = _rounded(x.float())
    xd = q * d.double().repeat_interleave(32, 1)
    terms = xd.abs() @ weight.abs().T
    steps = x.shape[1] // 32 + 2 * 256 + 8  # float32 operations on each output's path, generously
    return xd @ weight.T, steps * EPS * terms + 1e-30


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from((32, 64, 128, 256)), st.integers(0, 2**16))
def test_pack_round_trips(n: int, blocks: int, group: int, seed: int) -> None:
    """pack_q4q8 then unpack_q4q8 gives back the codes, scales and offsets; rows are padded to 16."""
    k = 32 * blocks * (group // 32)
    codes, scale, offset, _ = _weights(n, k, group, seed)
    packed, s, o = pack_q4q8(codes, scale, offset)
    rows = -(-n // ROW_GROUP)
    assert packed.shape == (rows, k // 32, 256) and s.shape == o.shape == (rows, k // group, ROW_GROUP)
    c2, s2, o2 = unpack_q4q8(packed, s, o, n)
    assert torch.equal(c2, codes) and torch.equal(s2, scale) and torch.equal(o2, offset)


def test_layout_puts_four_columns_of_one_row_in_each_lane() -> None:
    """The documented byte: chunk c, row r, byte j of a block holds columns 4c + j (low) and 16 + 4c + j (high)."""
    n, k = 20, 64
    codes = (torch.arange(n * k) % 16).view(n, k).to(torch.uint8)
    packed, _, _ = pack_q4q8(codes, torch.ones(n, 1), torch.zeros(n, 1))
    for (p, b, c, r, j) in ((0, 0, 0, 0, 0), (0, 1, 3, 15, 3), (1, 0, 2, 3, 1), (1, 1, 1, 0, 2)):
        byte = int(packed[p, b, 64 * c + 4 * r + j])
        row, col = 16 * p + r, 32 * b + 4 * c + j
        assert byte & 15 == int(codes[row, col]) and byte >> 4 == int(codes[row, col + 16])
    assert int(packed[1, 0, 64 * 0 + 4 * 5]) == 0  # padding rows (16..31 past N = 20) are zero codes


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    group = draw(st.sampled_from((32, 64, 128, 256)))
    k = group * draw(st.integers(1, max(1, 640 // group)))
    return draw(st.sampled_from((1, 2, 3, 4, 5, 8, 13, 40))), draw(st.integers(1, 50)), k, group, draw(st.integers(0, 2**16))


@needs_kernel
@settings(max_examples=30, deadline=None)
@given(cases(), st.sampled_from((torch.float32, torch.bfloat16)))
def test_decode_is_the_weights_times_the_rounded_activations(case: tuple[int, int, int, int, int], dtype: torch.dtype) -> None:
    """One row (decode) or many (prefill: the same loop), odd N: within float32 rounding of W @ dequant(xq), and within the
    int8 rounding (d / 2 per activation, times |W|) of the exact W @ x."""
    m, n, k, group, seed = case
    codes, scale, offset, weight = _weights(n, k, group, seed)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    got = q4q8_matmul(x, *pack_q4q8(codes, scale, offset), n, group).double()
    assert got.shape == (m, n)
    expected, bound = _oracle(x.float(), weight)
    assert ((got - expected).abs() - bound).max().item() <= 0
    _, d = _rounded(x.float())
    step = (0.5 + 1e-3) * d.double().repeat_interleave(32, 1)     # the largest rounding of one activation
    exact = x.double() @ weight.T
    assert ((got - exact).abs() - step @ weight.abs().T - bound).max().item() <= 0


@needs_kernel
def test_zero_and_constant_blocks() -> None:
    """A block of zeros has d = 0 and contributes nothing; a constant block is exact (q = +-127)."""
    n, k, group = 17, 128, 64
    codes, scale, offset, weight = _weights(n, k, group, 5)
    x = torch.zeros(2, k)
    x[1, 32:64] = 0.75
    got = q4q8_matmul(x, *pack_q4q8(codes, scale, offset), n, group).double()
    assert torch.equal(got[0], torch.zeros(n, dtype=torch.float64))
    exact = x.double() @ weight.T
    assert torch.allclose(got[1], exact[1], rtol=1e-5, atol=1e-7)


@needs_kernel
@pytest.mark.skipif(not RUNNABLE, reason="no SIMD level here")
@settings(max_examples=15, deadline=None)
@given(cases(), st.sampled_from((torch.float32, torch.bfloat16)))
def test_levels_and_threads_give_the_same_bits(case: tuple[int, int, int, int, int], dtype: torch.dtype) -> None:
    """Every level this CPU runs (AVX2, AVX-512 BW, AVX512-VNNI), on 1 and 2 threads: equal outputs."""
    m, n, k, group, seed = case
    codes, scale, offset, _ = _weights(n, k, group, seed)
    packed = pack_q4q8(codes, scale, offset)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype)
    threads = torch.get_num_threads()
    found = {}
    try:
        for level in RUNNABLE:
            with cpu_mask(_MASKS[level]):
                for t in (1, 2):
                    torch.set_num_threads(t)
                    found[(level, t)] = q4q8_matmul(x, *packed, n, group)
    finally:
        torch.set_num_threads(threads)
    first = next(iter(found.values()))
    assert all(torch.equal(v, first) for v in found.values()), [key for key, v in found.items() if not torch.equal(v, first)]


@needs_kernel
@pytest.mark.skipif(not RUNNABLE, reason="no SIMD level here")
def test_level_bits_on_a_large_layer() -> None:
    """A 1000 x 8192 g128 layer (many row groups, a partial last one, threads really split) on 1 and
    37 rows (two passes over the weights, 32 rows then 5): same bits everywhere, and the oracle's."""
    n, k, group = 1000, 8192, 128
    codes, scale, offset, weight = _weights(n, k, group, 11)
    packed = pack_q4q8(codes, scale, offset)
    x = torch.randn(37, k, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    found = []
    try:
        for level in RUNNABLE:
            with cpu_mask(_MASKS[level]):
                for t in (1, 2):
                    torch.set_num_threads(t)
                    found.append(q4q8_matmul(x, *packed, n, group))
                    found.append(torch.cat((q4q8_matmul(x[:1], *packed, n, group), found[-1][1:])))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(v, found[0]) for v in found)
    expected, bound = _oracle(x, weight)
    assert ((found[0].double() - expected).abs() - bound).max().item() <= 0


@needs_kernel
def test_bad_shapes_are_refused_before_the_kernel_reads() -> None:
    """Sizes that would make the C loop read past a buffer raise ValueError."""
    n, k, group = 20, 128, 64
    codes, scale, offset, _ = _weights(n, k, group, 0)
    packed, s, o = pack_q4q8(codes, scale, offset)
    x = torch.randn(1, k)
    calls: list[Callable[[], torch.Tensor]] = [
                lambda: q4q8_matmul(torch.randn(1, k + 32), packed, s, o, n, group),      # K disagrees
                lambda: q4q8_matmul(x, packed, s, o, n + 16, group),                       # one row group too many
                lambda: q4q8_matmul(x, packed, s, o, n, 48),                               # group not a multiple of 32
                lambda: q4q8_matmul(x, packed, s, o, n, 128),                              # scales for 64
                lambda: q4q8_matmul(x, packed, s[:, :1], o, n, group),                     # too few scales
                lambda: q4q8_matmul(x, packed.view(torch.int8), s, o, n, group),           # wrong dtype
                lambda: q4q8_matmul(x, packed, s.double(), o, n, group),
                lambda: q4q8_matmul(torch.randn(k), packed, s, o, n, group),               # 1-d x
                lambda: q4q8_matmul(x.to(torch.int32), packed, s, o, n, group),
                lambda: q4q8_matmul(x, packed, s, o, 0, group)]
    for bad in calls:
        with pytest.raises(ValueError, match="q4q8_matmul needs"):
            bad()


@needs_kernel
def test_the_module_gathers_act_order_columns_and_adds_the_bias() -> None:
    """Q4Q8Linear with a permutation (act-order) and a bias against the float64 layer it stands for."""
    n, k, group = 24, 256, 64
    codes, scale, offset, _ = _weights(n, k, group, 9)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    # Int4Weights holds codes in kernel (sorted) order and the aten form zero = offset + 8 * scale, [G, N].
    weights = Int4Weights(codes, scale.t().contiguous(), (offset + 8 * scale).t().contiguous(), group, perm)
    bias = torch.randn(n)
    layer = Q4Q8Linear(weights, bias, torch.float32)
    sorted_w = codes.double() * scale.double().repeat_interleave(group, 1) + offset.double().repeat_interleave(group, 1)
    x = torch.randn(2, 3, k)
    got = layer(x)
    assert got.shape == (2, 3, n)
    expected, bound = _oracle(x.reshape(6, k)[:, perm], sorted_w)
    assert ((got.double().reshape(6, n) - bias.double() - expected).abs() - bound - 1e-6).max().item() <= 0


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("m", "n", "k", "group"), [(1, 16, 64, 32), (3, 37, 128, 64), (12, 24, 256, 256)])
def test_opcheck(m: int, n: int, k: int, group: int, dtype: torch.dtype) -> None:
    """The op's schema, fake (meta) implementation and registration agree with its CPU kernel."""
    from quantdispatch.kernels.int4_q8dot import Q4Q8_MATMUL

    codes, scale, offset, _ = _weights(n, k, group, m)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(dtype)
    torch.library.opcheck(Q4Q8_MATMUL, (x, *pack_q4q8(codes, scale, offset), n, group))
