"""quantdispatch.architecture against Transformers: its default configs pass our checks, the
parameter floor is below what its models hold, and numbers it cannot build are our issues."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from quantdispatch.architecture import architecture_issues, minimum_parameters

# Decoder model types of Transformers whose configs use the names we check (and some that do not).
MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi3", "phi",
               "deepseek_v2", "deepseek_v3", "olmo2", "olmoe", "granitemoe", "starcoder2", "falcon", "gpt_neox", "opt", "cohere", "gpt_oss",
               "qwen3_next", "jamba", "falcon_h1", "llama4_text", "minimax", "phimoe", "recurrent_gemma", "mamba", "lfm2", "gpt2", "bloom")
TINY: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            vocab_size=96, max_position_embeddings=128, moe_intermediate_size=32, num_experts=4, num_local_experts=4,
                            n_routed_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=64, pad_token_id=None)


def _config(model_type: str, **kw: Any) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type, **kw)
    except ValueError as e:  # a model type this Transformers does not have
        pytest.skip(str(e))


def _causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def test_transformers_default_configs_pass() -> None:
    """The default config (``to_dict``) of every model type ``AutoModelForCausalLM`` builds passes
    the checks (those Transformers itself refuses to construct are left out)."""
    from transformers import AutoConfig

    failed = {}
    for model_type in _causal_lm_types():
        try:
            raw = AutoConfig.for_model(model_type).to_dict()
        except Exception:  # Transformers refuses its own default (gemma4_assistant's validator)
            continue
        issues = architecture_issues(raw)
        if issues:
            failed[model_type] = issues[0]
    assert failed == {}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_parameter_floor_is_below_what_transformers_builds(model_type: str) -> None:
    """``minimum_parameters`` never exceeds the parameters of the model Transformers builds from
    the same numbers (built on the meta device), so honest files are never too small."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = _config(model_type, **TINY)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    held = sum(p.numel() for p in model.parameters())
    assert minimum_parameters(config.to_dict()) <= held


# (key, value, what building a llama in Transformers 5 does with it)
HOSTILE: tuple[tuple[str, object, str], ...] = (
    ("num_attention_heads", 0, "ZeroDivisionError"),
    ("num_key_value_heads", 0, "ZeroDivisionError"),
    ("hidden_size", 0, "ZeroDivisionError"),
    ("head_dim", 0, "ZeroDivisionError"),
    ("vocab_size", -1, "RuntimeError"),
    ("pad_token_id", 500, "AssertionError"),
    ("num_attention_heads", 3, "StrictDataclassClassValidationError"),  # a ValueError
    ("intermediate_size", 1.5, "StrictDataclassFieldValidationError"),
    ("num_hidden_layers", -2, "builds"),  # a model without layers: nonsense, silently
)


@pytest.mark.parametrize(("key", "value", "transformers"), HOSTILE)
def test_what_transformers_cannot_build_is_our_issue(key: str, value: object, transformers: str) -> None:
    """Numbers on which building a llama raises (or builds nonsense) are issues before anything
    is built; the table records what Transformers does instead."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    raw = {**TINY, key: value}
    assert architecture_issues({**raw, "model_type": "llama"}), (key, value)
    try:
        with init_empty_weights():
            AutoModelForCausalLM.from_config(LlamaConfig(**raw))
        outcome = "builds"
    except Exception as e:  # recording whatever Transformers raises is the point
        outcome = type(e).__name__
    assert outcome == transformers
