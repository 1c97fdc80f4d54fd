"""A bf16 matrix-vector product for decode in C (AVX-512 or AVX2, OpenMP threads), and the
``nn.Linear`` that uses it: ``GemvLinear``.

Why: a quantized checkpoint usually keeps its output layer dense, and in a bf16 model that layer
is often the largest single read of a decode step (a Llama-3.2-1B-shaped model's tied 128256 x
2048 head is 525 MB, as much as all its 4-bit layers together). torch's bf16 ``F.linear`` on one
input row reads it at about half the machine's copy bandwidth on one thread (measured in
``benchmarks/bench_layer_kernels.py``); this kernel streams the weight once with two float32
multiply-adds per 32 bytes.

Numbers: every product is exact in float32 (a bf16 value widens exactly) and the sums are float32
in a fixed order (``dense_native.c`` draws it), the same at every SIMD level and thread count;
the result is rounded once to the output dtype, as torch's bf16 GEMM rounds its float32 sums
once. Only the summation order differs from ``F.linear``.

``GemvLinear`` is an ``nn.Linear`` subclass that holds the *same* parameters as the layer it
replaces (a tied output layer stays tied, no memory is added): up to ``GEMV_ROWS`` input rows of
bf16 on the CPU it calls ``quantdispatch::bf16_gemv``; anything else (prefill, another dtype or
device, a gradient) is ``F.linear``. ``use_gemv`` swaps the large bf16 ``nn.Linear`` layers of a
model loaded for the CPU (``loading.stream.finish`` calls it).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from ._native import Isa, custom_op, threads
from ._simd import level_library, simd_level

__all__ = ["GEMV_ROWS", "GEMV_MIN_WEIGHTS", "BF16_GEMV", "GemvLinear", "bf16_gemv", "native_dense", "native_dense_at", "use_gemv"]

GEMV_ROWS: Final = 8
"""Up to this many input rows a ``GemvLinear`` runs the kernel (decode); above it ``F.linear``'s
GEMM, which reuses each weight across rows."""

GEMV_MIN_WEIGHTS: Final = 1 << 22
"""``use_gemv`` swaps layers of at least this many weights (4M: a 2048 x 2048 projection): below
it a layer's read is short next to the call's fixed costs, and ``F.linear`` is as fast."""

_FUNCTIONS: Final = {"bf16_gemv": (3, 4)}


@functools.cache
def native_dense_at(level: Isa) -> ctypes.CDLL | None:
    """The kernel built for ``level`` (once per process, cached on disk), or ``None`` where it cannot be built."""
    lib = level_library(__package__ or "", "dense_native", _FUNCTIONS, level)
    if lib is not None:
        lib.bf16_gemv.restype = ctypes.c_int
    return lib


def native_dense() -> ctypes.CDLL | None:
    """The kernel for this process's SIMD level (``_simd.simd_level``), or ``None`` where it cannot run."""
    level = simd_level()
    return None if level is None else native_dense_at(level)


def _gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    lib = native_dense()
    if lib is None:
        raise RuntimeError("the native bf16 kernel is not available here; check native_dense() first")
    if (x.dim() != 2 or weight.dim() != 2 or x.dtype is not torch.bfloat16 or weight.dtype is not torch.bfloat16
            or x.shape[1] != weight.shape[1] or x.device.type != "cpu" or weight.device.type != "cpu"):
        raise ValueError(f"bf16_gemv needs bf16 CPU tensors x [M, K] and weight [N, K]; got x {x.dtype} {list(x.shape)} on "
                         f"{x.device}, weight {weight.dtype} {list(weight.shape)} on {weight.device}")
    x, weight = x.contiguous(), weight.contiguous()
    m, k = x.shape
    n = weight.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if m and n and lib.bf16_gemv(weight.data_ptr(), x.data_ptr(), y.data_ptr(), m, n, k, threads()) != 0:
        raise MemoryError("bf16_gemv could not allocate its activation buffer")
    if not (m and n) or k == 0:
        y.zero_()
    return y


def _gemv_fake(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.float32)


BF16_GEMV: Final = custom_op("bf16_gemv", "(Tensor x, Tensor weight) -> Tensor", _gemv, _gemv_fake)
"""``torch.ops.quantdispatch.bf16_gemv(x, weight)``: ``x @ weight.T`` in float32 for bf16 ``x`` ``[M, K]`` and ``weight`` ``[N, K]``."""


def bf16_gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` in float32 (exact products, fixed-order float32 sums) for bf16 ``x`` ``[M, K]``
    and ``weight`` ``[N, K]`` on the CPU. Needs ``native_dense()``.

    Raises:
        ValueError: the shapes, dtypes or devices do not fit.
    """
    out: torch.Tensor = BF16_GEMV(x, weight)
    return out


class GemvLinear(nn.Linear):
    """An ``nn.Linear`` whose decode-sized bf16 calls on the CPU run ``bf16_gemv``.

    Built from an existing layer, whose ``weight`` and ``bias`` parameters it holds (the same
    objects: ties and memory are unchanged). Its ``forward`` is ``F.linear`` except for up to
    ``GEMV_ROWS`` rows of bf16 input without a gradient, on the CPU, with a bf16 weight there.
    """

    def __init__(self, source: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features = source.in_features
        self.out_features = source.out_features
        self.weight = source.weight
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        rows = x.numel() // self.in_features if self.in_features else 0
        if (0 < rows <= GEMV_ROWS and x.dtype is torch.bfloat16 and w.dtype is torch.bfloat16 and x.device.type == "cpu"
                and w.device.type == "cpu" and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
                and native_dense() is not None):
            y = BF16_GEMV(x.reshape(rows, self.in_features), w)
            if self.bias is not None:
                y = y + self.bias.to(torch.float32)
            out: torch.Tensor = y.to(torch.bfloat16).reshape(*x.shape[:-1], self.out_features)
            return out
        return F.linear(x, w, self.bias)


def use_gemv(model: nn.Module, *, min_weights: int = GEMV_MIN_WEIGHTS) -> int:
    """Swap each plain ``nn.Linear`` (the class itself, not a subclass) of ``model`` with a 2-D bf16
    weight on the CPU of at least ``min_weights`` weights for a ``GemvLinear`` holding the same
    parameters; returns the number swapped. Nothing is swapped where the kernel cannot be built."""
    if native_dense() is None:
        return 0
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and m.weight.dtype is torch.bfloat16 and m.weight.device.type == "cpu"
             and m.weight.dim() == 2 and m.weight.numel() >= min_weights]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        setattr(parent, child, GemvLinear(old))
    return len(names)
