"""Architecture numbers checked before a model is built: sane values, consistent relations, and a
size the weight files can hold.

A ``config.json`` (or the one a GGUF file's metadata becomes) decides how many layers, heads and
experts Transformers builds. Numbers that are zero, negative, booleans, floats where an integer
belongs, absurdly large or inconsistent make Transformers raise ``ZeroDivisionError`` or
``RuntimeError`` deep in a constructor, or build millions of Python objects before anything fails.
These pure functions (no torch, no I/O, never raising on bad data) say what is wrong first, every
problem at once, each with a stable code and the path of the value in its source.

Codes:

- ``load.architecture.value``: a number of the wrong type or out of its range.
- ``load.architecture.limit``: a count (layers, experts) above what this version builds.
- ``load.architecture.relation``: numbers that contradict each other (``hidden_size`` not a
  multiple of ``num_attention_heads``, more experts per token than experts…).
- ``load.architecture.size``: the weight files are far smaller than the fewest bytes any
  supported storage needs for the parameters the numbers describe.

>>> [i.code for i in architecture_issues({"hidden_size": 64, "num_attention_heads": 0})]
['load.architecture.value']
>>> architecture_issues({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2})
()
>>> [i.code for i in size_issues({"hidden_size": 4096, "num_hidden_layers": 1000, "vocab_size": 32000}, 860_000)]
['load.architecture.size']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

from .result import Issue, Issues
from .text import quote

__all__ = [
    "MAX_DIMENSION", "MAX_LAYERS", "MAX_EXPERTS", "MAX_LAYER_EXPERTS", "MIN_BITS_PER_WEIGHT", "ROPE_TYPES",
    "architecture_issues", "minimum_parameters", "size_issues", "check_architecture", "BUILD_ERRORS",
]

MAX_DIMENSION: Final = 2**31 - 1
"""The largest value any dimension (hidden size, vocabulary, context length…) may take."""

MAX_LAYERS: Final = 2048
"""The most decoder layers this version builds (the deepest real models have ~130; franken-merges ~300)."""

MAX_EXPERTS: Final = 1 << 16
"""The most experts per layer this version builds (real models: up to 512, and Doge's 16,384
single-neuron experts)."""

MAX_LAYER_EXPERTS: Final = 1 << 20
"""The most experts in all layers together (real models: up to ~500,000, Doge's)."""

MIN_BITS_PER_WEIGHT: Final = 1.5
"""The fewest bits a supported storage spends on one weight: below GGUF's smallest type (IQ1_S,
1.5625 bits) and every safetensors method (2 bits and up)."""

ROPE_TYPES: Final = frozenset({"default", "linear", "dynamic", "yarn", "longrope", "llama3", "proportional", "mrope", "su", "axial"})
"""The ``rope_type`` (or legacy ``type``) values Transformers knows (``mrope`` and ``su`` it renames;
``axial`` is its vision encoders')."""

STANDARD_DECODERS: Final = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                                      "gemma3_text", "phi3"})
"""Model types whose attention is the plain multi-head one: ``head_dim`` is given or is
``hidden_size / num_attention_heads``, and the embedding takes ``pad_token_id`` as its padding
index. The relations those imply are checked for these only (other models derive their head
sizes otherwise: Transformers' own GLM-4.5 and Qwen3-Omni defaults do not divide, GLM-5's
``head_dim`` is 0, MusicGen's pad id is its vocabulary size)."""

BUILD_ERRORS: Final[tuple[type[BaseException], ...]] = (
    ValueError, KeyError, TypeError, ImportError, AssertionError, ArithmeticError, RuntimeError, MemoryError, IndexError,
    AttributeError, OSError,
)
"""What building a model from a config may raise, which a loader turns into
``load.architecture.unsupported`` behind these checks: Transformers' validators (``ValueError``),
a zero that divides, torch's assertion on a bad ``padding_idx``, a size that overflows or
exhausts memory, a config file that cannot be read."""

_MAX_FACTORS: Final = 1 << 16  # longrope's short/long factor lists: head_dim / 2 entries

# key → (least value, greatest value); integers, bool excluded
_INTS: Final[Mapping[str, tuple[int, int]]] = {
    "hidden_size": (1, MAX_DIMENSION),
    "num_hidden_layers": (1, MAX_LAYERS),
    "num_attention_heads": (1, MAX_DIMENSION),
    "num_key_value_heads": (1, MAX_DIMENSION),
    "head_dim": (0, MAX_DIMENSION),  # 0 where another key sizes the heads (GLM-5's MLA); at least 1 for standard decoders
    "vocab_size": (1, MAX_DIMENSION),
    "intermediate_size": (1, MAX_DIMENSION),
    "moe_intermediate_size": (1, MAX_DIMENSION),
    "shared_expert_intermediate_size": (1, MAX_DIMENSION),
    "max_position_embeddings": (1, MAX_DIMENSION),
    "sliding_window": (0, MAX_DIMENSION),  # 0 only with use_sliding_window false (Qwen2-MoE's default)
    "num_experts": (1, MAX_EXPERTS),
    "num_local_experts": (1, MAX_EXPERTS),
    "n_routed_experts": (1, MAX_EXPERTS),
    "n_shared_experts": (0, MAX_EXPERTS),
    "num_experts_per_tok": (1, MAX_EXPERTS),
}
_LIMITED: Final = frozenset({"num_hidden_layers", "num_experts", "num_local_experts", "n_routed_experts", "n_shared_experts",
                             "num_experts_per_tok"})
_REQUIRED: Final = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"})  # null is an issue
_EXPERT_KEYS: Final = ("num_experts", "num_local_experts", "n_routed_experts")
_PER_LAYER: Final = frozenset({"intermediate_size", "moe_intermediate_size"})  # Gemma 3n, ERNIE-VL: one per layer (or expert group)

# key → (positive only, at most 1); floats or integers, bool excluded
_FLOATS: Final[Mapping[str, bool]] = {
    "rope_theta": False, "rms_norm_eps": False, "layer_norm_eps": False, "layer_norm_epsilon": False, "norm_eps": False,
    "partial_rotary_factor": True, "final_logit_softcapping": False, "attn_logit_softcapping": False,
}
_ROPE_POSITIVE: Final = ("factor", "rope_theta", "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "beta_slow")
_ROPE_NONNEGATIVE: Final = ("mscale", "mscale_all_dim")
_ROPE_DICTS: Final = ("rope_scaling", "rope_parameters")
_NESTED: Final = ("text_config", "language_config", "llm_config")

Where = Callable[[str], str]
"""The path of a config key in the source: ``$.num_attention_heads`` or ``$.metadata["llama.attention.head_count"]``."""


def _json_path(prefix: str) -> Where:
    return lambda key: f"{prefix}.{key}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(cfg: Mapping[str, object], key: str) -> int | None:
    """The value of ``key`` when it is a valid integer for it, else ``None``."""
    v = cfg.get(key)
    lo, hi = _INTS.get(key, (1, MAX_DIMENSION))
    if _is_int(v):
        n = int(v)  # type: ignore[call-overload]
        return n if lo <= n <= hi else None
    if key in _PER_LAYER and isinstance(v, (list, tuple)) and 0 < len(v) <= MAX_LAYERS and all(_is_int(x) and lo <= x <= hi for x in v):
        return min(int(x) for x in v)  # the least: a lower bound of every layer's
    return None


def _int_issue(key: str, value: object, where: Where) -> Issue | None:
    lo, hi = _INTS[key]
    if value is None:
        if key not in _REQUIRED:
            return None
        return Issue("load.architecture.value", where(key), f"{key} is null", f"an integer from {lo} to {hi}")
    if key in _PER_LAYER and isinstance(value, (list, tuple)) and value:
        if len(value) > MAX_LAYERS:
            return Issue("load.architecture.limit", where(key), f"{key} lists {len(value):,} values", f"at most {MAX_LAYERS}")
        bad = next((i for i, x in enumerate(value) if not (_is_int(x) and lo <= x <= hi)), None)
        return None if bad is None else Issue("load.architecture.value", f"{where(key)}[{bad}]", f"{key}[{bad}] is {quote(value[bad])}",
                                              f"an integer from {lo} to {hi}")
    if not _is_int(value):
        kind = "a boolean" if isinstance(value, bool) else "a float" if isinstance(value, float) else type(value).__name__
        return Issue("load.architecture.value", where(key), f"{key} is {quote(value)} ({kind}), not an integer",
                     f"an integer from {lo} to {hi}")
    n = int(value)  # type: ignore[call-overload]
    if n < lo:
        return Issue("load.architecture.value", where(key), f"{key} is {quote(n)}", f"an integer from {lo} to {hi}")
    if n > hi:
        code = "load.architecture.limit" if key in _LIMITED else "load.architecture.value"
        return Issue(code, where(key), f"{key} is {quote(n)}, more than this version builds", f"at most {hi}")
    return None


def _float_issue(key: str, value: object, at: str, *, unit: bool = False, nonnegative: bool = False) -> Issue | None:
    if value is None:
        return None
    want = "a number in (0, 1]" if unit else "a finite number ≥ 0" if nonnegative else "a finite number > 0"
    if not _is_number(value):
        return Issue("load.architecture.value", at, f"{key} is {quote(value)}, not a number", want)
    try:
        x = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer too large for a float
        x = math.inf
    ok = math.isfinite(x) and (x >= 0 if nonnegative else x > 0) and (x <= 1 if unit else True)
    return None if ok else Issue("load.architecture.value", at, f"{key} is {quote(value)}", want)


def _rope_issues(rope: object, at: str) -> list[Issue]:
    if rope is None:
        return []
    if not isinstance(rope, Mapping):
        return [Issue("load.architecture.value", at, f"expected an object, got {quote(rope)}")]
    if rope and all(isinstance(v, Mapping) for v in rope.values()):  # per layer type: {"full_attention": {...}, ...}
        return [i for k, v in rope.items() for i in _rope_issues(v, f"{at}.{k if isinstance(k, str) and k.isidentifier() else quote(k, 40)}")]
    issues: list[Issue] = []
    kind = rope.get("rope_type", rope.get("type"))
    if kind is not None and (not isinstance(kind, str) or kind not in ROPE_TYPES):
        issues.append(Issue("load.architecture.value", f"{at}.rope_type", f"rope type {quote(kind)} is not one Transformers knows",
                            "one of " + ", ".join(sorted(ROPE_TYPES))))
    for key in _ROPE_POSITIVE:
        if key in rope:
            issues += [i for i in (_float_issue(key, rope[key], f"{at}.{key}"),) if i]
    for key in _ROPE_NONNEGATIVE:
        if key in rope:
            issues += [i for i in (_float_issue(key, rope[key], f"{at}.{key}", nonnegative=True),) if i]
    if "partial_rotary_factor" in rope:
        issues += [i for i in (_float_issue("partial_rotary_factor", rope["partial_rotary_factor"], f"{at}.partial_rotary_factor",
                                            unit=True),) if i]
    if "original_max_position_embeddings" in rope:
        v = rope["original_max_position_embeddings"]
        if v is not None and not (_is_int(v) and 1 <= v <= MAX_DIMENSION):
            issues.append(Issue("load.architecture.value", f"{at}.original_max_position_embeddings",
                                f"original_max_position_embeddings is {quote(v)}", f"an integer from 1 to {MAX_DIMENSION}"))
    for key in ("short_factor", "long_factor"):
        v = rope.get(key)
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) > _MAX_FACTORS:
            issues.append(Issue("load.architecture.value", f"{at}.{key}", f"{key} is {quote(v)}", f"a list of at most {_MAX_FACTORS} numbers"))
            continue
        bad = next((j for j, x in enumerate(v) if _float_issue(key, x, "") is not None), None)
        if bad is not None:
            issues.append(Issue("load.architecture.value", f"{at}.{key}[{bad}]", f"{key}[{bad}] is {quote(v[bad])}", "a finite number > 0"))
    return issues


def _relation_issues(cfg: Mapping[str, object], where: Where) -> list[Issue]:
    issues: list[Issue] = []
    kind = cfg.get("model_type")
    standard = isinstance(kind, str) and kind in STANDARD_DECODERS
    hidden, heads, kv = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads"), _int(cfg, "num_key_value_heads")
    if standard and cfg.get("head_dim") == 0:
        issues.append(Issue("load.architecture.value", where("head_dim"), "head_dim is 0", f"an integer from 1 to {MAX_DIMENSION}"))
    if standard and hidden is not None and heads is not None and cfg.get("head_dim") is None and hidden % heads:
        issues.append(Issue("load.architecture.relation", where("hidden_size"),
                            f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}, and no head_dim is given",
                            "a hidden size that splits evenly into heads, or an explicit head_dim"))
    if heads is not None and kv is not None and heads % kv:
        issues.append(Issue("load.architecture.relation", where("num_key_value_heads"),
                            f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}",
                            "each key/value head serves a whole number of attention heads"))
    experts = next((e for k in _EXPERT_KEYS if (e := _int(cfg, k)) is not None), None)
    per_token = _int(cfg, "num_experts_per_tok")
    if experts is not None and per_token is not None and per_token > experts:
        issues.append(Issue("load.architecture.relation", where("num_experts_per_tok"),
                            f"num_experts_per_tok {per_token} is more than the {experts} experts", f"at most {experts}"))
    layers = _int(cfg, "num_hidden_layers")
    if experts is not None and layers is not None and experts * layers > MAX_LAYER_EXPERTS:
        issues.append(Issue("load.architecture.limit", where("num_hidden_layers"),
                            f"{layers} layers of {experts} experts are {layers * experts} experts in all", f"at most {MAX_LAYER_EXPERTS}"))
    if cfg.get("sliding_window") == 0 and cfg.get("use_sliding_window") is not False:
        issues.append(Issue("load.architecture.value", where("sliding_window"), "sliding_window is 0, and sliding attention is used",
                            "a window of at least 1 token, or use_sliding_window false"))
    vocab, pad = _int(cfg, "vocab_size"), cfg.get("pad_token_id")
    if not standard:
        return issues
    if pad is not None and not _is_int(pad):
        issues.append(Issue("load.architecture.value", where("pad_token_id"), f"pad_token_id is {quote(pad)}, not an integer"))
    elif _is_int(pad) and vocab is not None and not -vocab <= int(pad) < vocab:  # type: ignore[call-overload]
        issues.append(Issue("load.architecture.relation", where("pad_token_id"),
                            f"pad_token_id {quote(pad)} is outside the vocabulary of {vocab} tokens", f"an id below {vocab}"))
    return issues


def architecture_issues(config: Mapping[str, object], *, where: Where | None = None) -> Issues:
    """Check the architecture numbers of a ``config.json`` dict: every value, then the relations
    Transformers relies on, then the same in a nested ``text_config``; every problem at once.

    A key that is absent is not checked (Transformers applies its default); ``null`` counts as
    absent except for the sizes every model needs. The relations of plain multi-head attention
    are checked for ``STANDARD_DECODERS`` only.

    Args:
        config: The ``config.json`` object (or the one a GGUF file's metadata becomes).
        where: The path of each key in the source (default: ``$.<key>``).

    Returns:
        The issues, empty when the numbers can be built.

    >>> [(i.code, i.path) for i in architecture_issues({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3})]
    [('load.architecture.relation', '$.hidden_size')]
    """
    return tuple(_issues(config, where or _json_path("$"), depth=0))


def _issues(cfg: Mapping[str, object], where: Where, *, depth: int) -> list[Issue]:
    issues: list[Issue] = []
    for key in _INTS:
        if key in cfg and (found := _int_issue(key, cfg[key], where)) is not None:
            issues.append(found)
    for key, unit in _FLOATS.items():
        if key in cfg and (found := _float_issue(key, cfg[key], where(key), unit=unit)) is not None:
            issues.append(found)
    for key in _ROPE_DICTS:
        if key in cfg:
            issues += _rope_issues(cfg[key], where(key))
    issues += _relation_issues(cfg, where)
    for key in _NESTED:
        nested = cfg.get(key)
        if isinstance(nested, Mapping) and depth == 0:
            issues += _issues(nested, _json_path(where(key)), depth=1)
    return issues


def minimum_parameters(config: Mapping[str, object]) -> int:
    """A lower bound of the parameters the numbers describe (those of a nested ``text_config``
    when there is one): the embedding once (the output layer may be tied to it), and per layer
    the query and output projections and two of a dense MLP's three matrices, or as many of each
    expert's, whichever is fewer. Missing or invalid numbers count nothing.

    >>> minimum_parameters({"hidden_size": 8, "vocab_size": 10, "num_hidden_layers": 2, "num_attention_heads": 2,
    ...                     "intermediate_size": 16})
    848
    """
    for key in _NESTED:
        nested = config.get(key)
        if isinstance(nested, Mapping):
            return minimum_parameters(nested)
    hidden, vocab, layers = _int(config, "hidden_size"), _int(config, "vocab_size"), _int(config, "num_hidden_layers")
    if hidden is None:
        return 0
    total = hidden * (vocab or 0)
    heads = _int(config, "num_attention_heads")
    head_dim = _int(config, "head_dim") or (hidden // heads if heads else 0)  # MLA's sizes are other keys: a lower bound still
    attention = 2 * hidden * (heads or 0) * head_dim
    mlps: list[int] = []
    dense = _int(config, "intermediate_size")
    if dense is not None:
        mlps.append(2 * hidden * dense)
    experts = next((e for k in _EXPERT_KEYS if (e := _int(config, k)) is not None), None)
    expert_size = _int(config, "moe_intermediate_size") or dense
    if experts is not None and expert_size is not None:
        mlps.append(2 * hidden * expert_size * experts)
    return total + (layers or 0) * (attention + (min(mlps) if mlps else 0))


def size_issues(config: Mapping[str, object], stored_bytes: int, *, path: str = "$") -> Issues:
    """Whether weight files of ``stored_bytes`` can hold the parameters the numbers describe at
    ``MIN_BITS_PER_WEIGHT``; a ``load.architecture.size`` issue when they are far too small.

    >>> size_issues({"hidden_size": 64, "vocab_size": 100, "num_hidden_layers": 1}, 10_000)
    ()
    """
    params = minimum_parameters(config)
    need = math.ceil(params * MIN_BITS_PER_WEIGHT / 8)
    if stored_bytes >= need:
        return ()
    return (Issue("load.architecture.size", path,
                  f"the numbers describe at least {params:,} parameters, which need at least {need:,} bytes at "
                  f"{MIN_BITS_PER_WEIGHT} bits each; the weight files hold {stored_bytes:,}",
                  "the config does not describe these weights (a corrupt or hostile config, or the wrong file)"),)


def check_architecture(config: Mapping[str, object], stored_bytes: int | None, *, where: Where | None = None,
                       size_path: str = "$") -> Issues:
    """``architecture_issues``, then, when they pass and ``stored_bytes`` is known, ``size_issues``:
    what a loader calls before it builds a model.

    >>> [i.code for i in check_architecture({"num_hidden_layers": 100_000}, None)]
    ['load.architecture.limit']
    """
    issues = architecture_issues(config, where=where)
    if issues or stored_bytes is None:
        return issues
    return size_issues(config, stored_bytes, path=size_path)
