"""GGUF weights kept packed: the raw GGML blocks as a uint8 buffer, dequantized per call.

``GgufLinear`` and ``GgufEmbedding`` hold a weight exactly as the file stores it (a view of the
memory-mapped file where no row had to move), so a model's memory stays near the file's size.
Each forward dequantizes through ``dequantize`` (the fused C kernels where built, else torch);
an embedding dequantizes only the rows it looks up (rows are whole blocks). The forwards call
torch custom ops (``quantdispatch::gguf_linear``, ``quantdispatch::gguf_dequantize``), so
``torch.compile(fullgraph=True)`` over a layer of such modules sees one node per weight.

The seam for faster kernels is ``packed_linear``: it builds the module for one weight from
``PACKED_LINEARS`` (a table by GGML type, empty here, that a third party fills with
``register_packed_linear``), then from the table the backend prefers (``cpu-gguf-matvec`` passes
``matvec.matvec_linears()``: the types of ``quantdispatch.gguf.native.FUSED_MATVEC_TYPES`` on
fused C kernels); every other type keeps ``GgufLinear``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from quantdispatch.gguf.types import BLOCK, GgmlType

from .._native import custom_op
from .dequant import GGUF_DEQUANTIZE, OUTPUT_DTYPES, dequantize

__all__ = ["GgufLinear", "GgufEmbedding", "GgufExperts", "Piece", "PackedLinearFactory", "PACKED_LINEARS", "packed_linear", "register_packed_linear",
           "GGUF_LINEAR"]


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """A reused buffer of ``shape`` (one per thread and dtype, grown to the largest weight): writing
    a fresh tensor page-faults more than dequantizing into it costs. Valid until the next call."""
    n = shape[0] * shape[1]
    buffers: dict[torch.dtype, torch.Tensor] = getattr(_SCRATCH, "buffers", None) or {}
    _SCRATCH.buffers = buffers
    found = buffers.get(dtype)
    if found is None or found.numel() < n:
        found = buffers[dtype] = torch.empty(n, dtype=dtype)
    return found[:n].view(shape)


def _rows(raw: torch.Tensor, ggml_type: GgmlType, shape: tuple[int, ...]) -> torch.Tensor:
    per_block, size = BLOCK[ggml_type]
    return raw.reshape(shape[0], shape[-1] // per_block * size)


def _linear(x: torch.Tensor, qweight: torch.Tensor, bias: torch.Tensor | None, ggml_type: int, out_features: int,
            in_features: int) -> torch.Tensor:
    """``quantdispatch::gguf_linear``: ``F.linear(x, W, bias)`` with ``W`` dequantized from
    ``qweight`` into the reused scratch buffer (CPU, ``x`` in one of ``OUTPUT_DTYPES``)."""
    if x.dtype not in OUTPUT_DTYPES:
        raise ValueError(f"gguf_linear takes activations in {OUTPUT_DTYPES}, got {x.dtype}")
    w = _scratch((out_features, in_features), x.dtype)
    dequantize(qweight.reshape(-1), GgmlType(ggml_type), w.shape, x.dtype, out=w)
    out: torch.Tensor = F.linear(x, w, bias)
    return out


def _linear_fake(x: torch.Tensor, qweight: torch.Tensor, bias: torch.Tensor | None, ggml_type: int, out_features: int,
                 in_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


GGUF_LINEAR: Final = custom_op("gguf_linear",
                               "(Tensor x, Tensor qweight, Tensor? bias, int ggml_type, int out_features, int in_features) -> Tensor",
                               _linear, _linear_fake)
"""``torch.ops.quantdispatch.gguf_linear(x, qweight, bias, ggml_type, out_features, in_features)``:
a kept-packed layer's forward on the CPU (dequantize per call, then ``F.linear``) as one op."""


class GgufLinear(nn.Module):
    """A linear layer whose weight stays in GGML blocks; dequantized at every forward.

    Args:
        raw: The weight's bytes, uint8, ``[out_features, row bytes]`` (or flat).
        ggml_type: Its block type.
        out_features: Rows of the weight.
        in_features: Its row length (whole blocks).
        bias: A dense bias, or ``None``.
    """

    qweight: torch.Tensor

    def __init__(self, raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ggml_type = ggml_type
        self.type_id = int(ggml_type)
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("qweight", _rows(raw, ggml_type, (out_features, in_features)))
        self.bias: torch.Tensor | None
        if bias is None:
            self.bias = None
        else:
            self.register_buffer("bias", bias)

    def file_blocks(self) -> torch.Tensor:
        """The weight's blocks in the file's layout (``qweight`` itself here; a subclass that
        keeps another layout returns a new tensor)."""
        return self.qweight

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight ``[out_features, in_features]``, a new tensor."""
        out_dtype = dtype if dtype in OUTPUT_DTYPES else torch.float32
        w: torch.Tensor = GGUF_DEQUANTIZE(self.file_blocks(), self.type_id, (self.out_features, self.in_features), out_dtype)
        return w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if x.dtype not in OUTPUT_DTYPES or x.device.type != "cpu" or torch.is_grad_enabled() and x.requires_grad:
            return F.linear(x, self.dequantize(x.dtype), bias)
        out: torch.Tensor = GGUF_LINEAR(x, self.file_blocks(), bias, self.type_id, self.out_features, self.in_features)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, type={self.ggml_type.name}"


class GgufEmbedding(nn.Module):
    """An embedding table kept in GGML blocks; a lookup dequantizes only the rows it reads.

    Args:
        raw: The table's bytes, uint8.
        ggml_type: Its block type.
        num_embeddings: Rows (the vocabulary).
        embedding_dim: The row length (whole blocks).
        dtype: The dtype rows are returned in.
    """

    qweight: torch.Tensor

    def __init__(self, raw: torch.Tensor, ggml_type: GgmlType, num_embeddings: int, embedding_dim: int,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.ggml_type = ggml_type
        self.type_id = int(ggml_type)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.dtype = dtype
        self.register_buffer("qweight", _rows(raw, ggml_type, (num_embeddings, embedding_dim)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        picked = self.qweight.index_select(0, flat.to(self.qweight.device))
        out_dtype = self.dtype if self.dtype in OUTPUT_DTYPES else torch.float32
        rows: torch.Tensor = GGUF_DEQUANTIZE(picked, self.type_id, (flat.numel(), self.embedding_dim), out_dtype)
        return rows.to(self.dtype).reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, type={self.ggml_type.name}"


Piece = tuple[torch.Tensor, GgmlType, tuple[int, ...]]
"""One stacked GGUF tensor: its bytes, type and PyTorch shape ``[experts, rows, row length]``."""


class GgufExperts(nn.Module):
    """Transformers' stacked experts (``gate_up_proj``, ``down_proj``) kept packed; each forward
    dequantizes only the experts the router picked, one at a time.

    The forward is Transformers' (Qwen2-MoE / Mixtral ``*Experts``): for each expert hit, its
    tokens go through ``act(gate) * up`` then ``down``, weighted by the router.

    Args:
        gate_up: The parts stacked along the rows into ``gate_up_proj`` (llama.cpp's
            ``ffn_gate_exps``, ``ffn_up_exps``).
        down: ``ffn_down_exps``.
        act_fn: The activation of the module replaced.
    """

    down: torch.Tensor

    def __init__(self, gate_up: list[Piece], down: Piece, act_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.num_experts = down[2][0]
        self.act_fn = act_fn
        self._gate_up = [(t, s[1:]) for _, t, s in gate_up]
        self._down = (down[1], down[2][1:])
        for i, (raw, _, shape) in enumerate(gate_up):
            self.register_buffer(f"gate_up_{i}", raw.reshape(shape[0], -1))
        self.register_buffer("down", down[0].reshape(down[2][0], -1))

    def logical_parameters(self) -> int:
        """The dense weights these experts stand for (``gate_up_proj`` and ``down_proj``)."""
        shapes = [s for _, s in self._gate_up] + [self._down[1]]
        return self.num_experts * sum(s[0] * s[1] for s in shapes)

    def _expert(self, e: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        out_dtype = dtype if dtype in OUTPUT_DTYPES else torch.float32
        stacks: list[torch.Tensor] = [getattr(self, f"gate_up_{i}") for i in range(len(self._gate_up))]
        gate_up = [dequantize(stack[e], t, s, out_dtype) for stack, (t, s) in zip(stacks, self._gate_up, strict=True)]
        down = dequantize(self.down[e], self._down[0], self._down[1], out_dtype)
        return torch.cat(gate_up, dim=0).to(dtype), down.to(dtype)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for row in hit:
            e = int(row[0])
            if e == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[e])
            state = hidden_states[token_idx]
            gate_up, down = self._expert(e, hidden_states.dtype)
            gate, up = F.linear(state, gate_up).chunk(2, dim=-1)
            out = F.linear(self.act_fn(gate) * up, down) * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final


PackedLinearFactory = Callable[[torch.Tensor, GgmlType, int, int, "torch.Tensor | None"], nn.Module]
"""Builds the module of one packed weight: (raw bytes, type, out_features, in_features, bias)."""

PACKED_LINEARS: dict[GgmlType, PackedLinearFactory] = {}
"""Modules a third party registered by GGML type; they win over the backend's own. Empty by default."""


def register_packed_linear(ggml_type: GgmlType, factory: PackedLinearFactory) -> None:
    """Use ``factory`` for kept-packed weights of ``ggml_type`` (the int4 path registers here).

    Raises:
        ValueError: the type has a factory already.
    """
    if ggml_type in PACKED_LINEARS:
        raise ValueError(f"a packed linear module for {ggml_type.name} is registered already")
    PACKED_LINEARS[ggml_type] = factory


def packed_linear(raw: torch.Tensor, ggml_type: GgmlType, out_features: int, in_features: int,
                  bias: torch.Tensor | None = None, preferred: Mapping[GgmlType, PackedLinearFactory] | None = None) -> nn.Module:
    """The module that runs one kept-packed weight: the one registered for its type, else the
    backend's ``preferred`` one (the fused matrix-vector kernels), else ``GgufLinear``."""
    factory = PACKED_LINEARS.get(ggml_type) or (preferred or {}).get(ggml_type, GgufLinear)
    return factory(raw, ggml_type, out_features, in_features, bias)
