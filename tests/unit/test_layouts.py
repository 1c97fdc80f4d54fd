"""Layouts: what each declares about a stored layer, checked against the writers, and every lazy
reference of the registered layouts, kernels and backends imports."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.backend import Backend
from quantdispatch.configs import AwqGemm, AwqGemv, AwqGemvFast, AwqLlm, AwqMarlin, Bnb4Bit, Bnb8Bit, Gptq, GptqV2
from quantdispatch.configs.gptq import GPTQ_BITS
from quantdispatch.kernel import Kernel, Rank, kernel_candidates, kernels, register_kernel
from quantdispatch.kernels._common import TORCH_DTYPES
from quantdispatch.layouts import (
    AbstractLayout,
    AwqPacked,
    Bnb4BitBlocks,
    Bnb8BitRows,
    Fp8ScaleInv,
    GptqPacked,
    Lazy,
    TensorDecl,
    Unpackable,
    layout_of,
    layouts,
)
from quantdispatch.rules import RegistrationError, backends
from quantdispatch.testing import quantize_awq, quantize_gptq

torch.set_num_threads(1)

_AWQ = {"gemm": AwqGemm, "gemv": AwqGemv, "gemv_fast": AwqGemvFast}


def _declared(layout: AbstractLayout, k: int, n: int, bias: bool) -> dict[str, TensorDecl]:
    found = layout.tensors(k, n, bias)
    assert not isinstance(found, Unpackable), found
    return dict(found)


def _matches(declared: dict[str, TensorDecl], written: dict[str, torch.Tensor]) -> None:
    assert set(declared) == set(written)
    for name, d in declared.items():
        t = written[name]
        assert tuple(t.shape) == d.shape, (name, tuple(t.shape), d.shape)
        assert t.dtype in {TORCH_DTYPES[c] for c in (d.dtype, *d.accepted)}, (name, t.dtype, d)


@given(bits=st.sampled_from(GPTQ_BITS), blocks=st.integers(1, 4), n_blocks=st.integers(1, 3), group=st.sampled_from((-1, 32, 64)),
       v2=st.booleans(), bias=st.booleans())
def test_gptq_layout_declares_what_the_writer_packs(bits: Literal[2, 3, 4, 8], blocks: int, n_blocks: int, group: int, v2: bool, bias: bool) -> None:
    """GPTQ's declared tensors are exactly the shapes and dtypes the round-to-nearest writer packs, and out_features reads back."""
    k, n = 32 * blocks * 2, 32 * n_blocks
    config = GptqV2(bits=bits, group_size=group) if v2 else Gptq(bits=bits, group_size=group)
    layout = layout_of(config)
    assert isinstance(layout, GptqPacked) and layout.v1 is not v2
    written = quantize_gptq(torch.randn(n, k), config, bias=torch.randn(n) if bias else None).tensors
    declared = _declared(layout, k, n, bias)
    _matches(declared, written)
    assert layout.out_features({name: d.shape for name, d in declared.items()}) == n
    assert layout.indexes(k, n) == {"g_idx": ("scales", declared["scales"].shape[0])}


@given(version=st.sampled_from(("gemm", "gemv", "gemv_fast")), k_runs=st.integers(1, 3), n_runs=st.integers(1, 3),
       group=st.sampled_from((-1, 64, 128)), bias=st.booleans())
def test_awq_layout_declares_what_the_writer_packs(version: str, k_runs: int, n_runs: int, group: int, bias: bool) -> None:
    """Each AWQ packing's declared tensors are what the writer packs, and out_features reads back from them."""
    k, n = 128 * k_runs, 32 * n_runs
    config = _AWQ[version](group_size=group)
    layout = layout_of(config)
    assert isinstance(layout, AwqPacked) and layout.version == version
    written = quantize_awq(torch.randn(n, k), config, bias=torch.randn(n) if bias else None).tensors
    declared = _declared(layout, k, n, bias)
    _matches(declared, written)
    assert layout.out_features({name: d.shape for name, d in declared.items()}) == n


@pytest.mark.parametrize(("layout", "k", "n", "code"), [
    (GptqPacked(bits=4, group_size=128, v1=True), 100, 64, "gptq.shape.not_packable"),
    (GptqPacked(bits=3, group_size=128, v1=True), 256, 48, "gptq.shape.not_packable"),
    (GptqPacked(bits=4, group_size=0, v1=True), 256, 64, "gptq.group_size.range"),
    (AwqPacked(bits=4, group_size=128, version="gemm"), 192, 64, "awq.shape.not_packable"),
    (AwqPacked(bits=4, group_size=48, version="gemv"), 96, 64, "awq.group_size.gemv"),
])
def test_a_shape_the_layout_cannot_hold_is_a_coded_reason(layout: AbstractLayout, k: int, n: int, code: str) -> None:
    """A layer the packing cannot hold is an Unpackable with a stable code, not an exception."""
    found = layout.tensors(k, n, False)
    assert isinstance(found, Unpackable) and found.code == code


def test_layout_of_answers_for_each_packing_and_none_for_the_rest() -> None:
    """layout_of is dispatched on the config type; packings no portable module reads have no layout."""
    assert layout_of(GptqV2(bits=8, group_size=-1, desc_act=True)) == GptqPacked(bits=8, group_size=-1, v1=False, desc_act=True)
    assert layout_of(AwqGemvFast(group_size=64)) == AwqPacked(bits=4, group_size=64, version="gemv_fast")
    assert layout_of(AwqMarlin()) is None and layout_of(AwqLlm()) is None
    assert layout_of(Bnb4Bit(quant_type="nf4")) == Bnb4BitBlocks(quant_type="nf4", double_quant=False)
    assert isinstance(layout_of(Bnb8Bit()), Bnb8BitRows)
    mx = layout_of(qd.Mxfp8(weight_block_size=(128, 128)))  # MX's block is the format's, not the shared config's default
    assert isinstance(mx, Fp8ScaleInv) and mx.block == (1, 32) and mx.exponent_scales
    assert layout_of(qd.FourOverSix()) is None  # no layout yet: planned, not loaded


def test_derivable_and_finite_follow_the_format() -> None:
    """g_idx is derivable only without act-order; GEMV_FAST's scaled zeros must be finite too."""
    assert GptqPacked(bits=4, group_size=128, v1=True).derivable() == {"g_idx"}
    assert GptqPacked(bits=4, group_size=128, v1=True, desc_act=True).derivable() == frozenset()
    assert AwqPacked(bits=4, group_size=128, version="gemv_fast").finite() == {"scales", "qzeros"}
    assert AwqPacked(bits=4, group_size=128, version="gemm").finite() == {"scales"}


def test_every_layout_describes_itself() -> None:
    """inspect shows a layout in words; each declared layout type gives a sentence, not its class name."""
    examples = [layout_of(c) for c in (Gptq(bits=4), AwqGemm(), Bnb4Bit(), Bnb8Bit())]
    for layout in examples:
        assert layout is not None and layout.describe() != type(layout).__name__
    assert {type(x) for x in examples} <= set(layouts())


def test_every_lazy_reference_imports() -> None:
    """Each declared layout's portable module and forms, each kernel's prepare and each backend's
    loader imports and is callable; a backend without a loader is planning-only (loader None)."""
    failures: list[str] = []

    def check(what: str, ref: Lazy[Any]) -> None:
        try:
            found = ref.resolve()
        except (ImportError, AttributeError) as e:
            failures.append(f"{what}: {ref}: {e}")
            return
        if not callable(found):
            failures.append(f"{what}: {ref} is not callable")

    for layout_type in layouts():
        if layout_type.portable is not None:
            check(f"{layout_type.__name__}.portable", layout_type.portable)
        for form, ref in layout_type.forms.items():
            check(f"{layout_type.__name__}.forms[{form!r}]", ref)
    for kernel in kernels():
        if kernel.prepare is not None:
            check(f"kernel {kernel.name}", kernel.prepare)
    for backend in backends():
        if backend.loader is not None:
            module, _, name = backend.loader.partition(":")
            check(f"backend {backend.name}", Lazy(module, name))
    assert failures == []
    assert {k.name for k in kernels()} >= {"torch-packed", "cpu-int4", "cpu-q4", "cpu-dense"}


def test_kernel_names_carry_no_method() -> None:
    """The built-in kernels serve layouts, not methods: no method string appears in their names."""
    from quantdispatch.codec.registry import families

    methods = {f.method for f in families()}
    for kernel in kernels():
        assert not any(m in kernel.name for m in methods if len(m) > 2), kernel.name


def test_one_kernel_serves_every_layout_that_converts_to_its_input() -> None:
    """cpu-q4-q8dot, cpu-q4 and cpu-int4 are offered for GPTQ, AWQ and compressed-tensors alike, through their int4 form."""
    cpu = qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True, avx512=True, avx512_bf16=True))
    for config in (Gptq(bits=4), AwqGemm(), AwqGemv(group_size=64)):
        names = [c.backend.name for c in kernel_candidates(layout_of(config), cpu)]
        assert names[:3] == ["cpu-q4-q8dot", "cpu-q4", "cpu-int4"] and names[-1] == "torch-packed"


def test_kernel_registration_is_checked_at_registration() -> None:
    """A duplicate name, a non-layout type or a prepare that is not a Lazy reference raises at once."""
    with pytest.raises(RegistrationError, match="already registered"):
        register_kernel(Kernel(name="cpu-int4", summary="again", layouts=(GptqPacked,)))
    with pytest.raises(RegistrationError, match="layout types"):
        register_kernel(Kernel(name="toy-bad-layouts", summary="x", layouts=(int,)))  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="Lazy reference"):
        register_kernel(Kernel(name="toy-bad-prepare", summary="x", layouts=(GptqPacked,), prepare="a:b"))  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="a layout type and a device type"):
        Kernel(name="toy-fit", summary="x", layouts=(GptqPacked,)).fit.register(Gptq, qd.Cpu)  # type: ignore[type-var]
    assert Rank(3, native_bf16=1)(qd.Cpu()) == 3
    assert isinstance(next(iter(backends())), Backend)
