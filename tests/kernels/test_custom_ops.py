"""The native kernels as ``torch.library`` ops: ``opcheck`` on each, their C shipped as package data.

``torch.library.opcheck`` runs an op under the schema checker, a fake-tensor cross-check (the fake
implementation must give the real output's shape, dtype and strides), and AOTAutograd with dynamic
shapes (what ``torch.compile`` does with it). Inputs are realistic and small: real block layouts
with finite float16 scales, several shapes, float32 and bfloat16 activations. Ops whose C library
cannot be built here skip, saying so.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import torch

from quantdispatch.gguf.native import FUSED_MATVEC_TYPES, NATIVE_DEQUANT_TYPES, c_name
from quantdispatch.gguf.types import BLOCK, GgmlType
from quantdispatch.kernels._native import build_library, read_source
from quantdispatch.kernels._simd import native_bf16
from quantdispatch.kernels.gguf.dequant import GGUF_DEQUANTIZE, dequantize
from quantdispatch.kernels.gguf.matvec import GGUF_MATVEC, matvec_kernels
from quantdispatch.kernels.gguf.modules import GGUF_LINEAR
from quantdispatch.kernels.gguf.native import GGUF_DEQUANT_BLOCKS, block_defines, native_kernels
from quantdispatch.kernels.int4_native import FUSED_ROWS, Q4_MATMUL, native_int4

torch.set_num_threads(1)

PACKAGE: Final = Path(__file__).resolve().parents[2] / "quantdispatch"

C_FILES: Final = {
    "quantdispatch.kernels": ("int4_native.c", "int4_q8dot.c", "fp8_native.c", "fp4_native.c", "dense_native.c"),
    "quantdispatch.kernels.gguf": ("native.c", "matvec.c", "half.h"),
}
"""The C shipped as package data, by package."""

HALVES: Final[dict[GgmlType, tuple[int, ...]]] = {  # byte offsets of each block's float16 scales (ggml-common.h)
    GgmlType.Q4_0: (0,), GgmlType.Q4_1: (0, 2), GgmlType.Q8_0: (0,), GgmlType.Q4_K: (0, 2), GgmlType.Q5_K: (0, 2),
    GgmlType.Q6_K: (208,), GgmlType.IQ4_XS: (0,), GgmlType.IQ2_XS: (0,),
}

needs_int4 = pytest.mark.skipif(native_int4() is None, reason="the native int4 kernel cannot be built here (no C compiler, or no AVX2+FMA)")
needs_matvec = pytest.mark.skipif(matvec_kernels() is None, reason="the fused GGUF matvec kernels cannot be built here")
needs_dequant = pytest.mark.skipif(native_kernels() is None, reason="the native GGUF dequantization kernels cannot be built here")


def _blocks(t: GgmlType, rows: int, cols: int, seed: int) -> torch.Tensor:
    """Random blocks of a ``[rows, cols]`` weight, uint8 ``[rows, row bytes]``, float16 scales finite and small."""
    per, size = BLOCK[t]
    n = rows * cols // per
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 256, (n, size), dtype=torch.uint8, generator=g)
    for at in HALVES[t]:
        b[:, at:at + 2] = (torch.randn(n, 1, generator=g) * 0.02).to(torch.float16).view(torch.uint8)
    return b.reshape(rows, -1)


def _x(m: int, k: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- the C files -------------------------------------------------------------------------------


def test_c_sources_are_package_data_found_through_importlib_resources() -> None:
    """Every C file is a resource of its package (so a wheel ships it: pyproject's package-data),
    and no Python module of the package embeds C any more."""
    for package, names in C_FILES.items():
        for name in names:
            assert importlib.resources.files(package).joinpath(name).is_file(), (package, name)
            assert read_source(package, name).strip()
    shipped = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.suffix in (".c", ".h")}
    assert shipped == {f"{package.removeprefix('quantdispatch.').replace('.', '/')}/{name}"
                       for package, names in C_FILES.items() for name in names}
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert '"kernels/*.c", "kernels/gguf/*.c", "kernels/gguf/*.h"' in pyproject
    embedded = [p for p in PACKAGE.rglob("*.py") if "#include <" in p.read_text()]
    assert embedded == []


def test_block_sizes_come_from_the_block_table_and_h2f_is_written_once() -> None:
    """The GGUF C files name each type's block size through the ``-D`` macros made from ``BLOCK``
    (never a number of their own), every type of the one table has its C functions, and ``h2f``
    is defined once, in the shared header."""
    native, matvec, header = (read_source("quantdispatch.kernels.gguf", n) for n in ("native.c", "matvec.c", "half.h"))
    for t in NATIVE_DEQUANT_TYPES:
        assert f"{t.name}_BYTES" in native and f"{t.name}_WEIGHTS" in native, t
        assert re.search(rf"\bvoid {c_name(t)}\(", native), t
    for t in FUSED_MATVEC_TYPES:
        assert f"mv_{c_name(t)}" in matvec and f"qx_{c_name(t)}" in matvec, t
    for text in (native, matvec):
        assert '#include "half.h"' in text and "h2f(const" not in text
        for t in NATIVE_DEQUANT_TYPES | FUSED_MATVEC_TYPES:
            per_block, size = BLOCK[t]  # a block's stride, or a super-block's 256 weights, written as a number
            assert not re.search(rf"\bb \+= {size}\b|\* {size}\b|[/*] {per_block}\b(?! \*/)" if per_block > 32 else
                                 rf"\bb \+= {size}\b|\* {size}\b", text), (t, size)
    assert header.count("static inline float h2f(") == 1
    assert block_defines([GgmlType.Q6_K, GgmlType.Q4_0]) == {
        "QUANTDISPATCH_BLOCK_SIZES": 1, "Q4_0_WEIGHTS": 32, "Q4_0_BYTES": 18, "Q6_K_WEIGHTS": 256, "Q6_K_BYTES": 210}


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None and not os.environ.get("CC"), reason="no C compiler here")
def test_the_build_cache_key_covers_source_headers_and_defines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the source, to a header it includes or to a define builds a new library; the
    same inputs reuse the cached one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = '#include "value.h"\nint value(void) { return VALUE + OFFSET; }\n'
    flags = ("-O1", "-shared", "-fPIC")

    def value(src: str, header: str, offset: int) -> int:
        lib = build_library("probe", src, flags, headers={"value.h": header}, defines={"OFFSET": offset})
        assert lib is not None
        got: int = lib.value()
        return got

    assert value(source, "#define VALUE 1\n", 10) == 11
    assert value(source, "#define VALUE 1\n", 10) == 11
    assert len(list((tmp_path / "quantdispatch").glob("probe_*.so"))) == 1
    assert value(source, "#define VALUE 2\n", 10) == 12
    assert value(source, "#define VALUE 2\n", 20) == 22
    assert value(source.replace("+ OFFSET", "- OFFSET"), "#define VALUE 2\n", 20) == -18
    assert len(list((tmp_path / "quantdispatch").glob("probe_*.so"))) == 4


@pytest.mark.slow
def test_ops_register_when_their_kernel_module_is_imported_not_before() -> None:
    """``import quantdispatch`` registers nothing (and loads no torch); importing a kernel module
    registers its ops."""
    probe = ("import sys, json; import quantdispatch; before = 'torch' in sys.modules; import torch; "
             "has = lambda: [hasattr(torch.ops.quantdispatch, n) for n in ('q4_matmul', 'gguf_matvec', 'gguf_linear')]; "
             "first = has(); import quantdispatch.kernels.int4_native, quantdispatch.kernels.gguf.matvec; "
             "print(json.dumps([before, first, has()]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, [False, False, False], [True, True, True]]


def test_the_modules_hold_the_op_handles() -> None:
    """Each op is reachable as ``torch.ops.quantdispatch.<name>`` and is the handle the kernels call."""
    for op, name in ((Q4_MATMUL, "q4_matmul"), (GGUF_MATVEC, "gguf_matvec"), (GGUF_DEQUANT_BLOCKS, "gguf_dequant_blocks"),
                     (GGUF_DEQUANTIZE, "gguf_dequantize"), (GGUF_LINEAR, "gguf_linear")):
        assert getattr(torch.ops.quantdispatch, name).default is op
        assert op.name() == f"quantdispatch::{name}"


# ---- opcheck ----------------------------------------------------------------------------------


def _q4_args(m: int, n: int, k: int, group: int, dtype: torch.dtype, seed: int) -> tuple[object, ...]:
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
    scale = torch.rand(n, k // group, generator=g) * 0.02
    offset = -8 * scale + torch.randn(n, k // group, generator=g) * 0.001
    return (_x(m, k, dtype, seed), packed, scale, offset, group)


@needs_int4
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("m", "n", "k", "group"), [(1, 16, 64, 32), (3, 48, 128, 64), (5, 24, 256, 256), (12, 40, 128, 32)])
def test_opcheck_q4_matmul(m: int, n: int, k: int, group: int, dtype: torch.dtype) -> None:
    """Decode (up to 8 rows: the fused loop) and prefill (12 rows: dequantized blocks + GEMM)."""
    args = _q4_args(m, n, k, group, dtype, seed=m * k)
    torch.library.opcheck(Q4_MATMUL, args)
    x, packed, scale, offset, _ = args
    assert isinstance(x, torch.Tensor) and isinstance(packed, torch.Tensor)
    assert isinstance(scale, torch.Tensor) and isinstance(offset, torch.Tensor)
    # The documented layout: per 64 columns, 16 little-endian words; word i holds column 16 j + i in nibble j.
    words = packed.reshape(n, k // 64, 16, 2)
    codes = torch.stack([words[..., 0] & 15, words[..., 0] >> 4, words[..., 1] & 15, words[..., 1] >> 4], dim=2).reshape(n, k)
    weight = codes.float() * scale.repeat_interleave(group, dim=1) + offset.repeat_interleave(group, dim=1)
    if dtype is torch.bfloat16 and m > FUSED_ROWS and native_bf16():
        # bf16 prefill on a CPU with native bf16: each weight rounded once to bf16, a bf16 GEMM (float32 sums, bf16 output)
        expected = x.double() @ weight.to(torch.bfloat16).double().T
        torch.testing.assert_close(Q4_MATMUL(*args).double(), expected, rtol=2**-7, atol=1e-3)
        return
    expected = x.double() @ weight.double().T
    torch.testing.assert_close(Q4_MATMUL(*args).double(), expected, rtol=0, atol=1e-4)


@needs_int4
def test_q4_matmul_refuses_what_it_would_read_out_of_bounds() -> None:
    """Shapes that disagree are a ValueError from the op, never a read past a buffer."""
    x, packed, scale, offset, group = _q4_args(2, 16, 64, 32, torch.float32, seed=1)
    assert isinstance(packed, torch.Tensor) and isinstance(scale, torch.Tensor)
    with pytest.raises(ValueError, match="q4_matmul needs"):
        Q4_MATMUL(x, packed[:, :-1], scale, offset, group)
    with pytest.raises(ValueError, match="q4_matmul needs"):
        Q4_MATMUL(x, packed, scale[:, :1], offset, group)
    with pytest.raises(ValueError, match="q4_matmul needs"):
        Q4_MATMUL(x, packed, scale, offset, 48)


@needs_matvec
@pytest.mark.parametrize("activations", ["float32", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t", sorted(FUSED_MATVEC_TYPES), ids=lambda t: t.name)
def test_opcheck_gguf_matvec(t: GgmlType, dtype: torch.dtype, activations: str) -> None:
    """Each fused type, one and several input rows, both arithmetics."""
    per_block = BLOCK[t][0]
    for m, n, k in ((1, 8, per_block), (3, 5, 2 * per_block)):
        blocks = _blocks(t, n, k, seed=m + n)
        x = _x(m, k, dtype, seed=k)
        torch.library.opcheck(GGUF_MATVEC, (x, blocks, int(t), n, activations))
        y = GGUF_MATVEC(x, blocks, int(t), n, activations)
        assert y.dtype == torch.float32 and y.shape == (m, n)
        w = dequantize(blocks.reshape(-1), t, (n, k))
        if activations == "float32":
            torch.testing.assert_close(y.double(), x.double() @ w.double().T, rtol=1e-5, atol=1e-5)


@needs_dequant
@pytest.mark.parametrize("t", sorted(NATIVE_DEQUANT_TYPES), ids=lambda t: t.name)
def test_opcheck_gguf_dequant_blocks(t: GgmlType) -> None:
    """The C dequantization writes its output argument (declared mutated) with the eager kernels' bits."""
    per_block = BLOCK[t][0]
    for count in (1, 5):
        blocks = _blocks(t, count, per_block, seed=count).reshape(count, -1)
        out = torch.empty(count, per_block)
        torch.library.opcheck(GGUF_DEQUANT_BLOCKS, (blocks, int(t), out))
        GGUF_DEQUANT_BLOCKS(blocks, int(t), out)
        assert torch.equal(out, dequantize(blocks.reshape(-1), t, (count, per_block), path="eager"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("t", [GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.IQ4_XS], ids=lambda t: t.name)
def test_opcheck_gguf_dequantize(t: GgmlType, dtype: torch.dtype) -> None:
    """Whole-tensor dequantization as one op (native where built, else eager: the op is always there)."""
    per_block = BLOCK[t][0]
    for rows, cols in ((1, per_block), (3, 2 * per_block)):
        raw = _blocks(t, rows, cols, seed=rows)
        torch.library.opcheck(GGUF_DEQUANTIZE, (raw, int(t), [rows, cols], dtype))
        assert torch.equal(GGUF_DEQUANTIZE(raw, int(t), [rows, cols], dtype), dequantize(raw.reshape(-1), t, (rows, cols), dtype))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("t", [GgmlType.Q4_0, GgmlType.Q6_K], ids=lambda t: t.name)
def test_opcheck_gguf_linear(t: GgmlType, dtype: torch.dtype, bias: bool) -> None:
    """A kept-packed layer's forward as one op: ``F.linear`` of the dequantized weight."""
    per_block = BLOCK[t][0]
    n, k = 6, per_block
    raw = _blocks(t, n, k, seed=3)
    b = torch.randn(n).to(dtype) if bias else None
    for shape in ((1, k), (2, 3, k)):
        x = torch.randn(*shape).to(dtype)
        torch.library.opcheck(GGUF_LINEAR, (x, raw, b, int(t), n, k))
        expected = torch.nn.functional.linear(x, dequantize(raw.reshape(-1), t, (n, k), dtype), b)
        assert torch.equal(GGUF_LINEAR(x, raw, b, int(t), n, k), expected)


def test_without_native_kernels_the_ops_run_the_portable_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where nothing could be built, the packed-GGUF ops compute the same bits on the eager kernels,
    and a native-only op says its kernel is missing (callers check ``native_int4()`` first)."""
    import quantdispatch.kernels.gguf.dequant as dequant_module
    import quantdispatch.kernels.int4_native as int4_native

    raw = _blocks(GgmlType.Q4_K, 4, 256, seed=0)
    x = torch.randn(2, 256)
    expected = (GGUF_DEQUANTIZE(raw, int(GgmlType.Q4_K), [4, 256], torch.float32), GGUF_LINEAR(x, raw, None, int(GgmlType.Q4_K), 4, 256))
    monkeypatch.setattr(dequant_module, "native_kernels", lambda: None)
    monkeypatch.setattr(int4_native, "native_int4", lambda: None)
    assert dequant_module.kernel_for(GgmlType.Q4_K)[1] is False
    assert torch.equal(GGUF_DEQUANTIZE(raw, int(GgmlType.Q4_K), [4, 256], torch.float32), expected[0])
    assert torch.equal(GGUF_LINEAR(x, raw, None, int(GgmlType.Q4_K), 4, 256), expected[1])
    with pytest.raises(RuntimeError, match="not available"):
        Q4_MATMUL(*_q4_args(1, 16, 64, 32, torch.float32, seed=0))
