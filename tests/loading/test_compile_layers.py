"""``torch.compile(fullgraph=True)`` over one decoder layer of a loaded quantized model: no graph breaks.

A tiny 4-bit GPTQ llama on each CPU backend, and a kept-packed GGUF llama on each packed backend,
loaded with ``qd.load``; ``model.model.layers[0]`` is compiled with ``fullgraph=True`` (any graph
break raises) by dynamo alone (a backend that runs the captured graph as is, like
``backend="eager"``: it proves the trace, fast), on a decode step (1 token: the fused kernels) and a
short prefill (12 tokens: their dequantize + GEMM path). The compiled layer's output must equal the
eager layer's bit for bit, and the captured graph must hold the kernel as one opaque op
(``torch.ops.quantdispatch.*``). One case also runs inductor.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernels.gguf.matvec import matvec_kernels
from quantdispatch.kernels.int4_native import native_int4
from quantdispatch.kernels.int4_q8dot import native_q4q8
from tests.cpu import needs_avx2_fma, needs_vector_int4

from .ckpt import base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)

TOKENS = (1, 12)
"""A decode step (up to 8 rows take the fused kernels) and a prefill (more rows: dequantize + GEMM)."""

OPS = {
    "torch-packed": set(),
    "cpu-int4": {"aten::_weight_int4pack_mm_for_cpu"},
    "cpu-q4": {"quantdispatch::q4_matmul"},
    "cpu-q4-q8dot": {"quantdispatch::q4q8_matmul"},
    "torch-gguf-packed": {"quantdispatch::gguf_linear"},
    "cpu-gguf-matvec": {"quantdispatch::gguf_matvec", "quantdispatch::gguf_linear"},
    "cpu-gguf-q8dot": {"quantdispatch::gguf_matvec", "quantdispatch::gguf_linear"},
}
"""The kernel ops each backend's layer must show in the decode step's graph."""

no_q4 = pytest.mark.skipif(native_int4() is None, reason="the native int4 kernel cannot be built here")
no_q4q8 = pytest.mark.skipif(native_q4q8() is None, reason="the native int8-activation int4 kernel cannot be built here")
no_matvec = pytest.mark.skipif(matvec_kernels() is None, reason="the fused GGUF kernels cannot be built here")

GPTQ_BACKENDS = [
    pytest.param("torch-packed"),
    pytest.param("cpu-int4", marks=needs_vector_int4),
    pytest.param("cpu-q4", marks=[needs_avx2_fma, no_q4]),
    pytest.param("cpu-q4-q8dot", marks=[needs_avx2_fma, no_q4q8]),
]
GGUF_BACKENDS = [
    pytest.param("torch-gguf-packed"),
    pytest.param("cpu-gguf-matvec", marks=[needs_avx2_fma, no_matvec]),
    pytest.param("cpu-gguf-q8dot", marks=[needs_avx2_fma, no_matvec]),
]


@pytest.fixture(scope="module")
def gptq_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama, every decoder projection 4-bit GPTQ (group 32)."""
    path = tmp_path_factory.mktemp("gptq")
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(path, base_model(), config, gptq_quantizer(config))
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama as a GGUF file mixing the fused types (Q4_0, Q4_1, Q4_K, Q6_K, Q8_0) with one
    the fused path does not take (Q5_0: that layer stays ``GgufLinear``)."""
    pytest.importorskip("gguf")
    from tests.gguf_models import T, tiny_model, write_gguf

    types = {"blk.0.attn_q.weight": T.Q4_K, "blk.0.attn_k.weight": T.Q5_0, "blk.0.attn_v.weight": T.Q6_K,
             "blk.0.ffn_up.weight": T.Q4_1, "blk.0.ffn_down.weight": T.Q8_0}
    model = tiny_model("llama", hidden=256, intermediate=512, layers=1, vocab=96)
    return write_gguf(model, "llama", tmp_path_factory.mktemp("gguf") / "m.gguf", T.Q4_0, types=types)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Each test compiles afresh (the decoder layer's code object is shared by every model)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _inputs(model: Any, tokens: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Hidden states and what the llama decoder layer's forward needs with them: the rotary
    position embeddings (cos, sin) and the position ids."""
    hidden = torch.randn(1, tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(tokens))
    positions = torch.arange(tokens)[None]
    return hidden, {"position_embeddings": model.model.rotary_emb(hidden, positions), "position_ids": positions}


def _capture(graphs: list[torch.fx.GraphModule]) -> Callable[[torch.fx.GraphModule, list[torch.Tensor]], Callable[..., Any]]:
    """A dynamo backend that records the captured graph and runs it as is (``backend="eager"``)."""
    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        forward: Callable[..., Any] = gm.forward
        return forward
    return backend


def _ops(graph: torch.fx.GraphModule) -> set[str]:
    """The operators the graph calls (``namespace::name``; dynamo records aten ops called as
    ``torch.ops.aten.x`` by their packet, ours by the overload the modules hold)."""
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    return {f"{t.namespace}::{t._opname}" if isinstance(t, torch._ops.OpOverload) else t._qualified_op_name
            for t in targets if isinstance(t, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))}


def _compiles_without_graph_breaks(model: Any, backend: str) -> None:
    layer = model.model.layers[0]
    for tokens in TOKENS:
        hidden, kwargs = _inputs(model, tokens)
        graphs: list[torch.fx.GraphModule] = []
        compiled: Callable[..., torch.Tensor] = torch.compile(layer, fullgraph=True, backend=_capture(graphs))
        with torch.no_grad():
            eager = layer(hidden, **kwargs)
            out = compiled(hidden, **kwargs)
        assert len(graphs) == 1
        assert torch.equal(out, eager)
        if tokens == 1:
            assert OPS[backend] <= _ops(graphs[0]), _ops(graphs[0])


@pytest.mark.parametrize("backend", GPTQ_BACKENDS)
def test_a_gptq_decoder_layer_compiles_whole(gptq_checkpoint: Path, backend: str) -> None:
    """4-bit GPTQ on each CPU backend: one graph, the eager layer's output."""
    model: Any = qd.load(gptq_checkpoint, device="cpu", dtype="float32", backend=backend).unwrap().model
    _compiles_without_graph_breaks(model, backend)


@pytest.mark.parametrize("backend", GGUF_BACKENDS)
def test_a_kept_packed_gguf_decoder_layer_compiles_whole(gguf_file: Path, backend: str) -> None:
    """A kept-packed GGUF model on each packed backend: one graph, the eager layer's output."""
    model: Any = qd.load(gguf_file, device="cpu", dtype="float32", backend=backend).unwrap().model
    kinds = {type(m).__name__ for m in model.model.layers[0].modules()}
    assert ("GgufMatvecLinear" in kinds) == (backend != "torch-gguf-packed") and "GgufLinear" in kinds
    _compiles_without_graph_breaks(model, backend)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@needs_avx2_fma
@no_q4
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_inductor_compiles_a_layer_around_the_native_op(gptq_checkpoint: Path) -> None:
    """Inductor (~30 s cold here) generates code around ``quantdispatch::q4_matmul``: the decode
    step's output is the eager layer's up to float32 rounding of the fused elementwise code."""
    model: Any = qd.load(gptq_checkpoint, device="cpu", dtype="float32", backend="cpu-q4").unwrap().model
    layer = model.model.layers[0]
    hidden, kwargs = _inputs(model, 1)
    compiled: Callable[..., torch.Tensor] = torch.compile(layer, fullgraph=True, backend="inductor")
    with torch.no_grad():
        eager = layer(hidden, **kwargs)
        torch.testing.assert_close(compiled(hidden, **kwargs), eager, rtol=1e-5, atol=1e-5)


def test_the_portable_gptq_layer_decides_its_groups_once_and_sees_a_changed_g_idx(gptq_checkpoint: Path) -> None:
    """``torch-packed`` decides at load whether each layer's ``g_idx`` is ``k // group_size`` (what
    lets the compiled forward skip reading it); a ``g_idx`` changed afterwards is seen at the next
    eager call, and the layer still computes ``F.linear`` with its dequantized weight."""
    from quantdispatch.kernels.modules import GptqLinear

    model: Any = qd.load(gptq_checkpoint, device="cpu", dtype="float32", backend="torch-packed").unwrap().model
    layers = [m for m in model.modules() if isinstance(m, GptqLinear)]
    assert layers and all(m._trivial for m in layers)
    layer = layers[0]
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.g_idx.copy_(torch.flip(layer.g_idx, [0]))  # act-order-like: groups are no longer runs of rows
        got = layer(x)
    assert not layer._trivial
    want = torch.nn.functional.linear(x, layer.dequantize(torch.float32), layer.bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
