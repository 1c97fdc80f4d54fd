"""The pure architecture checks (quantdispatch.architecture): values, relations, caps, size."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantdispatch.architecture import (
    MAX_EXPERTS,
    MAX_LAYERS,
    architecture_issues,
    check_architecture,
    minimum_parameters,
    size_issues,
)

LLAMA: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 96, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "pad_token_id": None, "head_dim": None, "sliding_window": None, "rope_scaling": None,
}


def _found(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in architecture_issues(cfg)]


def test_a_sane_config_has_no_issue() -> None:
    """A llama config (nulls where Transformers allows them) passes."""
    assert architecture_issues(LLAMA) == ()


@pytest.mark.parametrize("key", ["num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size", "num_hidden_layers",
                                 "vocab_size", "intermediate_size", "max_position_embeddings", "sliding_window"])
@pytest.mark.parametrize("value", [0, -1, True, False, 32.0, "32", ["4"], {"n": 4}, 2**40, 10**400])
def test_each_bad_integer_is_a_value_issue_at_its_key(key: str, value: object) -> None:
    """Zero, negative, boolean, float-for-int, non-numeric and huge values are coded at ``$.<key>``."""
    found = _found({**LLAMA, key: value})
    assert found[0][1].startswith(f"$.{key}") and found[0][0] in ("load.architecture.value", "load.architecture.limit"), found


def test_per_layer_sizes() -> None:
    """Gemma 3n's per-layer ``intermediate_size`` is a list: each entry checked, the least one estimated."""
    assert _found({**LLAMA, "intermediate_size": [128, 64]}) == []
    assert _found({**LLAMA, "intermediate_size": [128, 0]}) == [("load.architecture.value", "$.intermediate_size[1]")]
    assert _found({**LLAMA, "intermediate_size": [128] * (MAX_LAYERS + 1)}) == [("load.architecture.limit", "$.intermediate_size")]
    assert minimum_parameters({**LLAMA, "intermediate_size": [128, 64]}) == minimum_parameters({**LLAMA, "intermediate_size": 64})


def test_multi_head_relations_only_for_standard_decoders() -> None:
    """Models that size their heads otherwise (GLM-4.5's default does not divide; GLM-5's head_dim
    is 0; MusicGen's pad id is its vocabulary size) are not held to plain attention's relations."""
    odd = {**LLAMA, "num_attention_heads": 3, "num_key_value_heads": 1, "pad_token_id": 96}
    assert [p for _, p in _found(odd)] == ["$.hidden_size", "$.pad_token_id"]
    assert _found({**LLAMA, "head_dim": 0}) == [("load.architecture.value", "$.head_dim")]
    assert _found({**odd, "model_type": "glm4_moe"}) == _found({**LLAMA, "head_dim": 0, "model_type": "glm5_next_text"}) == []


def test_null_is_an_issue_only_where_every_model_needs_the_number() -> None:
    """``hidden_size: null`` cannot be built; ``head_dim: null`` means "derive it"."""
    assert _found({**LLAMA, "hidden_size": None}) == [("load.architecture.value", "$.hidden_size")]
    assert _found({**LLAMA, "head_dim": None, "num_key_value_heads": None}) == []


def test_every_problem_at_once() -> None:
    """Three independent faults give three issues, not the first one."""
    found = _found({**LLAMA, "num_attention_heads": 0, "rms_norm_eps": -1.0, "vocab_size": "lots"})
    assert sorted(p for _, p in found) == ["$.num_attention_heads", "$.rms_norm_eps", "$.vocab_size"]


def test_caps_on_what_drives_python_objects() -> None:
    """Layers and experts above the caps are ``load.architecture.limit``, and so are their product's."""
    assert _found({**LLAMA, "num_hidden_layers": 100_000}) == [("load.architecture.limit", "$.num_hidden_layers")]
    assert _found({**LLAMA, "num_hidden_layers": MAX_LAYERS}) == []
    assert _found({**LLAMA, "num_experts": MAX_EXPERTS + 1, "num_experts_per_tok": 2}) == [("load.architecture.limit", "$.num_experts")]
    assert _found({**LLAMA, "num_hidden_layers": MAX_LAYERS, "num_experts": MAX_EXPERTS, "num_experts_per_tok": 2}) == [
        ("load.architecture.limit", "$.num_hidden_layers")]


def test_relations_transformers_relies_on() -> None:
    """Heads that do not split the hidden size (without head_dim), query heads that key/value heads do
    not divide, more experts per token than experts, a pad id outside the vocabulary."""
    assert _found({**LLAMA, "num_attention_heads": 3, "num_key_value_heads": 1}) == [("load.architecture.relation", "$.hidden_size")]
    assert _found({**LLAMA, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 16}) == []
    assert _found({**LLAMA, "num_key_value_heads": 3}) == [("load.architecture.relation", "$.num_key_value_heads")]
    assert _found({**LLAMA, "num_local_experts": 4, "num_experts_per_tok": 5}) == [("load.architecture.relation", "$.num_experts_per_tok")]
    assert _found({**LLAMA, "pad_token_id": 96}) == [("load.architecture.relation", "$.pad_token_id")]
    assert _found({**LLAMA, "pad_token_id": -1}) == []  # old llama configs; torch counts from the end
    assert _found({**LLAMA, "pad_token_id": True}) == [("load.architecture.value", "$.pad_token_id")]
    assert _found({**LLAMA, "sliding_window": 0}) == [("load.architecture.value", "$.sliding_window")]
    assert _found({**LLAMA, "sliding_window": 0, "use_sliding_window": False}) == []  # Qwen2-MoE's default


@pytest.mark.parametrize(("key", "value"), [("rope_theta", 0), ("rope_theta", -1e4), ("rope_theta", math.inf), ("rope_theta", math.nan),
                                            ("rope_theta", "1e4"), ("rms_norm_eps", 0.0), ("rms_norm_eps", math.nan),
                                            ("partial_rotary_factor", 0.0), ("partial_rotary_factor", 1.5),
                                            ("final_logit_softcapping", -30.0), ("rope_theta", 10**400)])
def test_bad_floats(key: str, value: object) -> None:
    """Rope base, norm epsilon, partial rotary factor and soft-capping must be finite and in range."""
    assert _found({**LLAMA, key: value}) == [("load.architecture.value", f"$.{key}")]


@pytest.mark.parametrize(("rope", "path"), [
    ({"rope_type": "linear", "factor": 0}, "$.rope_scaling.factor"),
    ({"type": "dynamic", "factor": math.nan}, "$.rope_scaling.factor"),
    ({"rope_type": "warp-drive", "factor": 2.0}, "$.rope_scaling.rope_type"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": -1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, "$.rope_scaling.low_freq_factor"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096.5}, "$.rope_scaling.original_max_position_embeddings"),
    ({"rope_type": "longrope", "short_factor": [1.0, -2.0], "long_factor": [1.0, 1.0]}, "$.rope_scaling.short_factor[1]"),
    ("fast", "$.rope_scaling"),
])
def test_rope_scaling(rope: object, path: str) -> None:
    """Scaling factors finite and > 0, a rope type Transformers knows, an integer original context."""
    assert _found({**LLAMA, "rope_scaling": rope}) == [("load.architecture.value", path)]


def test_rope_parameters_per_layer_type() -> None:
    """Transformers 5's ``rope_parameters``, nested by layer type, are checked in each."""
    good = {"full_attention": {"rope_type": "default", "rope_theta": 1e6}, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    assert _found({**LLAMA, "rope_parameters": good}) == []
    bad = {**good, "sliding_attention": {"rope_type": "default", "rope_theta": 0}}
    assert _found({**LLAMA, "rope_parameters": bad}) == [("load.architecture.value", "$.rope_parameters.sliding_attention.rope_theta")]


def test_nested_text_config() -> None:
    """A multimodal config's ``text_config`` is checked too, and sizes its estimate."""
    cfg = {"model_type": "gemma3", "text_config": {**LLAMA, "num_attention_heads": 0}}
    assert _found(cfg) == [("load.architecture.value", "$.text_config.num_attention_heads")]
    assert minimum_parameters({"text_config": LLAMA}) == minimum_parameters(LLAMA) > 0


def test_size_estimate_and_refusal() -> None:
    """An honest tiny model fits its own size; 1,000 layers of a 4096-wide model do not fit 860 KB."""
    params = minimum_parameters(LLAMA)
    dense = 96 * 64 + 2 * 64 * 128 + 2 * 64 * 128 + 2 * 64 * 4 * 16 + 2 * 64 * 2 * 16 + 2 * 3 * 64 * 128  # what LlamaForCausalLM holds
    assert 0 < params <= dense
    assert size_issues(LLAMA, math.ceil(params * 1.5 / 8)) == ()
    big = {**LLAMA, "hidden_size": 4096, "num_hidden_layers": 1000, "intermediate_size": 11008, "num_attention_heads": 32}
    (issue,) = size_issues(big, 860_000)
    assert (issue.code, issue.path) == ("load.architecture.size", "$")
    assert check_architecture(big, None) == ()  # no size known: only the numbers


def test_moe_estimate_takes_the_fewer_of_dense_and_experts() -> None:
    """A MoE layer counts its experts' matrices unless a dense MLP would be fewer."""
    moe = {**LLAMA, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 8}
    assert minimum_parameters(moe) == minimum_parameters({**LLAMA, "intermediate_size": 8 * 8})
    assert minimum_parameters({**moe, "moe_intermediate_size": 1024}) == minimum_parameters(LLAMA)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
_KEYS = st.sampled_from([*LLAMA, "num_experts", "n_routed_experts", "num_experts_per_tok", "rope_parameters", "text_config",
                         "partial_rotary_factor", "moe_intermediate_size"])


@given(st.dictionaries(_KEYS, _JSON, max_size=8), st.integers(0, 2**64))
def test_total_on_any_json(cfg: dict[str, Any], stored: int) -> None:
    """Any JSON under the checked keys gives issues, never an exception."""
    check_architecture(cfg, stored)
    minimum_parameters(cfg)


def test_real_configs_pass() -> None:
    """No real config of the shared corpus (quantization blocks, some with a ``text_config``) has an issue."""
    import json

    from tests.conftest import REALWORLD

    files = sorted((REALWORLD / "configs").rglob("*.json"))
    if not files:
        pytest.skip("the shared real-world corpus is not beside the repository")
    for path in files:
        if "invalid" in path.parts:
            continue
        doc = json.loads(path.read_text())
        assert not isinstance(doc, dict) or architecture_issues(doc) == (), path.name
