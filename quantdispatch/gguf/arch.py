"""GGUF architectures as Transformers models: the metadata → ``config.json`` keys, the tensor
names, and what llama.cpp's converter did to the weights that a loader must undo.

Pure tables and functions (no torch, no I/O). Facts from llama.cpp's ``convert_hf_to_gguf.py``
and gguf-py's ``tensor_mapping.py`` (the names it writes), and Transformers'
``integrations/ggml.py`` (``GGUF_CONFIG_MAPPING``: the keys it reads back).

>>> spec = ARCHITECTURES["llama"]
>>> hf_tensor_name(spec, "blk.3.attn_q.weight")
'model.layers.3.self_attn.q_proj.weight'
>>> spec.permutes_qk, ARCHITECTURES["qwen2"].permutes_qk
(True, False)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..architecture import architecture_issues, check_architecture
from ..result import Issue, Issues
from ..text import quote
from ._cursor import short
from .header import GgufValue

__all__ = ["ArchSpec", "ARCHITECTURES", "hf_tensor_name", "hf_config", "fused_parts", "model_type", "unpermute_rows",
           "metadata_issues", "block_count_issues", "metadata_path",
           "GGUF_ROPE_SCALING", "rope_scaling"]

# metadata key (after "<arch>.") → config.json key; shared by the llama-like architectures
_COMMON: Final = (
    ("context_length", "max_position_embeddings"),
    ("block_count", "num_hidden_layers"),
    ("feed_forward_length", "intermediate_size"),
    ("embedding_length", "hidden_size"),
    ("rope.freq_base", "rope_theta"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ("vocab_size", "vocab_size"),
)
_HEAD_DIM: Final = (("attention.key_length", "head_dim"),)
_GEMMA: Final = (
    *_HEAD_DIM,
    ("attention.sliding_window", "sliding_window"),
    ("final_logit_softcapping", "final_logit_softcapping"),
    ("attn_logit_softcapping", "attn_logit_softcapping"),
)
_MOE: Final = (
    ("expert_count", "num_experts"),
    ("expert_used_count", "num_experts_per_tok"),
    ("expert_feed_forward_length", "moe_intermediate_size"),
    ("expert_shared_feed_forward_length", "shared_expert_intermediate_size"),
)

# GGUF block tensor (after "blk.N.") → Transformers module (after "model.layers.N.")
_LLAMA_BLOCK: Final[tuple[tuple[str, str], ...]] = (
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
)
_GEMMA_BLOCK: Final = (
    *(p for p in _LLAMA_BLOCK if p[0] != "ffn_norm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
)
_PHI3_BLOCK: Final = (
    ("attn_norm", "input_layernorm"),
    ("attn_qkv", "self_attn.qkv_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_up", "mlp.gate_up_proj"),  # llama.cpp keeps Phi-3's fused gate+up under ffn_up
    ("ffn_down", "mlp.down_proj"),
)
_MOE_BLOCK: Final = (
    *_LLAMA_BLOCK,
    ("ffn_gate_inp", "mlp.gate"),
    ("ffn_gate_exps", "mlp.experts.gate_up_proj"),  # stacked experts: a parameter, no ".weight"
    ("ffn_up_exps", "mlp.experts.gate_up_proj"),
    ("ffn_down_exps", "mlp.experts.down_proj"),
    ("ffn_gate_shexp", "mlp.shared_expert.gate_proj"),
    ("ffn_up_shexp", "mlp.shared_expert.up_proj"),
    ("ffn_down_shexp", "mlp.shared_expert.down_proj"),
    ("ffn_gate_inp_shexp", "mlp.shared_expert_gate"),
)
_EXPERTS: Final = {"mlp.experts.gate_up_proj": ("ffn_gate_exps", "ffn_up_exps"), "mlp.experts.down_proj": ("ffn_down_exps",)}
_TOP: Final = (("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head"))


@attrs.frozen(kw_only=True)
class ArchSpec:
    """How one GGUF architecture becomes a Transformers model.

    Attributes:
        arch: ``general.architecture`` (``llama``).
        model_type: Transformers' ``model_type`` (``llama``).
        config_keys: ``(metadata key after "<arch>.", config.json key)`` pairs.
        block: ``(GGUF name after "blk.N.", module after "model.layers.N.")`` pairs.
        permutes_qk: llama.cpp's converter permuted the rows of ``attn_q``/``attn_k`` for its
            interleaved rotary layout; a loader undoes it.
        norm_offset: What the converter added to every norm weight (Gemma's ``1 + w``).
        fixed: ``config.json`` values the architecture always has.
    """

    arch: str
    model_type: str
    config_keys: tuple[tuple[str, str], ...]
    block: tuple[tuple[str, str], ...]
    permutes_qk: bool = False
    norm_offset: float = 0.0
    fixed: tuple[tuple[str, bool | int | float | str], ...] = ()


def _spec(arch: str, model_type: str | None = None, extra: tuple[tuple[str, str], ...] = (),
          block: tuple[tuple[str, str], ...] = _LLAMA_BLOCK, **kw: object) -> ArchSpec:
    return ArchSpec(arch=arch, model_type=model_type or arch, config_keys=(*_COMMON, *extra), block=block, **kw)  # type: ignore[arg-type]


ARCHITECTURES: Final[Mapping[str, ArchSpec]] = MappingProxyType({
    s.arch: s for s in (
        _spec("llama", extra=(("rope.dimension_count", "head_dim"),), permutes_qk=True),
        _spec("qwen2"),
        _spec("qwen3", extra=_HEAD_DIM),
        _spec("gemma2", extra=_GEMMA, block=_GEMMA_BLOCK, norm_offset=1.0),
        _spec("gemma3", "gemma3_text", extra=_GEMMA, block=_GEMMA_BLOCK, norm_offset=1.0),
        _spec("phi3", block=_PHI3_BLOCK),
        _spec("qwen2moe", "qwen2_moe", extra=_MOE, block=_MOE_BLOCK),
    )
})
"""The architectures this version loads, by ``general.architecture``."""

_BLK = re.compile(r"blk\.(0|[1-9][0-9]{0,5})\.(.+)\.(weight|bias)")


def hf_tensor_name(spec: ArchSpec, gguf_name: str) -> str | None:
    """The Transformers state-dict name of a GGUF tensor, ``None`` for one with no place.

    >>> hf_tensor_name(ARCHITECTURES["phi3"], "blk.0.ffn_up.weight")
    'model.layers.0.mlp.gate_up_proj.weight'
    >>> hf_tensor_name(ARCHITECTURES["llama"], "rope_freqs.weight") is None
    True
    """
    m = _BLK.fullmatch(gguf_name)
    if m is not None:
        layer, part, kind = m.groups()
        found = dict(spec.block).get(part)
        if found is None:
            return None
        return f"model.layers.{layer}.{found}" + ("" if found in _EXPERTS and kind == "weight" else f".{kind}")
    stem, _, kind = gguf_name.rpartition(".")
    top = dict(_TOP).get(stem)
    return None if top is None or kind not in ("weight", "bias") else f"{top}.{kind}"


def fused_parts(hf_name: str) -> tuple[str, ...]:
    """The GGUF block tensors (after ``blk.N.``) that one Transformers parameter stacks, in order
    along its rows: Transformers keeps each expert's gate and up projections in one
    ``gate_up_proj`` of ``[experts, 2 * intermediate, hidden]``; llama.cpp writes them apart.

    >>> fused_parts("model.layers.0.mlp.experts.gate_up_proj")
    ('ffn_gate_exps', 'ffn_up_exps')
    >>> fused_parts("model.layers.0.mlp.down_proj.weight")
    ()
    """
    for suffix, parts in _EXPERTS.items():
        if hf_name.endswith("." + suffix):
            return parts
    return ()


def hf_config(spec: ArchSpec, metadata: Mapping[str, GgufValue], n_vocab: int | None) -> dict[str, object]:
    """The ``config.json`` keys the metadata gives, as Transformers' GGUF loader reads them.

    ``n_vocab`` (the tokenizer's token count, or the embedding's rows) is the vocabulary size
    when the metadata has no ``<arch>.vocab_size``.
    """
    out: dict[str, object] = {"model_type": model_type(spec, metadata), **dict(spec.fixed)}
    for key, target in spec.config_keys:
        value = metadata.get(f"{spec.arch}.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[target] = value
        elif isinstance(value, tuple) and value and key == "feed_forward_length":
            out[target] = value[0]  # per-layer lengths (not all converters write one number)
    if "vocab_size" not in out and n_vocab is not None:
        out["vocab_size"] = n_vocab
    scaling = rope_scaling(spec, metadata)
    if scaling is not None:
        out["rope_scaling"] = scaling
    for key, target in (("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id"),
                        ("tokenizer.ggml.padding_token_id", "pad_token_id")):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out[target] = value
    return out


def model_type(spec: ArchSpec, metadata: Mapping[str, GgufValue]) -> str:
    """Transformers' ``model_type``: llama.cpp converts Mistral models as ``llama``; Transformers
    builds a Mistral model when ``general.name`` is exactly ``"mistral"``, and so do we.

    >>> model_type(ARCHITECTURES["llama"], {"general.name": "mistral"})
    'mistral'
    """
    if spec.arch == "llama" and metadata.get("general.name") == "mistral":
        return "mistral"
    return spec.model_type


def unpermute_rows(n_rows: int, n_head: int) -> list[int]:
    """The row order that undoes llama.cpp's q/k permutation: row ``i`` of the Transformers
    weight is row ``result[i]`` of the GGUF one.

    llama.cpp writes ``w.reshape(n_head, 2, d // 2, -1).swapaxes(1, 2)`` (``d`` rows per head):
    the two rotary halves of each head, interleaved.

    >>> unpermute_rows(8, 1)
    [0, 2, 4, 6, 1, 3, 5, 7]
    """
    d = n_rows // n_head
    half = d // 2
    # GGUF row (h, j, k) (j < half, k < 2) holds Transformers row (h, k, j)
    return [h * d + j * 2 + k for h in range(n_head) for k in range(2) for j in range(half)]


_TOKEN_KEYS: Final = (("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id"),
                      ("tokenizer.ggml.padding_token_id", "pad_token_id"))


def metadata_path(key: str) -> str:
    """The JSON path of a metadata key in issues, as the header reader spells it.

    >>> metadata_path("llama.block_count")
    '$.metadata["llama.block_count"]'
    """
    return f"$.metadata[{json.dumps(short(key), ensure_ascii=False)}]"


def metadata_issues(spec: ArchSpec, metadata: Mapping[str, GgufValue], n_vocab: int | None, stored_bytes: int | None) -> Issues:
    """The architecture numbers of the metadata checked as ``quantdispatch.architecture`` checks a
    ``config.json``, before any module is built: every value as stored (``hf_config`` skips a
    wrongly typed one; here it is an issue), each issue at its metadata key; then, when
    ``stored_bytes`` (the tensor data's bytes) is given, whether the tensors can hold them.

    >>> [(i.code, i.path) for i in metadata_issues(ARCHITECTURES["llama"], {"llama.attention.head_count": True}, 8, None)]
    [('load.architecture.value', '$.metadata["llama.attention.head_count"]')]
    """
    raw: dict[str, object] = {"model_type": model_type(spec, metadata)}
    paths: dict[str, str] = {}
    for key, target in spec.config_keys:
        full = f"{spec.arch}.{key}"
        if full in metadata and target not in raw:
            raw[target], paths[target] = metadata[full], metadata_path(full)
    if "vocab_size" not in raw and n_vocab is not None:
        raw["vocab_size"], paths["vocab_size"] = n_vocab, metadata_path("tokenizer.ggml.tokens")
    pad = metadata.get("tokenizer.ggml.padding_token_id")
    if pad is not None:
        raw["pad_token_id"], paths["pad_token_id"] = pad, metadata_path("tokenizer.ggml.padding_token_id")
    issues = _rope_scaling_issues(spec, metadata)
    return (*issues, *check_architecture(raw, None if issues else stored_bytes, where=lambda k: paths.get(k, f"$.{k}"),
                                         size_path="$.tensors"))


GGUF_ROPE_SCALING: Final = frozenset({"none", "linear", "yarn", "longrope"})
"""The ``<arch>.rope.scaling.type`` values llama.cpp writes."""


def _rope_scaling_keys(spec: ArchSpec, metadata: Mapping[str, GgufValue]) -> tuple[str, GgufValue, str, GgufValue]:
    """The type and factor keys llama.cpp reads, and their values: the type defaults to
    ``"linear"``; the factor is ``rope.scaling.factor``, else the older ``rope.scale_linear``."""
    kind_key, factor_key = f"{spec.arch}.rope.scaling.type", f"{spec.arch}.rope.scaling.factor"
    if factor_key not in metadata and f"{spec.arch}.rope.scale_linear" in metadata:
        factor_key = f"{spec.arch}.rope.scale_linear"
    return kind_key, metadata.get(kind_key, "linear"), factor_key, metadata.get(factor_key, 0.0)


def rope_scaling(spec: ArchSpec, metadata: Mapping[str, GgufValue]) -> dict[str, object] | None:
    """Transformers' ``rope_scaling`` for the metadata's rope scaling, as llama.cpp applies it:
    linear (positions divided by the factor), or YaRN (with its pre-training context and, when
    the file has one, its attention factor; llama.cpp's default beta_fast 32 and beta_slow 1 are
    Transformers' too). A factor of 0 or 1 is none; ``None`` for none.

    >>> rope_scaling(ARCHITECTURES["llama"], {"llama.rope.scaling.factor": 4.0})
    {'rope_type': 'linear', 'factor': 4.0}
    >>> rope_scaling(ARCHITECTURES["llama"], {"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}) is None
    True
    """
    _, kind, _, factor = _rope_scaling_keys(spec, metadata)
    if kind not in ("linear", "yarn") or not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor in (0, 1):
        return None
    if architecture_issues({"rope_scaling": {"factor": factor}}):
        return None  # metadata_issues reports it
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    found = _yarn(spec, metadata, float(factor))
    return found if isinstance(found, dict) else None  # a reason: _rope_scaling_issues refuses the file


_YARN_NEUTRAL: Final = (("rope.scaling.attn_factor", (1.0,)), ("rope.scaling.yarn_attn_factor", (1.0,)),
                        ("rope.scaling.yarn_ext_factor", (-1.0, 1.0)), ("rope.scaling.yarn_log_multiplier", (0.0,)))
"""YaRN keys whose llama.cpp meaning has no exact Transformers parameter: only their neutral values are accepted."""


def _yarn(spec: ArchSpec, metadata: Mapping[str, GgufValue], factor: float) -> dict[str, object] | str:
    """Transformers' YaRN parameters for the file's, or why they cannot be had exactly: the
    pre-training context is required; beta_fast and beta_slow carry over; the attention and
    extrapolation factors and the log multiplier must be llama.cpp's neutral values."""
    def number(key: str) -> float | None:
        value = metadata.get(f"{spec.arch}.{key}")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None

    original = metadata.get(f"{spec.arch}.rope.scaling.original_context_length")
    if not (isinstance(original, int) and not isinstance(original, bool) and 0 < original < 2**31):
        return f"YaRN needs {spec.arch}.rope.scaling.original_context_length, a positive integer"
    for key, neutral in _YARN_NEUTRAL:
        if f"{spec.arch}.{key}" in metadata and number(key) not in neutral:
            return f"{spec.arch}.{key} other than {neutral[-1]} has no exact Transformers counterpart"
    found: dict[str, object] = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    for key, target in (("rope.scaling.yarn_beta_fast", "beta_fast"), ("rope.scaling.yarn_beta_slow", "beta_slow")):
        value = number(key)
        if value is not None and value > 0:
            found[target] = value
    return found


def _rope_scaling_issues(spec: ArchSpec, metadata: Mapping[str, GgufValue]) -> list[Issue]:
    """llama.cpp's rope scaling keys: a type it knows and a finite positive factor (0: none).
    Linear scaling becomes Transformers' (``rope_scaling``); the others this version does not
    apply, so a file that asks for them is refused rather than run with other positions."""
    kind_key, kind, factor_key, factor = _rope_scaling_keys(spec, metadata)
    issues: list[Issue] = []
    if not isinstance(kind, str) or kind not in GGUF_ROPE_SCALING:
        issues.append(Issue("load.architecture.value", metadata_path(kind_key), f"rope scaling {quote(kind)} is not one llama.cpp writes",
                            "one of " + ", ".join(sorted(GGUF_ROPE_SCALING))))
    if factor != 0:
        found = architecture_issues({"rope_scaling": {"factor": factor}})
        issues += [attrs.evolve(i, path=metadata_path(factor_key)) for i in found]
        numeric = isinstance(factor, (int, float)) and not isinstance(factor, bool)
        yarn = _yarn(spec, metadata, float(factor)) if kind == "yarn" and not found and numeric and isinstance(factor, (int, float)) else None
        if not found and kind in GGUF_ROPE_SCALING - {"none", "linear"} and factor != 1 and not isinstance(yarn, dict):
            why = yarn if isinstance(yarn, str) else "this version does not apply it"
            issues.append(Issue("load.gguf.rope_scaling.unsupported", metadata_path(kind_key),
                                f"the file asks for {quote(kind)} rope scaling by {quote(factor)}: {why}",
                                "without it the model would see other positions than it was trained for"))
    return issues


_BLOCK_NUMBER = re.compile(r"blk\.([0-9]+)\.")


def block_count_issues(spec: ArchSpec, metadata: Mapping[str, GgufValue], tensor_names: Iterable[str]) -> Issues:
    """Whether ``<arch>.block_count`` agrees with the ``blk.N`` tensors the file holds: blocks
    ``0 … block_count - 1``, each with at least one tensor, and none beyond.

    >>> [i.code for i in block_count_issues(ARCHITECTURES["llama"], {"llama.block_count": 3}, ["blk.0.attn_q.weight"])]
    ['load.architecture.layers']
    """
    key = f"{spec.arch}.block_count"
    count = metadata.get(key)
    if not isinstance(count, int) or isinstance(count, bool):
        return ()  # absent or wrongly typed: metadata_issues says so
    seen: set[int] = set()
    beyond = -1  # the largest block number past the count
    for name in tensor_names:
        m = _BLOCK_NUMBER.match(name)
        if m is None:
            continue
        n = int(m[1]) if len(m[1]) <= 18 else 10**18  # a number of thousands of digits: past any count, no big-int parse
        if n < count:
            seen.add(n)
        else:
            beyond = max(beyond, n)
    missing = count - len(seen)
    if beyond < 0 and missing <= 0:
        return ()
    what = []
    if missing > 0:
        first = next(n for n in range(count) if n not in seen)
        what.append(f"{missing} of them have no tensors (the first: blk.{first})")
    if beyond >= 0:
        what.append(f"tensors name blocks up to blk.{beyond if beyond < 10**18 else 'a number of 19+ digits'}")
    return (Issue("load.architecture.layers", metadata_path(key),
                  f"{key} is {quote(count)}, but " + "; ".join(what),
                  "the metadata does not describe the tensors in the file"),)
