"""Differential tests: Transformers 5.24's quantization configs are the oracle for our codec.

For every dict we generate (bitsandbytes 4/8-bit, GPTQ, AWQ, and dicts mixing valid and invalid
values), ``AutoQuantizationConfig.from_dict`` and our ``parse`` must agree on

(a) acceptance, family and variant (``load_in_4bit`` → ``Bnb4Bit``, GPTQ ``format: gptq_v2`` →
    ``GptqV2``, AWQ ``version: gemv`` → ``AwqGemv`` …);
(b) the typed fields (``bits``, ``group_size``, ``bnb_4bit_compute_dtype`` …);
(c) the document Transformers writes: ``dump(config, style="transformers")`` equals
    ``to_dict()`` after a JSON round trip, key for key, value for value, type for type;

unless the dict falls under a known divergence in ``DIVERGENCES``. Every row there names a place
where we deliberately differ, says why, and carries a witness: ``test_divergence_is_real`` checks
that the witness falls under that row alone and that the two libraries really disagree on it, so
the table cannot rot. (d) applies the same checks to the real configs of the shared corpus.
"""

from __future__ import annotations

import copy
import enum
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
torch.set_num_threads(1)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AutoQuantizationConfig
    from transformers.utils.quantization_config import AwqBackend, AwqConfig, BitsAndBytesConfig, GPTQConfig

from quantdispatch import (
    AbstractAwq,
    AbstractGptq,
    AbstractQuantConfig,
    AwqGemm,
    AwqGemv,
    AwqGemvFast,
    AwqLlm,
    Bnb4Bit,
    Bnb8Bit,
    DType,
    Err,
    Gptq,
    GptqV2,
    Issues,
    Ok,
    Result,
    dump,
    locate,
    parse,
)
from quantdispatch.jsonvalue import JsonObject, thaw

Raw = Mapping[str, object]

# ----------------------------------------------------------------------- the known divergences
# Each predicate reads the input dict; they are defined under 'predicates' below.


class Divergence(NamedTuple):
    """A deliberate difference from Transformers: where it applies, why, a dict showing it, and
    whether the difference is that we refuse what Transformers accepts (then we must return Err)."""

    name: str
    applies: Callable[[Raw], bool]
    reason: str
    witness: dict[str, object]
    we_reject: bool


DIVERGENCES: Final[tuple[Divergence, ...]] = (
    # --- discriminator
    Divergence("bnb-flag-overrides-quant-method", lambda d: _bnb_flag_conflicts_method(d),
               "TF lets a true load_in_* flag silently win over any other quant_method; we report "
               "bnb.quant_method.conflict", {"quant_method": "gptq", "bits": 4, "load_in_4bit": True}, True),
    Divergence("bnb-falsy-non-bool-flag", lambda d: _falsy_non_bool_flag(d),
               "TF treats a falsy non-boolean flag ('' / [] / {}) as absent; we report bnb.load_in_*.type",
               {"quant_method": "gptq", "bits": 4, "load_in_4bit": ""}, True),
    Divergence("bnb-internal-dispatch-key", lambda d: _bnb_dispatch_key(d),
               "TF accepts its internal keys bitsandbytes_4bit/_8bit as quant_method and builds a "
               "BitsAndBytesConfig with neither flag set; we refuse (method.unsupported)",
               {"quant_method": "bitsandbytes_8bit"}, True),
    Divergence("whole-config-json", lambda d: _whole_config_json(d),
               "we find the block under quantization_config / text_config.quantization_config of a whole "
               "config.json; TF's from_dict wants the block itself",
               {"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": 4}}, False),
    Divergence("other-transformers-method", lambda d: _other_transformers_method(d),
               "a family this file does not model (its config classes are not the oracle's here): the other "
               "Transformers methods are compared in test_methods_vs_transformers.py and test_vs_compressed_tensors.py, "
               "each with its own divergence table", {"quant_method": "aqlm"}, False),
    # --- bitsandbytes values
    Divergence("bnb-quant-type-unchecked", lambda d: _bnb_quant_type(d),
               "TF only checks that bnb_4bit_quant_type is a string ('int3' passes); bitsandbytes has nf4 "
               "and fp4 only", {"load_in_4bit": True, "bnb_4bit_quant_type": "int3"}, True),
    Divergence("bnb-int-threshold", lambda d: _bnb_int_threshold(d),
               "TF rejects an integer llm_int8_threshold (6); JSON does not distinguish, we read it as 6.0",
               {"load_in_8bit": True, "llm_int8_threshold": 6}, False),
    Divergence("bnb-negative-threshold", lambda d: _bnb_negative_threshold(d),
               "TF accepts a negative llm_int8_threshold; an outlier threshold is a magnitude, we want >= 0",
               {"load_in_8bit": True, "llm_int8_threshold": -1.0}, True),
    Divergence("bnb-skip-modules-items", lambda d: _bnb_skip_items(d),
               "TF only checks that llm_int8_skip_modules is a list; we want a list of module-name strings",
               {"load_in_8bit": True, "llm_int8_skip_modules": ["lm_head", 1]}, True),
    Divergence("torch-prefixed-dtype", lambda d: _torch_prefixed_dtype(d),
               "TF fails on 'torch.bfloat16' (getattr(torch, 'torch.bfloat16')) and on 'torch.uint8' storage; "
               "we read the spelling users write by hand",
               {"load_in_4bit": True, "bnb_4bit_compute_dtype": "torch.bfloat16"}, False),
    Divergence("torch-dtype-alias", lambda d: _torch_dtype_alias(d),
               "TF accepts any torch attribute that is a dtype ('half', 'double', 'complex64', 'uint4' …); "
               "we accept the canonical names of our DType only",
               {"load_in_4bit": True, "bnb_4bit_compute_dtype": "half"}, True),
    # --- GPTQ
    Divergence("gptq-format-unsupported", lambda d: _gptq_format_unsupported(d),
               "TF accepts any GPTQ format string (marlin, bitblas …); we load the gptq and gptq_v2 layouts only",
               {"quant_method": "gptq", "bits": 4, "format": "marlin"}, True),
    Divergence("gptq-checkpoint-format-wins", lambda d: _gptq_checkpoint_format_wins(d),
               "TF lets checkpoint_format silently override a different format; we report gptq.format.conflict",
               {"quant_method": "gptq", "bits": 4, "format": "gptq", "checkpoint_format": "gptq_v2"}, True),
    Divergence("null-format", lambda d: _null_format(d),
               "TF crashes on format: null (None.lower()); we read null as absent",
               {"quant_method": "gptq", "bits": 4, "format": None}, False),
    Divergence("gptq-number-types", lambda d: _gptq_number_types(d),
               "TF compares bits and group_size without type checks (4.0, 64.0, true pass); we want integers",
               {"quant_method": "gptq", "bits": 4.0}, True),
    Divergence("gptq-unchecked-keys", lambda d: _gptq_unchecked_keys(d),
               "TF type-checks none of GPTQ's booleans, strings, lists and counts; we check each key's JSON type "
               "and range", {"quant_method": "gptq", "bits": 4, "desc_act": "yes"}, True),
    # --- AWQ
    Divergence("awq-bits-unchecked", lambda d: _awq_bits(d),
               "TF's AwqConfig never checks bits (5 passes) and ignores AutoAWQ's w_bit; AWQ packs 4-bit weights "
               "only, and we read w_bit", {"quant_method": "awq", "bits": 5}, True),
    Divergence("awq-unchecked-keys", lambda d: _awq_unchecked_keys(d),
               "AwqConfig.post_init replaces GPTQ's, so TF checks neither group_size (0 passes) nor any value's "
               "type; we do", {"quant_method": "awq", "group_size": 0}, True),
    Divergence("awq-autoawq-group-size", lambda d: _awq_autoawq_group_size(d),
               "TF ignores AutoAWQ's q_group_size (and uses its default 128); we read it as group_size",
               {"quant_method": "awq", "q_group_size": 64}, False),
    Divergence("awq-backend-unchecked", lambda d: _awq_backend_unchecked(d),
               "TF rejects an AWQ backend outside AwqBackend (and null); backend is a loading attribute that we "
               "keep verbatim without judging it", {"quant_method": "awq", "backend": "foo"}, False),
    Divergence("awq-marlin", lambda d: _awq_marlin(d),
               "TF 5 rejects the AutoAWQ 'marlin' packing; we parse it as AwqMarlin (a real on-disk layout)",
               {"quant_method": "awq", "version": "marlin"}, False),
    Divergence("awq-version-wins", lambda d: _awq_version_wins(d),
               "TF lets version silently override a different format (of any type); we report "
               "awq.format.conflict or awq.format.type",
               {"quant_method": "awq", "version": "gemm", "format": "gemv"}, True),
)


def divergences_for(d: Raw) -> list[str]:
    """The names of the known divergences that ``d`` falls under."""
    return [row.name for row in DIVERGENCES if row.applies(d)]


# ------------------------------------------------------------------------------------- the oracle


def oracle(d: Raw) -> Any:
    """Transformers' config for ``d``, or the exception it raises (it may mutate its input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoQuantizationConfig.from_dict(copy.deepcopy(dict(d)))
        except Exception as e:
            return e


def oracle_json(cfg: Any) -> Any:
    """What Transformers writes for ``cfg``: ``to_dict()`` through JSON (enums and dtypes as strings)."""
    return json.loads(json.dumps(cfg.to_dict(), default=str))


def _plain(value: object) -> object:
    """A Transformers attribute as JSON-ish data: enums by value, dtypes by bare name."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, torch.dtype):
        return str(value).split(".")[1]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_GPTQ_BY_FORMAT: Final[Mapping[object, type[AbstractQuantConfig]]] = {"gptq": Gptq, "gptq_v2": GptqV2}
_AWQ_BY_FORMAT: Final[Mapping[object, type[AbstractQuantConfig]]] = {
    "gemm": AwqGemm, "gemv": AwqGemv, "gemv_fast": AwqGemvFast, "llm-awq": AwqLlm,
}


def their_variant(cfg: Any) -> type[AbstractQuantConfig] | None:
    """Our config type for Transformers' config object, or ``None`` where we have no such type."""
    if isinstance(cfg, AwqConfig):  # before GPTQConfig: AwqConfig subclasses it
        return _AWQ_BY_FORMAT.get(_plain(cfg.format))
    if isinstance(cfg, GPTQConfig):
        return _GPTQ_BY_FORMAT.get(_plain(cfg.format))
    if isinstance(cfg, BitsAndBytesConfig):
        return Bnb4Bit if cfg.load_in_4bit is True else Bnb8Bit if cfg.load_in_8bit is True else None
    return None


# ----------------------------------------------------------------------------------- predicates

_BNB_FLAGS: Final = ("load_in_4bit", "load_in_8bit")
_OUR_METHODS: Final = frozenset({"gptq", "awq", "bitsandbytes_4bit", "bitsandbytes_8bit", "gguf"})
_AWQ_BACKENDS: Final = frozenset(b.value for b in AwqBackend)
_DTYPE_NAMES: Final = frozenset(d.value for d in DType)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _is_int(v: object) -> bool:
    return type(v) is int


def _str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _tf_method(d: Raw) -> str | None:
    """The key Transformers dispatches ``d`` on (its flags first, then ``quant_method``)."""
    if any(d.get(k, False) for k in _BNB_FLAGS):
        return "bnb"
    qm = d.get("quant_method")
    return qm if isinstance(qm, str) else None


def _awq_format(d: Raw) -> object:
    """AwqConfig's format before validation: ``version`` overrides ``format``."""
    version = d.get("version")
    return version.lower() if isinstance(version, str) else d.get("format", "gemm")


def _gptq_format(d: Raw) -> object:
    """GPTQConfig's format: ``checkpoint_format`` (when not null) overrides ``format``."""
    fmt = d.get("checkpoint_format")
    fmt = d.get("format", "gptq") if fmt is None else fmt
    return fmt.lower() if isinstance(fmt, str) else fmt


def _bnb_flag_conflicts_method(d: Raw) -> bool:
    return _tf_method(d) == "bnb" and d.get("quant_method") not in (None, "bitsandbytes")


def _falsy_non_bool_flag(d: Raw) -> bool:
    return any(k in d and d[k] is not None and not isinstance(d[k], bool) and not d[k] and d[k] != False  # noqa: E712
               for k in _BNB_FLAGS)


def _bnb_dispatch_key(d: Raw) -> bool:
    return _tf_method(d) in ("bitsandbytes_4bit", "bitsandbytes_8bit")


def _bnb_quant_type(d: Raw) -> bool:
    v = d.get("bnb_4bit_quant_type")
    return _tf_method(d) == "bnb" and isinstance(v, str) and v not in ("nf4", "fp4")


def _bnb_int_threshold(d: Raw) -> bool:
    return _tf_method(d) == "bnb" and _is_int(d.get("llm_int8_threshold"))


def _bnb_negative_threshold(d: Raw) -> bool:
    v = d.get("llm_int8_threshold")
    return _tf_method(d) == "bnb" and isinstance(v, float) and v < 0


def _bnb_skip_items(d: Raw) -> bool:
    v = d.get("llm_int8_skip_modules")
    return _tf_method(d) == "bnb" and isinstance(v, list) and not _str_list(v)


def _torch_prefixed_dtype(d: Raw) -> bool:
    return _tf_method(d) == "bnb" and any(
        isinstance(v, str) and v.startswith("torch.")
        for v in (d.get("bnb_4bit_compute_dtype"), d.get("bnb_4bit_quant_storage")))


def _torch_dtype_alias(d: Raw) -> bool:
    v = d.get("bnb_4bit_compute_dtype")
    return (_tf_method(d) == "bnb" and isinstance(v, str) and v not in _DTYPE_NAMES
            and isinstance(getattr(torch, v, None), torch.dtype))


def _gptq_format_unsupported(d: Raw) -> bool:
    fmt = _gptq_format(d)
    return _tf_method(d) == "gptq" and isinstance(fmt, str) and fmt not in ("gptq", "gptq_v2")


def _gptq_checkpoint_format_wins(d: Raw) -> bool:
    a, b = d.get("format"), d.get("checkpoint_format")
    return _tf_method(d) == "gptq" and isinstance(a, str) and isinstance(b, str) and a.lower() != b.lower()


def _null_format(d: Raw) -> bool:
    if "format" not in d or d["format"] is not None:
        return False
    return _tf_method(d) == "gptq" or (_tf_method(d) == "awq" and d.get("version") is None)


def _gptq_number_types(d: Raw) -> bool:
    return _tf_method(d) == "gptq" and any(k in d and not _is_int(d[k]) for k in ("bits", "group_size"))


_GPTQ_BOOLS: Final = ("desc_act", "sym", "true_sequential", "act_group_aware", "cache_block_outputs",
                      "static_groups", "lm_head")
_GPTQ_OPT_BOOLS: Final = ("use_exllama", "disable_exllama", "use_cuda_fp16")
_GPTQ_OPT_INTS: Final = ("model_seqlen", "pad_token_id", "max_input_length")


def _gptq_unchecked_keys(d: Raw) -> bool:
    if _tf_method(d) != "gptq":
        return False
    checks: list[bool] = [k in d and not isinstance(d[k], bool) for k in _GPTQ_BOOLS]
    checks += [d.get(k) is not None and not isinstance(d[k], bool) for k in _GPTQ_OPT_BOOLS]
    checks += [d.get(k) is not None and not (_is_int(d[k]) and d[k] >= 0) for k in _GPTQ_OPT_INTS]  # type: ignore[operator]
    checks += [d.get(k) is not None and not isinstance(d[k], dict) for k in ("meta", "exllama_config")]
    checks += [d.get(k) is not None and not isinstance(d[k], str) for k in ("backend", "block_name_to_quantize")]
    mods, block = d.get("module_name_preceding_first_block"), d.get("modules_in_block_to_quantize")
    checks += [
        "batch_size" in d and not (_is_int(d["batch_size"]) and d["batch_size"] >= 1),  # type: ignore[operator]
        mods is not None and not _str_list(mods),
        block is not None and not (isinstance(block, list) and all(_str_list(r) for r in block)),
        isinstance(d.get("dataset"), list) and not _str_list(d.get("dataset")),
    ]
    return any(checks)


def _awq_bits(d: Raw) -> bool:
    return _tf_method(d) == "awq" and any(k in d and not _same(d[k], 4) for k in ("bits", "w_bit"))


def _awq_unchecked_keys(d: Raw) -> bool:
    if _tf_method(d) != "awq":
        return False
    gs, mods = d.get("group_size"), d.get("modules_to_not_convert")
    return any((
        "group_size" in d and not (_is_int(gs) and (gs == -1 or gs >= 1)),  # type: ignore[operator]
        "zero_point" in d and not isinstance(d["zero_point"], bool),
        mods is not None and not _str_list(mods),
        d.get("do_fuse") is not None and not isinstance(d["do_fuse"], bool),
        any(d.get(k) is not None and not (_is_int(d[k]) and d[k] >= 0)  # type: ignore[operator]
            for k in ("fuse_max_seq_len", "max_input_length")),
        any(d.get(k) is not None and not isinstance(d[k], dict) for k in ("modules_to_fuse", "exllama_config")),
    ))


def _awq_autoawq_group_size(d: Raw) -> bool:
    return _tf_method(d) == "awq" and "q_group_size" in d and not _same(d["q_group_size"], d.get("group_size", 128))


def _awq_backend_unchecked(d: Raw) -> bool:
    b = d.get("backend")
    return (_tf_method(d) == "awq" and "backend" in d
            and not (isinstance(b, str) and b.lower() in _AWQ_BACKENDS | {"llm-awq"}))


def _awq_marlin(d: Raw) -> bool:
    return _tf_method(d) == "awq" and _awq_format(d) == "marlin"


def _awq_version_wins(d: Raw) -> bool:
    v, f = d.get("version"), d.get("format")
    return (_tf_method(d) == "awq" and isinstance(v, str) and f is not None
            and not (isinstance(f, str) and f.lower() == v.lower()))


def _whole_config_json(d: Raw) -> bool:
    return not any(k in d for k in ("quant_method", *_BNB_FLAGS)) and locate(d) is not None


def _other_transformers_method(d: Raw) -> bool:
    qm = _tf_method(d)
    return qm is not None and qm in AUTO_QUANTIZATION_CONFIG_MAPPING and qm not in _OUR_METHODS


# ----------------------------------------------------------------------------- the comparisons


def _codes(result: Err[Any]) -> list[str]:
    return [i.code for i in result.error]


class Outcome(NamedTuple):
    """What Transformers (a config, or the exception it raised) and we (a ``Result``) make of one dict."""

    theirs: Any
    ours: Result[AbstractQuantConfig, Issues]

    @property
    def both_accept_as_same_variant(self) -> bool:
        """Whether both accept it as the same config type (the precondition of (b) and (c))."""
        ours = self.ours
        return (not isinstance(self.theirs, Exception) and isinstance(ours, Ok)
                and type(ours.value) is their_variant(self.theirs))


def outcome(d: Raw, default_method: str | None = None) -> Outcome:
    """Run both sides; Transformers gets ``quant_method: default_method`` added where ``d`` has none."""
    theirs_input = dict(d)
    if default_method is not None and "quant_method" not in d:
        theirs_input["quant_method"] = default_method
    return Outcome(oracle(theirs_input), parse(d, default_method=default_method))


def variant_disagreement(o: Outcome) -> str | None:
    """(a): how acceptance, family or variant differ between Transformers and us, or ``None``."""
    theirs, ours = o
    if isinstance(theirs, Exception):
        if isinstance(ours, Ok):
            return f"Transformers raises {type(theirs).__name__}: {theirs}; we return Ok({type(ours.value).__name__})"
        return None
    variant = getattr(their_variant(theirs), "__name__", None)
    if isinstance(ours, Err):
        return f"Transformers accepts it as {type(theirs).__name__} ({variant}); we return Err({_codes(ours)})"
    if type(ours.value).__name__ != variant:
        return f"variant: ours {type(ours.value).__name__}, Transformers {type(theirs).__name__} → {variant}"
    return None


def first_difference(ours: object, theirs: object, path: str = "$") -> str | None:
    """The first place where two JSON values differ, comparing types too (``1`` is not ``1.0``)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            if key not in theirs or key not in ours:
                side = "only ours" if key in ours else "only Transformers'"
                return f"{path}.{key}: {side} (ours {ours.get(key)!r}, Transformers {theirs.get(key)!r})"
            found = first_difference(ours[key], theirs[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if not _same(ours, theirs):
        return f"{path}: ours {ours!r}, Transformers {theirs!r}"
    return None


def _ours_plain(value: object) -> object:
    if isinstance(value, DType):
        return value.value
    if isinstance(value, JsonObject):
        return thaw(value)
    if isinstance(value, tuple):
        return [_ours_plain(v) for v in value]
    return value


def typed_fields(config: AbstractQuantConfig) -> dict[str, object]:
    """Our typed fields under Transformers' attribute names."""
    out: dict[str, object]
    if isinstance(config, (Bnb4Bit, Bnb8Bit)):
        out = {"llm_int8_skip_modules": config.skip_modules,
               "llm_int8_enable_fp32_cpu_offload": config.enable_fp32_cpu_offload}
        if isinstance(config, Bnb4Bit):
            out |= {"bnb_4bit_quant_type": config.quant_type, "bnb_4bit_compute_dtype": config.compute_dtype,
                    "bnb_4bit_use_double_quant": config.use_double_quant, "bnb_4bit_quant_storage": config.quant_storage}
        else:
            out |= {"llm_int8_threshold": config.threshold, "llm_int8_has_fp16_weight": config.has_fp16_weight}
    elif isinstance(config, AbstractGptq):
        out = {k: getattr(config, k) for k in ("bits", "group_size", "desc_act", "sym", "true_sequential",
                                                "damp_percent", "meta", "modules_in_block_to_quantize")}
        # Transformers switches act_group_aware off under desc_act; our field keeps the source's value,
        # which means the same (act-order wins), so compare what it means.
        out["act_group_aware"] = config.act_group_aware and not config.desc_act
    else:
        assert isinstance(config, AbstractAwq), config
        out = {k: getattr(config, k) for k in ("bits", "group_size", "zero_point", "modules_to_not_convert")}
    return {k: _ours_plain(v) for k, v in out.items()}


def field_disagreement(o: Outcome) -> str | None:
    """(b): the first typed field that differs from Transformers' attribute, when both accept the dict."""
    if not o.both_accept_as_same_variant:
        return None
    assert isinstance(o.ours, Ok)
    for name, value in typed_fields(o.ours.value).items():
        found = first_difference(value, _plain(getattr(o.theirs, name)), name)
        if found:
            return f"field {found}"
    return None


def dump_disagreement(o: Outcome) -> str | None:
    """(c): the first difference between our Transformers-style dump and Transformers' own."""
    if not o.both_accept_as_same_variant:
        return None
    assert isinstance(o.ours, Ok)
    found = first_difference(dump(o.ours.value, style="transformers"), oracle_json(o.theirs))
    return None if found is None else f"dump {found}"


def any_disagreement(o: Outcome) -> str | None:
    """The first disagreement of any kind: (a), then (b), then (c)."""
    return variant_disagreement(o) or field_disagreement(o) or dump_disagreement(o)


def assert_agrees_or_known(problem: str | None, d: Raw) -> None:
    """Fail with the disagreement unless ``d`` falls under a known divergence."""
    if problem is not None and not divergences_for(d):
        pytest.fail(f"{problem}\n  input: {d!r}", pytrace=False)


def assert_refused_where_claimed(d: Raw, ours: Result[AbstractQuantConfig, Issues]) -> None:
    """Where a divergence says we refuse ``d``, check that we do (a divergence must not hide an Ok)."""
    claims = [row.name for row in DIVERGENCES if row.we_reject and row.applies(d)]
    if claims and isinstance(ours, Ok):
        pytest.fail(f"{claims} say we refuse it, but we return Ok({type(ours.value).__name__})\n  input: {d!r}",
                    pytrace=False)


# ----------------------------------------------------------------------------------- strategies

_JUNK: Final[st.SearchStrategy[object]] = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300),
    st.floats(-2.0, 300.0, allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "4", "auto", "NF4", "torch.float16", "half", "GEMM"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "version"]), st.integers(0, 3), max_size=1),
)
_MODULES: Final = st.lists(st.sampled_from(["lm_head", "visual", "model.vision_backbone", "mlp.gate"]), max_size=3)
_EXTRAS: Final[dict[str, st.SearchStrategy[object]]] = {
    "model_file_base_name": st.sampled_from(["model", None]), "zzz_unknown": st.integers(0, 9),
}


def _keys(valid: Mapping[str, st.SearchStrategy[object]], odd: Mapping[str, tuple[object, ...]],
          good: bool) -> st.SearchStrategy[dict[str, object]]:
    """Any subset of ``valid``'s keys; for ``good=False`` each value may also be odd or junk."""
    if good:
        return st.fixed_dictionaries({}, optional=dict(valid))
    mixed = {k: st.one_of(v, st.sampled_from(odd[k]), _JUNK) if k in odd else st.one_of(v, _JUNK)
             for k, v in valid.items()}
    return st.fixed_dictionaries({}, optional=mixed)


_BNB_VALID: Final[dict[str, st.SearchStrategy[object]]] = {
    "bnb_4bit_quant_type": st.sampled_from(["nf4", "fp4"]),
    "bnb_4bit_compute_dtype": st.sampled_from([None, "float16", "bfloat16", "float32", "float8_e4m3fn"]),
    "bnb_4bit_use_double_quant": st.booleans(),
    "bnb_4bit_quant_storage": st.sampled_from([None, "uint8", "int8", "float16", "bfloat16", "float32", "float64"]),
    "llm_int8_threshold": st.floats(0.0, 20.0),
    "llm_int8_skip_modules": st.none() | _MODULES,
    "llm_int8_enable_fp32_cpu_offload": st.booleans(),
    "llm_int8_has_fp16_weight": st.booleans(),
    "_load_in_4bit": st.booleans(),
    "_load_in_8bit": st.booleans(),
    **_EXTRAS,
}
_BNB_ODD: Final[dict[str, tuple[object, ...]]] = {
    "bnb_4bit_quant_type": ("int3", "NF4", "nf8"),
    "bnb_4bit_compute_dtype": ("torch.bfloat16", "half", "double", "bool", "complex64", "int8", "nn", "Float16"),
    "bnb_4bit_quant_storage": ("torch.uint8", "int32", "float8_e4m3fn", "half"),
    "llm_int8_threshold": (6, -1.0, 0, "6.0"),
    "llm_int8_skip_modules": ("lm_head", [1], ["lm_head", None]),
}
_BNB_FLAG_SETS: Final[tuple[dict[str, object], ...]] = (
    {"load_in_4bit": True}, {"load_in_8bit": True},
    {"load_in_4bit": True, "load_in_8bit": False}, {"load_in_4bit": False, "load_in_8bit": True},
)
_ODD_FLAG: Final[st.SearchStrategy[object]] = st.one_of(st.booleans(), st.sampled_from([None, 0, 1, "", [], "true"]))


@st.composite
def bnb_dicts(draw: st.DrawFn, good: bool) -> dict[str, object]:
    """bitsandbytes quantization_config blocks (``good``: one flag set, values Transformers accepts)."""
    d: dict[str, object] = {}
    if good:
        if draw(st.booleans()):
            d["quant_method"] = "bitsandbytes"
        d |= draw(st.sampled_from(_BNB_FLAG_SETS))
    else:
        d |= draw(st.fixed_dictionaries({}, optional={
            "quant_method": st.sampled_from(["bitsandbytes", "gptq", "awq", None, "bitsandbytes_4bit", "BitsAndBytes"]),
            "load_in_4bit": _ODD_FLAG, "load_in_8bit": _ODD_FLAG}))
    return d | draw(_keys(_BNB_VALID, _BNB_ODD, good))


_GPTQ_VALID: Final[dict[str, st.SearchStrategy[object]]] = {
    "group_size": st.sampled_from([-1, 32, 64, 128]),
    "damp_percent": st.sampled_from([0.01, 0.1]) | st.floats(0.001, 0.999),
    **{k: st.booleans() for k in ("desc_act", "sym", "true_sequential", "act_group_aware", "static_groups",
                                  "lm_head", "cache_block_outputs", "use_exllama", "disable_exllama", "use_cuda_fp16")},
    "meta": st.sampled_from([None, {"quantizer": ["gptqmodel:2.2.0"]}, {"damp_auto_increment": 0.0025}]),
    "dataset": st.sampled_from([None, "c4", "wikitext2", "c4-new", ["one text", "another"]]),
    "tokenizer": st.none(),
    "backend": st.sampled_from([None, "auto", "AUTO", "triton", "torch"]),
    "model_seqlen": st.sampled_from([None, 2048]),
    "pad_token_id": st.sampled_from([None, 0]),
    "max_input_length": st.sampled_from([None, 4096]),
    "batch_size": st.integers(1, 4),
    "block_name_to_quantize": st.sampled_from([None, "model.layers"]),
    "module_name_preceding_first_block": st.sampled_from([None, ["model.embed_tokens"]]),
    "modules_in_block_to_quantize": st.sampled_from([None, [["self_attn.k_proj", "self_attn.v_proj"], ["mlp.up_proj"]]]),
    "exllama_config": st.sampled_from([None, {"version": 2}]),
    "model_name_or_path": st.none(),
    **_EXTRAS,
}
_GPTQ_ODD: Final[dict[str, tuple[object, ...]]] = {
    "group_size": (0, -2, 64.0, True, "128"),
    "damp_percent": (0, 1, 1.5, "0.1"),
    "desc_act": (1, "true"),
    "dataset": ("ptb", [1]),
    "modules_in_block_to_quantize": ([["a", 1]], ["a"]),
    "batch_size": (0,),
}
_GPTQ_FORMATS: Final = ("gptq", "gptq_v2", "GPTQ", "GPTQ_V2")


@st.composite
def gptq_dicts(draw: st.DrawFn, good: bool) -> dict[str, object]:
    """GPTQ blocks (``good``: valid bits and one agreed format, in ``format`` and/or ``checkpoint_format``)."""
    d: dict[str, object] = {}
    if good:
        d |= {"quant_method": "gptq", "bits": draw(st.sampled_from([2, 3, 4, 8]))}
        fmt = draw(st.sampled_from(_GPTQ_FORMATS))
        for key in draw(st.sampled_from([(), ("format",), ("checkpoint_format",), ("format", "checkpoint_format")])):
            d[key] = draw(st.sampled_from([fmt, fmt.upper(), fmt.lower()]))
    else:
        fmt_odd = st.one_of(st.sampled_from(_GPTQ_FORMATS), st.sampled_from(["marlin", "bitblas", "ipex", None, 2]), _JUNK)
        d |= draw(st.fixed_dictionaries({}, optional={
            "quant_method": st.sampled_from(["gptq", "GPTQ", "Gptq", "gptq_v2", "gptqmodel", None]),
            "bits": st.one_of(st.sampled_from([2, 3, 4, 8]), st.sampled_from([5, 16, 4.0, "4", True, None]), _JUNK),
            "format": fmt_odd, "checkpoint_format": fmt_odd}))
    return d | draw(_keys(_GPTQ_VALID, _GPTQ_ODD, good))


_AWQ_VERSIONS: Final = ("gemm", "gemv", "gemv_fast", "llm-awq", "GEMM", "GEMV", "GEMV_FAST")
_AWQ_VALID: Final[dict[str, st.SearchStrategy[object]]] = {
    "zero_point": st.booleans(),
    "backend": st.sampled_from(["auto", "autoawq", "AUTO", "marlin", "exllama_v2", "gemm", "torch_awq", "llm-awq"]),
    "modules_to_not_convert": st.none() | _MODULES,
    "do_fuse": st.sampled_from([None, False, True]),
    "fuse_max_seq_len": st.sampled_from([None, 512]),
    "modules_to_fuse": st.sampled_from([None, {"attention": ["q_proj"], "use_alibi": False}]),
    "exllama_config": st.sampled_from([None, {"version": 2, "max_input_len": 2048}]),
    "max_input_length": st.sampled_from([None, 2048]),
    # GPTQConfig's keys: AwqConfig passes them on to GPTQConfig.__init__, which keeps them.
    "damp_percent": st.sampled_from([0.01, 0.1]),
    "desc_act": st.booleans(),
    "sym": st.booleans(),
    "true_sequential": st.booleans(),
    "dataset": st.sampled_from([None, "c4", ["one text"]]),
    "meta": st.sampled_from([None, {"quantizer": ["gptqmodel:2.2.0"]}]),
    **_EXTRAS,
}
_AWQ_ODD: Final[dict[str, tuple[object, ...]]] = {
    "zero_point": ("x", 1),
    "backend": ("foo", None, "LLM-AWQ", "AutoAWQ", "exllama"),
    "modules_to_not_convert": ("visual", [1]),
    "damp_percent": (5, "x"),
}


@st.composite
def awq_dicts(draw: st.DrawFn, good: bool) -> dict[str, object]:
    """AWQ blocks (``good``: 4 bits, agreeing AutoAWQ spellings, one known packing)."""
    d: dict[str, object] = {"quant_method": "awq"}
    if good:
        gs = draw(st.sampled_from([-1, 32, 64, 128]))
        d |= draw(st.fixed_dictionaries({}, optional={"bits": st.just(4), "w_bit": st.just(4), "group_size": st.just(gs)}))
        if draw(st.booleans()):
            d["q_group_size"] = d.get("group_size", 128)
        version = draw(st.sampled_from(_AWQ_VERSIONS))
        for key in draw(st.sampled_from([(), ("version",), ("format",), ("version", "format")])):
            d[key] = draw(st.sampled_from([version, version.upper(), version.lower()]))
    else:
        version_odd = st.one_of(st.sampled_from(_AWQ_VERSIONS), st.sampled_from(["marlin", "exllama", "ipex", None, 3]), _JUNK)
        d |= draw(st.fixed_dictionaries({}, optional={
            "quant_method": st.sampled_from(["awq", "AWQ", "awq_marlin", None]),
            "bits": st.one_of(st.just(4), st.sampled_from([5, 8, 4.0, "4", None]), _JUNK),
            "w_bit": st.sampled_from([4, 8]), "group_size": st.sampled_from([-1, 64, 128, 0]),
            "q_group_size": st.sampled_from([64, 128, 0]),
            "version": version_odd, "format": version_odd, "checkpoint_format": version_odd}))
    return d | draw(_keys(_AWQ_VALID, _AWQ_ODD, good))


_ALL_VALID: Final = {**_BNB_VALID, **_GPTQ_VALID, **_AWQ_VALID, "bits": st.sampled_from([2, 3, 4, 8]),
                     "load_in_4bit": _ODD_FLAG, "load_in_8bit": _ODD_FLAG}


@st.composite
def odd_dicts(draw: st.DrawFn) -> dict[str, object]:
    """Dicts with a miscased, unknown, missing or non-string quant_method, or a whole config.json."""
    if draw(st.integers(0, 4)) == 0:
        inner = draw(st.one_of(gptq_dicts(True), awq_dicts(True), bnb_dicts(True)))
        return {"model_type": "llama", "quantization_config": inner}
    d = draw(st.fixed_dictionaries({}, optional={"quant_method": st.sampled_from(
        ["GPTQ", "AWQ", "Bitsandbytes", "bitsandbytes", "bitsandbytes_4bit", "bitsandbytes_8bit", "gptq ",
         "awq_marlin", "aqlm", "eetq", "", 4, None])}))
    return d | draw(_keys(_ALL_VALID, {}, draw(st.booleans())))


def config_dicts() -> st.SearchStrategy[dict[str, object]]:
    """Every kind of dict above, valid-looking and mixed, in equal parts."""
    return st.one_of(bnb_dicts(True), bnb_dicts(False), gptq_dicts(True), gptq_dicts(False),
                     awq_dicts(True), awq_dicts(False), odd_dicts())


def good_dicts() -> st.SearchStrategy[dict[str, object]]:
    """Dicts that both libraries should accept, for the field and dump comparisons."""
    return st.one_of(bnb_dicts(True), gptq_dicts(True), awq_dicts(True))


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("row", DIVERGENCES, ids=lambda row: row.name)
def test_divergence_is_real(row: Divergence) -> None:
    """Each known divergence's witness falls under that row alone, and the two libraries disagree on it."""
    assert divergences_for(row.witness) == [row.name]
    o = outcome(row.witness)
    assert any_disagreement(o) is not None, f"{row.name}: Transformers and we agree on {row.witness!r}"
    assert isinstance(o.ours, Err) == row.we_reject, o.ours


@settings(max_examples=150, deadline=None)
@given(config_dicts())
def test_family_and_variant_agree(d: dict[str, object]) -> None:
    """Transformers and we accept and reject the same dicts, as the same family and variant (a)."""
    o = outcome(d)
    assert_refused_where_claimed(d, o.ours)
    assert_agrees_or_known(variant_disagreement(o), d)


@settings(max_examples=150, deadline=None)
@given(good_dicts())
def test_typed_fields_agree(d: dict[str, object]) -> None:
    """Where both accept a dict, our typed fields equal Transformers' attributes (b)."""
    assert_agrees_or_known(field_disagreement(outcome(d)), d)


@settings(max_examples=150, deadline=None)
@given(good_dicts())
def test_transformers_dump_agrees(d: dict[str, object]) -> None:
    """Where both accept a dict, dump(style="transformers") is exactly Transformers' to_dict() (c)."""
    assert_agrees_or_known(dump_disagreement(outcome(d)), d)


PINNED: Final[tuple[tuple[str, dict[str, object]], ...]] = (
    ("bnb-both-flags", {"load_in_4bit": True, "load_in_8bit": True}),
    ("bnb-no-flag", {"quant_method": "bitsandbytes", "_load_in_4bit": True}),
    ("bnb-legacy-8bit", {"load_in_8bit": True, "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None}),
    ("bnb-int-flag", {"load_in_4bit": 1}),
    ("bnb-zero-flag", {"quant_method": "awq", "load_in_4bit": 0}),
    ("bnb-8bit-carries-4bit-keys", {"load_in_8bit": True, "bnb_4bit_quant_type": "nf4",
                                    "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}),
    ("bnb-4bit-carries-8bit-keys", {"load_in_4bit": True, "llm_int8_threshold": 5.0, "llm_int8_has_fp16_weight": True}),
    ("gptq-miscased-method", {"quant_method": "GPTQ", "bits": 4}),
    ("gptq-missing-bits", {"quant_method": "gptq"}),
    ("gptq-bits-5", {"quant_method": "gptq", "bits": 5}),
    ("gptq-desc-act", {"quant_method": "gptq", "bits": 4, "desc_act": True, "act_group_aware": True}),
    ("gptq-format-casing", {"quant_method": "gptq", "bits": 4, "format": "gptq_v2", "checkpoint_format": "GPTQ_V2"}),
    ("gptq-calibration-keys", {"quant_method": "gptq", "bits": 4, "dataset": ["a"], "tokenizer": None,
                               "backend": "TRITON", "model_seqlen": 2048, "modules_in_block_to_quantize": [["q"]]}),
    ("missing-quant-method", {"bits": 4, "group_size": 128}),
    ("awq-miscased-version", {"quant_method": "awq", "version": "GEMV_FAST"}),
    ("awq-legacy-fuse-keys", {"quant_method": "awq", "do_fuse": True, "fuse_max_seq_len": 512, "exllama_config": {"version": 2}}),
    ("awq-autoawq-native", {"quant_method": "awq", "w_bit": 4, "q_group_size": 128, "zero_point": True, "version": "gemm"}),
    # Bugs found by this file (see the report): these must agree and do not yet.
    ("awq-llm-backend-casing", {"quant_method": "awq", "backend": "LLM-AWQ"}),
    ("awq-llm-backend-dump", {"quant_method": "awq", "backend": "llm-awq"}),
    ("awq-autoawq-backend-casing", {"quant_method": "awq", "backend": "AutoAWQ"}),
    ("awq-gptq-keys-dump", {"quant_method": "awq", "damp_percent": 0.5, "sym": False, "desc_act": True}),
    ("awq-checkpoint-format", {"quant_method": "awq", "checkpoint_format": "gemv"}),
    ("awq-empty-version", {"quant_method": "awq", "version": ""}),
)


@pytest.mark.parametrize("d", [d for _, d in PINNED], ids=[name for name, _ in PINNED])
def test_pinned_case_agrees(d: dict[str, object]) -> None:
    """Hand-picked dicts outside every divergence agree fully with Transformers: (a), (b) and (c)."""
    assert divergences_for(d) == []
    problem = any_disagreement(outcome(d))
    assert problem is None, f"{problem}\n  input: {d!r}"


REFUSALS: Final[tuple[tuple[str, dict[str, object]], ...]] = (
    ("gptq-format-marlin", {"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}),
    ("bnb-both-flag-types", {"quant_method": "awq", "load_in_8bit": []}),
    # A bug found by this file (see the report): an empty format is read as absent, i.e. as "gptq".
    ("gptq-empty-format", {"quant_method": "gptq", "bits": 4, "format": ""}),
    ("gptq-empty-checkpoint-format", {"quant_method": "gptq", "bits": 4, "checkpoint_format": ""}),
)


@pytest.mark.parametrize("d", [d for _, d in REFUSALS], ids=[name for name, _ in REFUSALS])
def test_pinned_refusal_holds(d: dict[str, object]) -> None:
    """Hand-picked dicts under a divergence that says we refuse them are refused."""
    assert any(row.we_reject for row in DIVERGENCES if row.applies(d)), divergences_for(d)
    assert_refused_where_claimed(d, parse(d))


# --------------------------------------------------------------------------------- (d) real configs

REALWORLD: Final = Path(__file__).resolve().parents[3] / "shared" / "realworld" / "configs"
_FAMILIES: Final = ("bnb-4bit", "bnb-8bit", "gptq", "awq")


def _real_configs() -> list[Any]:
    files = [p for family in _FAMILIES for p in sorted((REALWORLD / family).glob("*.json"))] if REALWORLD.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no real-world corpus at {REALWORLD}"))]
    return [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in files]


@pytest.mark.parametrize("path", _real_configs())
def test_real_config_agrees(path: Path) -> None:
    """A real config parses as the family and variant Transformers reads, and dumps as Transformers writes it (d)."""
    d = json.loads(path.read_text(encoding="utf-8"))
    # A quantize_config.json names no method: we are told it is GPTQ, Transformers is given quant_method.
    default_method = "gptq" if path.parent.name == "gptq" and "quant_method" not in d else None
    o = outcome(d, default_method)
    assert isinstance(o.ours, Ok), o.ours
    assert not isinstance(o.theirs, Exception), o.theirs
    problem = any_disagreement(o)
    assert problem is None, f"{problem}\n  input: {d!r}"


@pytest.mark.parametrize("doc", [
    {"quant_method": "gguf"},
    {"quant_method": "gguf", "gguf_file": "model-Q4_K_M.gguf", "dequantize": True},
])
def test_gguf_transformers_dump_agrees(doc: Raw) -> None:
    """Our Transformers-style dump of a GGUF config is what GgufConfig.to_dict() writes."""
    from transformers import GgufConfig

    parsed = parse(doc)
    assert isinstance(parsed, Ok), parsed
    ours = dump(parsed.value, style="transformers")
    theirs = oracle_json(GgufConfig.from_dict(copy.deepcopy(doc)))
    assert ours == theirs
