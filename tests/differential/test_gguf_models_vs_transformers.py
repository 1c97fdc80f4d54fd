"""GGUF models loaded by ``qd.load`` against Transformers' ``from_pretrained(..., gguf_file=...)``.

Each test writes a tiny random model of one architecture with gguf-py's writer (names from
gguf-py's own tensor map, llama's q/k permuted and Gemma's norms stored as ``1 + w`` as llama.cpp's
converter does), then compares logits: with Transformers' load of the same file, in both of our
modes, and, for F32 files, with the model the file was written from. Divergences from Transformers
are a table below, each with its own test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import gguf
import torch

import quantdispatch as qd
from quantdispatch.environment import Cpu
from quantdispatch.kernels.gguf.matvec import matvec_kernels
from quantdispatch.result import Err
from tests.cpu import FEATURES
from tests.gguf_models import tiny_model, write_gguf

T = gguf.GGMLQuantizationType
IDS = torch.tensor([[1, 5, 9, 30, 60, 2, 17]])
ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")

DIVERGENCES = {
    "qwen2moe sizes": "Transformers' GGUF_CONFIG_MAPPING has no qwen2moe expert_feed_forward_length or "
                      "expert_shared_feed_forward_length: it keeps Qwen2MoeConfig's defaults (1408, 5632) and crashes on "
                      "other sizes; we read both",
    "mistral": "Transformers turns a llama file named exactly 'mistral' into model_type mistral, then asks gguf-py for a "
               "'mistral' tensor map, which does not exist: NotImplementedError; we build MistralForCausalLM",
    "qwen3 head_dim": "Transformers' GGUF_CONFIG_MAPPING has no qwen3 attention.key_length: it builds head_dim=128 whatever the "
                      "file says and crashes on the size mismatch; we read key_length",
}


def _theirs(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


BACKENDS = ("torch-gguf", "torch-gguf-packed", *(("cpu-gguf-matvec",) if matvec_kernels() is not None and FEATURES.avx2 and FEATURES.fma else ()))
"""Every GGUF backend that can run here: dequantized at load, kept packed, kept packed with the fused kernels."""


def _ours(path: Path, backend: str | None = None) -> Any:
    """Our load of ``path`` through ``backend``, or through the plan's choice (kept packed)."""
    found = qd.load(path, device="cpu", backend=backend)
    assert not isinstance(found, Err), [i.render() for i in found.error]
    assert found.value.plan.backend.name == (backend or _packed_here())
    return found.value.model


def _packed_here() -> str:
    """The kept-packed backend the plan picks on this CPU: the fused kernels' where it has AVX2 and FMA."""
    cpu = qd.probe().devices[0]
    fused = isinstance(cpu, Cpu) and cpu.features.avx2 and cpu.features.fma
    return "cpu-gguf-q8dot" if fused else "torch-gguf-packed"


def _float32_packed() -> str:
    """Kept packed on float32 arithmetic: the fused float32 kernels where they run (by name: the
    default, cpu-gguf-q8dot, quantizes activations to 8 bits)."""
    return "cpu-gguf-matvec" if _packed_here() == "cpu-gguf-q8dot" else "torch-gguf-packed"


def test_the_plan_keeps_weights_packed_by_default(tmp_path: Path) -> None:
    """Unasked, the plan keeps weights packed, on the fused kernels where they run; asked, it dequantizes."""
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "m.gguf", T.Q4_0)
    found = qd.load(path, device="cpu")
    assert not isinstance(found, Err) and found.value.plan.backend.name == _packed_here()
    fused = _packed_here() == "cpu-gguf-q8dot" and matvec_kernels() is not None
    model: Any = found.value.model
    assert type(model.model.layers[0].mlp.down_proj).__name__ == ("GgufMatvecLinear" if fused else "GgufLinear")
    dense = qd.load(path, device="cpu", dequantize_at_load=True)
    assert not isinstance(dense, Err) and dense.value.plan.backend.name == "torch-gguf"


def _close(ours: torch.Tensor, reference: torch.Tensor, backend: str) -> None:
    """Equal within float32 rounding. The fused kernels sum each dot product in another order than
    ``F.linear`` does, so their bound scales with the logits' size (1e-5 of the largest), not each element's."""
    if backend == "cpu-gguf-matvec":
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5 * max(1.0, float(reference.abs().max())))
    else:
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits
    return out


@pytest.mark.parametrize("qtype", [T.F32, T.Q8_0, T.Q4_0], ids=lambda t: t.name)
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_transformers_gguf_file(arch: str, qtype: Any, tmp_path: Path) -> None:
    """Both modes give Transformers' logits on the same file (and, in F32, the source model's)."""
    torch.set_num_threads(1)
    source = tiny_model(arch, tie=arch == "gemma2", head_dim=128 if arch == "qwen3" else None)
    path = write_gguf(source, arch, tmp_path / "m.gguf", qtype)
    reference = _logits(_theirs(path))
    for backend in BACKENDS:
        _close(_logits(_ours(path, backend)), reference, backend)
    if qtype == T.F32:
        torch.testing.assert_close(reference, _logits(source), rtol=1e-5, atol=1e-5)


def test_k_quant_mix_equals_transformers(tmp_path: Path) -> None:
    """A Q4_K_M-style mix (Q4_K, Q6_K for v and down projections, Q8_0 embedding) loads as Transformers loads it."""
    torch.set_num_threads(1)
    source = tiny_model("llama", hidden=256, intermediate=512, layers=1, vocab=64, heads=4, kv_heads=2)
    types = {"blk.0.attn_v.weight": T.Q6_K, "blk.0.ffn_down.weight": T.Q6_K, "token_embd.weight": T.Q8_0, "output.weight": T.Q6_K}
    path = write_gguf(source, "llama", tmp_path / "m.gguf", T.Q4_K, types=types)
    reference = _logits(_theirs(path))
    for backend in BACKENDS:
        _close(_logits(_ours(path, backend)), reference, backend)
    if "cpu-gguf-matvec" in BACKENDS:
        # llama.cpp's arithmetic (8-bit activations): not the float32 logits, but its added error
        # is far below what quantizing the weights did (measured: 0.06 against 0.58 of max |logit|)
        q8 = _logits(_ours(path, "cpu-gguf-q8dot"))
        scale = float(reference.abs().max())
        added, weights = float((q8 - reference).abs().max()) / scale, float((reference - _logits(source)).abs().max()) / scale
        assert 0 < added < weights / 4, (added, weights)


def test_mistral_named_llama_file_transformers_crashes_on(tmp_path: Path) -> None:
    """DIVERGENCES["mistral"]: a llama-architecture file named "mistral" (llama.cpp converts
    Mistral as llama) crashes Transformers; we build its MistralForCausalLM, with the source's logits."""
    torch.set_num_threads(1)
    source = tiny_model("llama")
    path = write_gguf(source, "llama", tmp_path / "m.gguf", T.F32, name="mistral")
    with pytest.raises(NotImplementedError, match="mistral"):
        _theirs(path)
    for backend in BACKENDS:
        ours = _ours(path, backend)
        assert type(ours).__name__ == "MistralForCausalLM"
        _close(_logits(ours), _logits(source), backend)


def test_qwen3_head_dim_transformers_cannot_read(tmp_path: Path) -> None:
    """DIVERGENCES["qwen3 head_dim"]: Transformers refuses the file; we load it, logits equal to the source model's."""
    torch.set_num_threads(1)
    source = tiny_model("qwen3", head_dim=16)
    path = write_gguf(source, "qwen3", tmp_path / "m.gguf", T.F32)
    with pytest.raises(RuntimeError, match="mismatch"):
        _theirs(path)
    _close(_logits(_ours(path, _float32_packed())), _logits(source), _float32_packed())


def test_tied_output_reads_the_embedding_blocks(tmp_path: Path) -> None:
    """No output.weight: kept packed, the output layer and the embedding share one buffer of blocks."""
    torch.set_num_threads(1)
    source = tiny_model("llama", tie=True)
    path = write_gguf(source, "llama", tmp_path / "m.gguf", T.Q8_0)
    found = qd.load(path, device="cpu", backend=_float32_packed())
    assert not isinstance(found, Err)
    model: Any = found.value.model
    assert model.lm_head.qweight.data_ptr() == model.model.embed_tokens.qweight.data_ptr()
    # the shared blocks count once, as the tied weight does in the source model
    assert found.value.stats.parameters == sum(p.numel() for p in source.parameters())
    _close(_logits(model), _logits(_theirs(path)), _float32_packed())


@pytest.mark.parametrize("qtype", [T.F32, T.Q8_0, T.Q4_0], ids=lambda t: t.name)
def test_qwen2moe_equals_transformers(qtype: Any, tmp_path: Path) -> None:
    """A mixture-of-experts model (stacked experts written apart as llama.cpp does, a shared expert
    and its gate) in both modes: kept packed, the experts stay packed too (GgufExperts)."""
    torch.set_num_threads(1)
    source = tiny_model("qwen2moe", layers=1)  # Transformers needs the default expert sizes (DIVERGENCES)
    path = write_gguf(source, "qwen2moe", tmp_path / "m.gguf", qtype)
    reference = _logits(_theirs(path))
    for backend in BACKENDS:
        found = qd.load(path, device="cpu", backend=backend)
        assert not isinstance(found, Err)
        # the architecture's parameter count in every mode, packed experts included
        assert found.value.stats.parameters == sum(p.numel() for p in source.parameters())
        model = _ours(path, backend)
        packed_experts = type(model.model.layers[0].mlp.experts).__name__ == "GgufExperts"
        assert packed_experts == (backend != "torch-gguf" and qtype != T.F32)  # F32 blocks are the dense weight
        _close(_logits(model), reference, backend)
    if qtype == T.F32:
        torch.testing.assert_close(reference, _logits(source), rtol=1e-5, atol=1e-5)


def test_qwen2moe_expert_sizes_transformers_cannot_read(tmp_path: Path) -> None:
    """DIVERGENCES["qwen2moe sizes"]: Transformers refuses the file; we load it with the source's logits."""
    torch.set_num_threads(1)
    source = tiny_model("qwen2moe", layers=1, moe={"moe_intermediate_size": 32, "shared_expert_intermediate_size": 64})
    path = write_gguf(source, "qwen2moe", tmp_path / "m.gguf", T.F32)
    with pytest.raises(RuntimeError, match="mismatch"):
        _theirs(path)
    for backend in BACKENDS:
        _close(_logits(_ours(path, backend)), _logits(source), backend)


@pytest.mark.parametrize("arch", ARCHS)
def test_config_keys_equal_transformers(arch: str, tmp_path: Path) -> None:
    """The config we build from the metadata equals, key for key, the one Transformers builds from
    the file (its GGUF reader's keys over the architecture's defaults)."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from quantdispatch.backends.gguf import transformers_config
    from quantdispatch.gguf.arch import ARCHITECTURES
    from quantdispatch.gguf.data import open_gguf_data

    source = tiny_model(arch, layers=1, tie=arch == "gemma2", head_dim=128 if arch == "qwen3" else None)
    path = write_gguf(source, arch, tmp_path / "m.gguf", T.F32)
    read = dict(load_gguf_checkpoint(str(path), return_tensors=False)["config"])
    theirs = AutoConfig.for_model(read.pop("model_type"), **read)
    with open_gguf_data(path).value as f:  # type: ignore[union-attr]
        tensors = {i.name: f.tensor(i.name).value for i in f.header.tensors}  # type: ignore[union-attr]
        ours = transformers_config(ARCHITECTURES[arch], dict(f.header.metadata), tensors)
        del tensors
    ours_built = AutoConfig.for_model(str(ours.pop("model_type")), **ours).to_dict()
    theirs_dict = theirs.to_dict()
    differing = {k: (v, theirs_dict.get(k)) for k, v in ours_built.items() if theirs_dict.get(k) != v and k != "_name_or_path"}
    known = {"head_dim"} if arch == "qwen3" else set()  # DIVERGENCES["qwen3 head_dim"]
    assert set(differing) <= known, differing


def test_real_f16_file_equals_transformers() -> None:
    """ollama's tiny random Llama-2 (a real F16/F32 GGUF v3 file with a 32000-token vocabulary)
    loads, kept packed (F16 stays half-size) and dequantized, with Transformers' logits."""
    from tests.conftest import REALWORLD

    path = REALWORLD / "gguf" / "ollama__llama-2-tiny-random.gguf"
    if not path.is_file():
        pytest.skip("the shared real-world corpus is not beside the repository")
    torch.set_num_threads(1)
    reference = _logits(_theirs(path))
    packed = _ours(path, "torch-gguf-packed")
    assert type(packed.model.layers[0].mlp.down_proj).__name__ == "GgufLinear"
    for model in (packed, _ours(path), _ours(path, "torch-gguf")):
        torch.testing.assert_close(_logits(model), reference, rtol=1e-5, atol=1e-5)
