"""Kept-packed GGUF modules: the per-call forward against gguf-py's dequantization, and the seam
where a faster module (the CPU int4 path) takes a block type."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from quantdispatch.gguf.types import GgmlType
from quantdispatch.kernels.gguf.modules import PACKED_LINEARS, GgufEmbedding, GgufLinear, packed_linear, register_packed_linear

gguf = pytest.importorskip("gguf")


def _q4_0(w: NDArray[Any]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)).copy())


def test_linear_and_embedding_match_gguf_py() -> None:
    """GgufLinear is F.linear with gguf-py's dequantized weight; GgufEmbedding looks up its rows."""
    torch.set_num_threads(1)
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    raw = _q4_0(w)
    dense = torch.from_numpy(gguf.quants.dequantize(raw.numpy(), gguf.GGMLQuantizationType.Q4_0).reshape(8, 64).copy())
    x = torch.randn(3, 64)
    bias = torch.randn(8)
    torch.testing.assert_close(GgufLinear(raw, GgmlType.Q4_0, 8, 64, bias)(x), x @ dense.T + bias, rtol=1e-6, atol=1e-6)
    ids = torch.tensor([[5, 0], [7, 5]])
    assert torch.equal(GgufEmbedding(raw, GgmlType.Q4_0, 8, 64)(ids), dense[ids])


def test_registered_factory_takes_its_type() -> None:
    """A module registered for Q4_0 is built for Q4_0 weights; other types keep GgufLinear; twice is an error."""
    made: list[GgmlType] = []

    def factory(raw: torch.Tensor, t: GgmlType, out_features: int, in_features: int, bias: torch.Tensor | None) -> torch.nn.Module:
        made.append(t)
        return torch.nn.Identity()

    assert GgmlType.Q4_0 not in PACKED_LINEARS
    register_packed_linear(GgmlType.Q4_0, factory)
    try:
        raw = _q4_0(np.zeros((2, 32), np.float32))
        assert isinstance(packed_linear(raw, GgmlType.Q4_0, 2, 32), torch.nn.Identity)
        assert made == [GgmlType.Q4_0]
        with pytest.raises(ValueError, match="registered already"):
            register_packed_linear(GgmlType.Q4_0, factory)
        q8 = torch.from_numpy(np.asarray(gguf.quants.quantize(np.zeros((2, 32), np.float32), gguf.GGMLQuantizationType.Q8_0)).copy())
        assert isinstance(packed_linear(q8, GgmlType.Q8_0, 2, 32), GgufLinear)
    finally:
        del PACKED_LINEARS[GgmlType.Q4_0]
