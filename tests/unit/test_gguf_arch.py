"""The pure GGUF → Transformers tables (quantdispatch.gguf.arch): no torch, no files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantdispatch.gguf.arch import (
    ARCHITECTURES,
    block_count_issues,
    fused_parts,
    hf_config,
    hf_tensor_name,
    metadata_issues,
    model_type,
    unpermute_rows,
)
from quantdispatch.gguf.header import GgufValue
from tests.conftest import REALWORLD


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


# ----------------------------------------------------------------------------- numbers checked before a model is built
_TINY_LLAMA: dict[str, GgufValue] = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
                                     "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
                                     "llama.attention.head_count_kv": 2, "llama.context_length": 128, "llama.rope.freq_base": 1e4,
                                     "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.dimension_count": 16}


def _meta_found(meta: dict[str, GgufValue], n_vocab: int | None = 96, stored: int | None = None) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in metadata_issues(ARCHITECTURES["llama"], meta, n_vocab, stored)]


def test_sane_metadata_has_no_issue() -> None:
    """The metadata of a tiny llama passes, with the bytes its tensors would take."""
    assert _meta_found(_TINY_LLAMA, stored=200_000) == []


@pytest.mark.parametrize(("key", "value", "code"), [
    ("llama.attention.head_count", 0, "load.architecture.value"),
    ("llama.attention.head_count", True, "load.architecture.value"),  # hf_config skips it; Transformers' default would be built
    ("llama.attention.head_count", (4, 4), "load.architecture.value"),  # per-layer head counts: not a llama
    ("llama.attention.head_count_kv", 3, "load.architecture.relation"),
    ("llama.embedding_length", "64", "load.architecture.value"),
    ("llama.embedding_length", 2**40, "load.architecture.value"),
    ("llama.block_count", 100_000, "load.architecture.limit"),
    ("llama.rope.freq_base", float("nan"), "load.architecture.value"),
    ("llama.rope.freq_base", -1.0, "load.architecture.value"),
    ("llama.attention.layer_norm_rms_epsilon", float("inf"), "load.architecture.value"),
    ("llama.context_length", -1, "load.architecture.value"),
    ("llama.rope.dimension_count", 0, "load.architecture.value"),
    ("llama.feed_forward_length", (128, 0), "load.architecture.value"),
    ("llama.feed_forward_length", ((128,),), "load.architecture.value"),  # nested arrays
])
def test_each_bad_metadata_value_is_an_issue_at_its_key(key: str, value: GgufValue, code: str) -> None:
    """A wrongly typed, zero, negative, huge or non-finite number is an issue at ``$.metadata["<key>"]``."""
    found = _meta_found({**_TINY_LLAMA, key: value})
    assert found and found[0][0] == code and found[0][1].startswith(f'$.metadata["{key}"]'), found


@pytest.mark.parametrize(("scaling", "found"), [
    ({"llama.rope.scaling.type": "none"}, []),
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 1.0}, []),
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}, []),  # applied: rope_scaling
    ({"llama.rope.scaling.factor": 0.0}, []),  # llama.cpp: none
    ({"llama.rope.scale_linear": -2.0}, [("load.architecture.value", '$.metadata["llama.rope.scale_linear"]')]),
    ({"llama.rope.scaling.type": "warp"}, [("load.architecture.value", '$.metadata["llama.rope.scaling.type"]')]),
    ({"llama.rope.scaling.type": 3}, [("load.architecture.value", '$.metadata["llama.rope.scaling.type"]')]),
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float("nan")},
     [("load.architecture.value", '$.metadata["llama.rope.scaling.factor"]')]),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0},
     [("load.gguf.rope_scaling.unsupported", '$.metadata["llama.rope.scaling.type"]')]),
])
def test_rope_scaling_keys(scaling: dict[str, GgufValue], found: list[tuple[str, str]]) -> None:
    """A rope scaling type llama.cpp does not write, a bad factor, or scaling this version would
    silently not apply are issues."""
    assert _meta_found({**_TINY_LLAMA, **scaling}) == found


def test_linear_rope_scaling_becomes_transformers() -> None:
    """llama.cpp's linear scaling (its default type, the older ``rope.scale_linear`` key too) is Transformers' ``rope_scaling``."""
    applied: list[dict[str, GgufValue]] = [{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0},
                                           {"llama.rope.scale_linear": 4.0}]
    for meta in applied:
        assert hf_config(ARCHITECTURES["llama"], meta, 8)["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    ignored: list[dict[str, GgufValue]] = [{"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0},
                                           {"llama.rope.scaling.factor": 1.0}, {"llama.rope.scaling.factor": float("nan")},
                                           {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}]
    for meta in ignored:
        assert "rope_scaling" not in hf_config(ARCHITECTURES["llama"], meta, 8)


def test_vocab_and_pad_come_from_the_tokenizer_keys() -> None:
    """A padding id outside the vocabulary is an issue at the tokenizer key that gave it."""
    found = _meta_found({**_TINY_LLAMA, "tokenizer.ggml.padding_token_id": 96})
    assert found == [("load.architecture.relation", '$.metadata["tokenizer.ggml.padding_token_id"]')]


def test_metadata_size_against_tensor_bytes() -> None:
    """1,000 layers (under the cap) of a 4096-wide llama cannot fit in 860 KB of tensors."""
    meta = {**_TINY_LLAMA, "llama.block_count": 1000, "llama.embedding_length": 4096, "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8, "llama.feed_forward_length": 11008}
    assert _meta_found(meta, 32000, 860_000) == [("load.architecture.size", "$.tensors")]
    assert _meta_found(meta, 32000, None) == []


def test_block_count_against_the_tensors() -> None:
    """``block_count`` must name exactly the ``blk.N`` blocks that have tensors."""
    llama = ARCHITECTURES["llama"]
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_q.weight", "blk.1.ffn_up.weight"]
    assert block_count_issues(llama, {"llama.block_count": 2}, names) == ()
    (few,) = block_count_issues(llama, {"llama.block_count": 100_000}, names)
    assert (few.code, few.path) == ("load.architecture.layers", '$.metadata["llama.block_count"]') and "blk.2" in few.message
    (many,) = block_count_issues(llama, {"llama.block_count": 1}, names)
    assert "blk.1" in many.message
    assert block_count_issues(llama, {"llama.block_count": 2}, [*names, "blk.99999999999999999999.attn_q.weight"])
    assert block_count_issues(llama, {"llama.block_count": 0}, ["blk.0.attn_q.weight"])
    assert block_count_issues(llama, {"llama.block_count": "2"}, names) == ()  # metadata_issues reports the type


def test_real_gguf_files_pass() -> None:
    """The real llama files of the shared corpus pass every check with their own tensor bytes."""
    from quantdispatch.gguf.reader import read_gguf_header

    files = [REALWORLD / "gguf" / n for n in ("crabml__tinyllamas-stories-260k-f32.gguf", "ollama__llama-2-tiny-random.gguf")]
    if not all(p.is_file() for p in files):
        pytest.skip("the shared real-world corpus is not beside the repository")
    for path in files:
        header = read_gguf_header(path).unwrap()
        meta = dict(header.metadata)
        tokens = meta["tokenizer.ggml.tokens"]
        assert isinstance(tokens, tuple)
        stored = header.file_size - header.data_offset
        assert metadata_issues(ARCHITECTURES["llama"], meta, len(tokens), stored) == (), path.name
        assert block_count_issues(ARCHITECTURES["llama"], meta, [t.name for t in header.tensors]) == (), path.name


_VALUES: st.SearchStrategy[GgufValue] = st.recursive(st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                                                     lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)


@given(st.dictionaries(st.sampled_from([*_TINY_LLAMA, "llama.vocab_size", "llama.rope.scaling.type", "llama.rope.scaling.factor",
                                        "tokenizer.ggml.padding_token_id", "tokenizer.ggml.tokens"]), _VALUES, max_size=8),
       st.integers(0, 2**64), st.lists(st.text(alphabet="blk.0123456789_aqw", max_size=12), max_size=6))
def test_metadata_checks_are_total(meta: dict[str, GgufValue], stored: int, names: list[str]) -> None:
    """Any metadata and tensor names give issues, never an exception."""
    metadata_issues(ARCHITECTURES["llama"], meta, 96, stored)
    block_count_issues(ARCHITECTURES["llama"], meta, names)
    block_count_issues(ARCHITECTURES["llama"], {**meta, "llama.block_count": 3}, [*names, "blk.1.x", "blk.7.y"])
