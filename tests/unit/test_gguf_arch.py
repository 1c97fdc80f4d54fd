"""The pure GGUF → Transformers tables (quantdispatch.gguf.arch): no torch, no files."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quantdispatch.gguf.arch import ARCHITECTURES, fused_parts, hf_config, hf_tensor_name, model_type, unpermute_rows
from quantdispatch.gguf.header import GgufValue


def _llama_cpp_permute(rows: list[int], n_head: int) -> list[int]:
    """llama.cpp's ``LlamaModel.permute`` on a list of rows: ``reshape(n_head, 2, d // 2).swapaxes(1, 2)``."""
    d = len(rows) // n_head
    half = d // 2
    return [rows[h * d + k * half + j] for h in range(n_head) for j in range(half) for k in range(2)]


@given(st.integers(1, 8), st.integers(1, 16))
def test_unpermute_rows_inverts_llama_cpp_permute(n_head: int, half: int) -> None:
    """Taking rows ``unpermute_rows`` of a permuted weight gives back the original rows."""
    rows = list(range(n_head * 2 * half))
    permuted = _llama_cpp_permute(rows, n_head)
    assert [permuted[i] for i in unpermute_rows(len(rows), n_head)] == rows


def test_tensor_names() -> None:
    """Block, top-level and stacked-expert names; tensors with no place are None."""
    llama, moe = ARCHITECTURES["llama"], ARCHITECTURES["qwen2moe"]
    assert hf_tensor_name(llama, "token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name(llama, "output.weight") == "lm_head.weight"
    assert hf_tensor_name(llama, "blk.11.ffn_down.weight") == "model.layers.11.mlp.down_proj.weight"
    assert hf_tensor_name(ARCHITECTURES["qwen2"], "blk.0.attn_q.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert hf_tensor_name(ARCHITECTURES["gemma2"], "blk.0.post_ffw_norm.weight") == "model.layers.0.post_feedforward_layernorm.weight"
    assert hf_tensor_name(moe, "blk.0.ffn_up_exps.weight") == "model.layers.0.mlp.experts.gate_up_proj"
    assert fused_parts("model.layers.0.mlp.experts.gate_up_proj") == ("ffn_gate_exps", "ffn_up_exps")
    for odd in ("blk.0.nonsense.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight", "token_embd.scale", "weight"):
        assert hf_tensor_name(llama, odd) is None, odd


def test_config_from_metadata() -> None:
    """Architecture keys, the vocabulary from the token count, token ids; wrongly typed values are skipped."""
    meta: dict[str, GgufValue] = {"llama.block_count": 2, "llama.embedding_length": 64, "llama.rope.freq_base": 5e5,
                                  "llama.attention.head_count": True,
            "tokenizer.ggml.eos_token_id": 2, "general.name": "x"}
    cfg = hf_config(ARCHITECTURES["llama"], meta, 96)
    assert cfg == {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "rope_theta": 5e5, "vocab_size": 96,
                   "eos_token_id": 2}
    assert model_type(ARCHITECTURES["gemma3"], {}) == "gemma3_text"
    assert model_type(ARCHITECTURES["llama"], {"general.name": "Mistral 7B"}) == "llama"  # Transformers' exact rule
