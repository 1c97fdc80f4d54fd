"""The codec entries of the built-in config types: fields, tags and Transformers' spelling."""

from __future__ import annotations

from typing import Any

from ..configs.awq import AWQ_BITS, AbstractAwq, AwqGemm, AwqGemv, AwqGemvFast, AwqLlm, AwqMarlin
from ..configs.bnb import BNB_QUANT_STORAGE, BNB_QUANT_TYPES, AbstractBnb, Bnb4Bit, Bnb8Bit
from ..configs.gptq import GPTQ_BITS, AbstractGptq, Gptq, GptqV2
from ..dtypes import DType
from ..jsonvalue import Json, thaw
from . import fields as F
from .fields import FieldSpec, field, inert
from .spec import TypeSpec

__all__ = ["BNB4_SPEC", "BNB8_SPEC", "GPTQ_SPECS", "AWQ_SPECS"]

# ---------------------------------------------------------------------------------- bitsandbytes
BNB_TAG_KEYS = ("quant_method", "load_in_4bit", "load_in_8bit", "_load_in_4bit", "_load_in_8bit")

_SKIP = field(AbstractBnb, "skip_modules", F.optional(F.string_tuple), F.encode_tuple, key="llm_int8_skip_modules")
_OFFLOAD = field(AbstractBnb, "enable_fp32_cpu_offload", F.boolean, key="llm_int8_enable_fp32_cpu_offload")
_THRESHOLD: FieldSpec[float] = field(Bnb8Bit, "threshold", F.number(lo=0.0), key="llm_int8_threshold")
_FP16_WEIGHT = field(Bnb8Bit, "has_fp16_weight", F.boolean, key="llm_int8_has_fp16_weight")
_QUANT_TYPE = field(
    Bnb4Bit, "quant_type", F.one_of(BNB_QUANT_TYPES, "bitsandbytes 4-bit has two data types: 'nf4' and 'fp4'"),
    key="bnb_4bit_quant_type",
)
_COMPUTE: FieldSpec[DType] = field(
    Bnb4Bit, "compute_dtype", F.optional_default(F.dtype(), DType.FLOAT32), F.encode_dtype, key="bnb_4bit_compute_dtype"
)
_DOUBLE = field(Bnb4Bit, "use_double_quant", F.boolean, key="bnb_4bit_use_double_quant")
_STORAGE: FieldSpec[DType] = field(
    Bnb4Bit, "quant_storage", F.optional_default(F.dtype(BNB_QUANT_STORAGE), DType.UINT8), F.encode_dtype,
    key="bnb_4bit_quant_storage",
)


def _inert(f: FieldSpec[Any]) -> FieldSpec[Any]:
    """The other variant's key: Transformers writes it in every bnb config; it means nothing here."""
    return inert(f.key, f.decode)


def _extra_or(c: AbstractBnb, key: str, default: Json) -> Json:
    """What Transformers keeps for the other variant's key: the source's value, else its default."""
    raw = c.extras.get(key) if key in c.extras else None
    if raw is None:
        return default
    value = thaw(raw)
    if key == "llm_int8_threshold" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if key.endswith("_dtype") or key.endswith("_storage"):
        found = DType.from_json(value) if isinstance(value, str) else None
        return found.value if found else default
    return value


def _bnb_transformers(c: AbstractBnb) -> dict[str, Json]:
    four = isinstance(c, Bnb4Bit)
    b4 = c if isinstance(c, Bnb4Bit) else Bnb4Bit()
    b8 = c if isinstance(c, Bnb8Bit) else Bnb8Bit()
    other: dict[str, Json] = {
        "llm_int8_threshold": b8.threshold, "llm_int8_has_fp16_weight": b8.has_fp16_weight,
        "bnb_4bit_quant_type": b4.quant_type, "bnb_4bit_use_double_quant": b4.use_double_quant,
        "bnb_4bit_compute_dtype": b4.compute_dtype.value, "bnb_4bit_quant_storage": b4.quant_storage.value,
    }
    if four:
        for key in ("llm_int8_threshold", "llm_int8_has_fp16_weight"):
            other[key] = _extra_or(c, key, other[key])
    else:
        for key in ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            other[key] = _extra_or(c, key, other[key])
    return {
        "quant_method": "bitsandbytes",
        "_load_in_8bit": not four,
        "_load_in_4bit": four,
        "llm_int8_threshold": other["llm_int8_threshold"],
        "llm_int8_skip_modules": F.encode_tuple(c.skip_modules),
        "llm_int8_enable_fp32_cpu_offload": c.enable_fp32_cpu_offload,
        "llm_int8_has_fp16_weight": other["llm_int8_has_fp16_weight"],
        "bnb_4bit_quant_type": other["bnb_4bit_quant_type"],
        "bnb_4bit_use_double_quant": other["bnb_4bit_use_double_quant"],
        "bnb_4bit_compute_dtype": other["bnb_4bit_compute_dtype"],
        "bnb_4bit_quant_storage": other["bnb_4bit_quant_storage"],
        "load_in_4bit": four,
        "load_in_8bit": not four,
    }


BNB4_SPEC: TypeSpec[Bnb4Bit] = TypeSpec(
    Bnb4Bit, prefix="bnb", variant=(("load_in_4bit", True), ("load_in_8bit", False)), tag_keys=BNB_TAG_KEYS,
    fields=(_QUANT_TYPE, _COMPUTE, _DOUBLE, _STORAGE, _SKIP, _OFFLOAD, _inert(_THRESHOLD), _inert(_FP16_WEIGHT)),
    loading_attributes=("enable_fp32_cpu_offload",), to_transformers=_bnb_transformers,
)
BNB8_SPEC: TypeSpec[Bnb8Bit] = TypeSpec(
    Bnb8Bit, prefix="bnb", variant=(("load_in_4bit", False), ("load_in_8bit", True)), tag_keys=BNB_TAG_KEYS,
    fields=(_THRESHOLD, _FP16_WEIGHT, _SKIP, _OFFLOAD,
            _inert(_QUANT_TYPE), _inert(_COMPUTE), _inert(_DOUBLE), _inert(_STORAGE)),
    loading_attributes=("enable_fp32_cpu_offload",), to_transformers=_bnb_transformers,
)

# ------------------------------------------------------------------------------------------ GPTQ
GPTQ_TAG_KEYS = ("quant_method", "format", "checkpoint_format")

_OPT_INT = F.optional(F.integer(lo=0))
_OPT_STR = F.optional(F.text)
_OPT_BOOL = F.optional(F.boolean)
_OPT_OBJ = F.optional(F.json_object)
GPTQ_LOADING = ("backend", "max_input_length", "use_exllama", "disable_exllama", "use_cuda_fp16", "exllama_config")
GPTQ_FIELDS: tuple[FieldSpec[Any], ...] = (
    field(AbstractGptq, "bits", F.one_of(GPTQ_BITS, "GPTQ packs 2, 3, 4 or 8 bits")),
    field(AbstractGptq, "group_size", F.integer(lo=1, also=(-1,))),
    field(AbstractGptq, "desc_act", F.boolean),
    field(AbstractGptq, "sym", F.boolean),
    field(AbstractGptq, "true_sequential", F.boolean),
    field(AbstractGptq, "damp_percent", F.number(0.0, 1.0, open_interval=True)),
    field(AbstractGptq, "static_groups", F.boolean),
    field(AbstractGptq, "act_group_aware", F.boolean),
    field(AbstractGptq, "modules_in_block_to_quantize", F.optional(F.nested_string_tuple), F.encode_nested),
    field(AbstractGptq, "lm_head", F.boolean),
    field(AbstractGptq, "meta", _OPT_OBJ, F.encode_object),
    # Loading attributes: typed, because they change what a load does.
    field(AbstractGptq, "backend", _OPT_STR, omit_default=True),
    field(AbstractGptq, "max_input_length", _OPT_INT, omit_default=True),
    field(AbstractGptq, "use_exllama", _OPT_BOOL, omit_default=True),
    field(AbstractGptq, "disable_exllama", _OPT_BOOL, omit_default=True),
    field(AbstractGptq, "use_cuda_fp16", _OPT_BOOL, omit_default=True),
    field(AbstractGptq, "exllama_config", _OPT_OBJ, F.encode_object, omit_default=True),
    # Calibration-time settings: checked, then kept in extras.
    inert("tokenizer", F.any_json),
    inert("dataset", F.optional(F.dataset)),
    inert("model_seqlen", _OPT_INT),
    inert("block_name_to_quantize", _OPT_STR),
    inert("module_name_preceding_first_block", F.optional(F.string_tuple)),
    inert("batch_size", F.integer(lo=1)),
    inert("pad_token_id", _OPT_INT),
    inert("cache_block_outputs", F.boolean),
)
_GPTQ_TF_DEFAULTS: dict[str, Json] = {"batch_size": 1, "cache_block_outputs": True}
_GPTQ_TF_ORDER = (
    "bits", "tokenizer", "dataset", "group_size", "damp_percent", "desc_act", "act_group_aware", "sym",
    "true_sequential", "format", "meta", "backend", "model_seqlen", "block_name_to_quantize",
    "module_name_preceding_first_block", "batch_size", "pad_token_id", "max_input_length",
    "cache_block_outputs", "modules_in_block_to_quantize",
)


def _gptq_like_transformers(c: AbstractGptq | AbstractAwq, fmt: str, specs: tuple[FieldSpec[Any], ...]) -> dict[str, Json]:
    out: dict[str, Json] = {"quant_method": c.method}
    by_key: dict[str, FieldSpec[Any]] = {}
    for spec in specs:
        by_key.setdefault(spec.key, spec)
    for key in _GPTQ_TF_ORDER:
        f = by_key.get(key)
        if key == "format":
            out[key] = fmt
        elif f is not None and f.attr is not None and hasattr(c, f.attr):
            out[key] = f.encode(getattr(c, f.attr))
        elif key in c.extras:
            out[key] = thaw(c.extras.get(key))
        else:
            out[key] = _GPTQ_TF_DEFAULTS.get(key, f.default if f is not None and f.attr is not None else None)
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
    TypeSpec(cls, variant=(("format", cls.checkpoint_format),), tag_keys=GPTQ_TAG_KEYS, fields=GPTQ_FIELDS,
             loading_attributes=GPTQ_LOADING, to_transformers=_gptq_transformers)
    for cls in (Gptq, GptqV2)
)

# ------------------------------------------------------------------------------------------- AWQ
AWQ_TAG_KEYS = ("quant_method", "version", "format", "checkpoint_format")
AWQ_LOADING = ("backend", "max_input_length", "do_fuse", "fuse_max_seq_len", "modules_to_fuse", "exllama_config")

AWQ_FIELDS: tuple[FieldSpec[Any], ...] = (
    field(AbstractAwq, "bits", F.one_of(AWQ_BITS, "AWQ packings exist for 4-bit weights only"), aliases=("w_bit",)),
    field(AbstractAwq, "group_size", F.integer(lo=1, also=(-1,)), aliases=("q_group_size",)),
    field(AbstractAwq, "zero_point", F.boolean),
    field(AbstractAwq, "modules_to_not_convert", F.optional(F.string_tuple), F.encode_tuple),
    field(AbstractAwq, "backend", _OPT_STR, omit_default=True),
    field(AbstractAwq, "max_input_length", _OPT_INT, omit_default=True),
    # AutoAWQ / Transformers 4.x fusing and ExLlama settings (ignored by Transformers 5, honoured
    # by other loaders): loading attributes.
    field(AbstractAwq, "do_fuse", _OPT_BOOL, omit_default=True),
    field(AbstractAwq, "fuse_max_seq_len", _OPT_INT, omit_default=True),
    field(AbstractAwq, "modules_to_fuse", _OPT_OBJ, F.encode_object, omit_default=True),
    field(AbstractAwq, "exllama_config", _OPT_OBJ, F.encode_object, omit_default=True),
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
    TypeSpec(cls, variant=(("version", cls.version),), tag_keys=AWQ_TAG_KEYS, fields=AWQ_FIELDS,
             loading_attributes=AWQ_LOADING, to_transformers=_awq_transformers)
    for cls in (AwqGemm, AwqGemv, AwqGemvFast, AwqMarlin, AwqLlm)
)
