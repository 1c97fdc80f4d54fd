"""The codec entries of the built-in config types: fields, tags and Transformers' spelling."""

from __future__ import annotations

from typing import Any

from ..configs.awq import AWQ_BITS, AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast, AwqLlm, AwqMarlin
from ..configs.bnb import BNB_QUANT_STORAGE, BNB_QUANT_TYPES, AbstractBnb, Bnb4Bit, Bnb8Bit
from ..configs.gptq import GPTQ_BITS, AbstractGptq, Gptq, GptqV2
from ..dtypes import DType
from ..jsonvalue import Json, thaw
from . import fields as F
from .fields import FieldSpec
from .spec import TypeSpec

__all__ = ["BNB4_SPEC", "BNB8_SPEC", "GPTQ_SPECS", "AWQ_SPECS"]

# ---------------------------------------------------------------------------------- bitsandbytes
BNB_TAG_KEYS = ("quant_method", "load_in_4bit", "load_in_8bit", "_load_in_4bit", "_load_in_8bit")

_SKIP = FieldSpec("llm_int8_skip_modules", "skip_modules", F.optional(F.string_tuple), F.encode_tuple, None)
_OFFLOAD = FieldSpec("llm_int8_enable_fp32_cpu_offload", "enable_fp32_cpu_offload", F.boolean, F.PLAIN, False)
_THRESHOLD: FieldSpec[float] = FieldSpec("llm_int8_threshold", "threshold", F.number(lo=0.0), F.PLAIN, 6.0)
_FP16_WEIGHT = FieldSpec("llm_int8_has_fp16_weight", "has_fp16_weight", F.boolean, F.PLAIN, False)
_QUANT_TYPE = FieldSpec(
    "bnb_4bit_quant_type", "quant_type",
    F.one_of(BNB_QUANT_TYPES, "bitsandbytes 4-bit has two data types: 'nf4' and 'fp4'"), F.PLAIN, "fp4",
)
_COMPUTE: FieldSpec[DType] = FieldSpec(
    "bnb_4bit_compute_dtype", "compute_dtype", F.optional_default(F.dtype(), DType.FLOAT32), F.encode_dtype, DType.FLOAT32
)
_DOUBLE = FieldSpec("bnb_4bit_use_double_quant", "use_double_quant", F.boolean, F.PLAIN, False)
_STORAGE: FieldSpec[DType] = FieldSpec(
    "bnb_4bit_quant_storage", "quant_storage", F.optional_default(F.dtype(BNB_QUANT_STORAGE), DType.UINT8),
    F.encode_dtype, DType.UINT8,
)


def _inert(f: FieldSpec[Any]) -> FieldSpec[Any]:
    return FieldSpec(f.key, None, f.decode, f.encode, f.default, aliases=f.aliases)


def _bnb_transformers(c: AbstractBnb) -> dict[str, Json]:
    four = isinstance(c, Bnb4Bit)
    b4 = c if isinstance(c, Bnb4Bit) else Bnb4Bit()
    b8 = c if isinstance(c, Bnb8Bit) else Bnb8Bit()
    return {
        "quant_method": "bitsandbytes",
        "_load_in_8bit": not four,
        "_load_in_4bit": four,
        "llm_int8_threshold": _wire_or(c, "llm_int8_threshold", b8.threshold),
        "llm_int8_skip_modules": F.encode_tuple(c.skip_modules),
        "llm_int8_enable_fp32_cpu_offload": c.enable_fp32_cpu_offload,
        "llm_int8_has_fp16_weight": _wire_or(c, "llm_int8_has_fp16_weight", b8.has_fp16_weight),
        "bnb_4bit_quant_type": _wire_or(c, "bnb_4bit_quant_type", b4.quant_type),
        "bnb_4bit_use_double_quant": _wire_or(c, "bnb_4bit_use_double_quant", b4.use_double_quant),
        "bnb_4bit_compute_dtype": _wire_dtype(c, "bnb_4bit_compute_dtype", b4.compute_dtype),
        "bnb_4bit_quant_storage": _wire_dtype(c, "bnb_4bit_quant_storage", b4.quant_storage),
        "load_in_4bit": four,
        "load_in_8bit": not four,
    }


def _wire_or(c: Any, key: str, value: Json) -> Json:
    """The value Transformers keeps: ours where the field is modelled, else the source's."""
    if c.wire.has(key) and not _models(c, key):
        raw = thaw(c.wire.get(key))
        return float(raw) if key == "llm_int8_threshold" and isinstance(raw, int) else raw
    return value


def _wire_dtype(c: Any, key: str, value: DType) -> Json:
    if c.wire.has(key) and not _models(c, key):
        raw = thaw(c.wire.get(key))
        found = DType.from_json(raw) if isinstance(raw, str) else None
        return found.value if found else value.value
    return value.value


def _models(c: Any, key: str) -> bool:
    spec = BNB4_SPEC if isinstance(c, Bnb4Bit) else BNB8_SPEC
    f = spec.field_for(key)
    return f is not None and f.attr is not None


BNB4_SPEC: TypeSpec[Bnb4Bit] = TypeSpec(
    Bnb4Bit, "bnb",
    tags=(("quant_method", "bitsandbytes"), ("load_in_4bit", True), ("load_in_8bit", False)),
    tag_keys=BNB_TAG_KEYS,
    fields=(_QUANT_TYPE, _COMPUTE, _DOUBLE, _STORAGE, _SKIP, _OFFLOAD, _inert(_THRESHOLD), _inert(_FP16_WEIGHT)),
    to_transformers=_bnb_transformers,
)
BNB8_SPEC: TypeSpec[Bnb8Bit] = TypeSpec(
    Bnb8Bit, "bnb",
    tags=(("quant_method", "bitsandbytes"), ("load_in_4bit", False), ("load_in_8bit", True)),
    tag_keys=BNB_TAG_KEYS,
    fields=(_THRESHOLD, _FP16_WEIGHT, _SKIP, _OFFLOAD,
            _inert(_QUANT_TYPE), _inert(_COMPUTE), _inert(_DOUBLE), _inert(_STORAGE)),
    to_transformers=_bnb_transformers,
)

# ------------------------------------------------------------------------------------------ GPTQ
GPTQ_TAG_KEYS = ("quant_method", "format", "checkpoint_format")

_OPT_INT = F.optional(F.integer(lo=0))
_OPT_STR = F.optional(F.text)
GPTQ_FIELDS: tuple[FieldSpec[Any], ...] = (
    FieldSpec("bits", "bits", F.one_of(GPTQ_BITS, "GPTQ packs 2, 3, 4 or 8 bits"), F.PLAIN, 4, required=True),
    FieldSpec("group_size", "group_size", F.integer(lo=1, also=(-1,)), F.PLAIN, 128),
    FieldSpec("desc_act", "desc_act", F.boolean, F.PLAIN, False),
    FieldSpec("sym", "sym", F.boolean, F.PLAIN, True),
    FieldSpec("true_sequential", "true_sequential", F.boolean, F.PLAIN, True),
    FieldSpec("damp_percent", "damp_percent", F.number(0.0, 1.0, open_interval=True), F.PLAIN, 0.1),
    FieldSpec("static_groups", "static_groups", F.boolean, F.PLAIN, False),
    FieldSpec("act_group_aware", "act_group_aware", F.boolean, F.PLAIN, True),
    FieldSpec("modules_in_block_to_quantize", "modules_in_block_to_quantize",
              F.optional(F.nested_string_tuple), F.encode_nested, None),
    FieldSpec("lm_head", "lm_head", F.boolean, F.PLAIN, False),
    FieldSpec("meta", "meta", F.optional(F.json_object), F.encode_object, None),
    # Calibration-time and loading-time settings: checked, kept verbatim, not part of the value.
    FieldSpec("tokenizer", None, F.any_json, F.PLAIN, None),
    FieldSpec("dataset", None, F.optional(F.dataset), F.PLAIN, None),
    FieldSpec("backend", None, _OPT_STR, F.PLAIN, None),
    FieldSpec("model_seqlen", None, _OPT_INT, F.PLAIN, None),
    FieldSpec("block_name_to_quantize", None, _OPT_STR, F.PLAIN, None),
    FieldSpec("module_name_preceding_first_block", None, F.optional(F.string_tuple), F.PLAIN, None),
    FieldSpec("batch_size", None, F.integer(lo=1), F.PLAIN, 1),
    FieldSpec("pad_token_id", None, _OPT_INT, F.PLAIN, None),
    FieldSpec("max_input_length", None, _OPT_INT, F.PLAIN, None),
    FieldSpec("cache_block_outputs", None, F.boolean, F.PLAIN, True),
    # Transformers 4.x ExLlama switches, ignored since 5.0.
    FieldSpec("use_exllama", None, F.optional(F.boolean), F.PLAIN, None),
    FieldSpec("disable_exllama", None, F.optional(F.boolean), F.PLAIN, None),
    FieldSpec("use_cuda_fp16", None, F.optional(F.boolean), F.PLAIN, None),
    FieldSpec("exllama_config", None, F.optional(F.json_object), F.PLAIN, None),
)
_GPTQ_TF_ORDER = (
    "bits", "tokenizer", "dataset", "group_size", "damp_percent", "desc_act", "act_group_aware", "sym",
    "true_sequential", "format", "meta", "backend", "model_seqlen", "block_name_to_quantize",
    "module_name_preceding_first_block", "batch_size", "pad_token_id", "max_input_length",
    "cache_block_outputs", "modules_in_block_to_quantize",
)


def _gptq_like_transformers(c: AbstractGptq | AbstractAwq, fmt: str, specs: tuple[FieldSpec[Any], ...]) -> dict[str, Json]:
    out: dict[str, Json] = {"quant_method": c.method}
    for key in _GPTQ_TF_ORDER:
        f = next((f for f in specs if f.key == key), None)
        if key == "format":
            out[key] = fmt
        elif f is not None and f.attr is not None and hasattr(c, f.attr):
            out[key] = f.encode(getattr(c, f.attr))
        elif c.wire.has(key):
            out[key] = thaw(c.wire.get(key))
        elif key in c.extras:
            out[key] = thaw(c.extras.get(key))
        else:
            out[key] = f.default if f is not None else None
    out["backend"] = _transformers_backend(out.get("backend"), isinstance(c, AbstractAwq))
    if out["desc_act"] is True and not isinstance(c, AbstractAwq):
        out["act_group_aware"] = False
    return out


def _transformers_backend(raw: Json, awq: bool) -> Json:
    """The backend Transformers stores: AWQ maps exactly "autoawq" and (any case) "llm-awq" to "auto"."""
    if raw is None or (awq and raw == "autoawq"):
        return "auto"
    value = raw.lower() if isinstance(raw, str) else raw
    return "auto" if awq and value == "llm-awq" else value


def _gptq_transformers(c: AbstractGptq) -> dict[str, Json]:
    out = _gptq_like_transformers(c, c.checkpoint_format, GPTQ_FIELDS)
    out["checkpoint_format"] = c.checkpoint_format
    return out


GPTQ_SPECS: tuple[TypeSpec[Any], ...] = tuple(
    TypeSpec(cls, "gptq", tags=(("quant_method", "gptq"), ("format", cls.checkpoint_format)),
             tag_keys=GPTQ_TAG_KEYS, fields=GPTQ_FIELDS, loading_attributes=("max_input_length", "backend"),
             to_transformers=_gptq_transformers)
    for cls in (Gptq, GptqV2)
)

# ------------------------------------------------------------------------------------------- AWQ
AWQ_TAG_KEYS = ("quant_method", "version", "format", "checkpoint_format")

AWQ_FIELDS: tuple[FieldSpec[Any], ...] = (
    FieldSpec("bits", "bits", F.one_of(AWQ_BITS, "AWQ packings exist for 4-bit weights only"), F.PLAIN, 4,
              aliases=("w_bit",)),
    FieldSpec("group_size", "group_size", F.integer(lo=1, also=(-1,)), F.PLAIN, 128, aliases=("q_group_size",)),
    FieldSpec("zero_point", "zero_point", F.boolean, F.PLAIN, True),
    FieldSpec("modules_to_not_convert", "modules_to_not_convert", F.optional(F.string_tuple), F.encode_tuple, None),
    FieldSpec("backend", None, _OPT_STR, F.PLAIN, None),
    FieldSpec("max_input_length", None, _OPT_INT, F.PLAIN, None),
    # AutoAWQ / Transformers 4.x fusing and ExLlama settings, ignored since Transformers 5.
    FieldSpec("do_fuse", None, F.optional(F.boolean), F.PLAIN, None),
    FieldSpec("fuse_max_seq_len", None, _OPT_INT, F.PLAIN, None),
    FieldSpec("modules_to_fuse", None, F.optional(F.json_object), F.PLAIN, None),
    FieldSpec("exllama_config", None, F.optional(F.json_object), F.PLAIN, None),
)


def _awq_transformers(c: AbstractAwq) -> dict[str, Json]:
    gptq_like = _gptq_like_transformers(c, c.version, AWQ_FIELDS + GPTQ_FIELDS)
    out: dict[str, Json] = {
        "quant_method": "awq", "zero_point": c.zero_point,
        "modules_to_not_convert": F.encode_tuple(c.modules_to_not_convert),
    }
    out.update((k, v) for k, v in gptq_like.items() if k != "quant_method")
    out["quant_method"] = "awq"
    out["version"] = c.version
    return out


AWQ_SPECS: tuple[TypeSpec[Any], ...] = tuple(
    TypeSpec(cls, "awq", tags=(("quant_method", "awq"), ("version", cls.version)),
             tag_keys=AWQ_TAG_KEYS, fields=AWQ_FIELDS, loading_attributes=("max_input_length", "backend"),
             to_transformers=_awq_transformers)
    for cls in (AwqGemm, AwqGemv, AwqGemvFast, AwqMarlin, AwqLlm)
)
