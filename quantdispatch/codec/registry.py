"""The one table of method strings: which config types a JSON ``quant_method`` can name.

Built-in families are registered at import; third parties add theirs with ``register_codec``.
The discriminator rules follow Transformers 5 (``AutoQuantizationConfig.from_dict``): the
bitsandbytes flags come first, then the exact, case-sensitive ``quant_method``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from ..configs.awq import AwqGemm, AwqGemv, AwqGemvFast, AwqLlm, AwqMarlin
from ..configs.base import AbstractQuantConfig
from ..configs.gptq import Gptq, GptqV2
from ..jsonvalue import type_name
from ..result import Err, Issue, Issues, Ok, Result
from ..rules import RegistrationError
from ..text import quote
from .builtin import AWQ_SPECS, BNB4_SPEC, BNB8_SPEC, GPTQ_SPECS
from .spec import TypeSpec, child_path

__all__ = [
    "Family", "TRANSFORMERS_METHODS", "RegistrationError", "register_codec", "spec_for", "select_spec",
    "families", "method_aliases",
]

TRANSFORMERS_METHODS: Final[tuple[str, ...]] = (
    "awq", "bitsandbytes_4bit", "bitsandbytes_8bit", "gptq", "aqlm", "quanto", "eetq", "hqq",
    "compressed-tensors", "fbgemm_fp8", "torchao", "bitnet", "quark", "fp_quant", "higgs", "vptq",
    "spqr", "fp8", "auto-round", "mxfp4", "fouroversix", "gguf", "nvfp4", "mxfp8", "metal", "sinq", "gemma",
)
"""Transformers 5.24's dispatch keys, for telling 'not supported yet' from 'unknown'."""

Selector = Callable[[Mapping[str, object], str], Result[TypeSpec[Any], Issues]]


@attrs.frozen
class Family:
    """All config types one method string can name, and how to pick one from a JSON object.

    Attributes:
        method: The method string.
        specs: Its config types' codec entries.
        select: Picks the type for a JSON object.
        aliases: Legacy method strings read as this one (compressed-tensors' ``sparseml``).
        recognise: Says whether a document that names no method is of this family (ModelOpt's
            ``hf_quant_config.json``); ``None`` when it must be named.
    """

    method: str
    specs: tuple[TypeSpec[Any], ...]
    select: Selector
    aliases: tuple[str, ...] = ()
    recognise: Callable[[Mapping[str, object]], bool] | None = None


_FAMILIES: dict[str, Family] = {}
_ALIASES: dict[str, str] = {}
_RECOGNISERS: list[Family] = []
_SPECS: dict[type[AbstractQuantConfig], TypeSpec[Any]] = {}


def register_codec(specs: tuple[TypeSpec[Any], ...], select: Selector | None = None, *, aliases: tuple[str, ...] = (),
                   recognise: Callable[[Mapping[str, object]], bool] | None = None) -> None:
    """Add a family of config types to the codec, under their method string.

    The method string is the types' own ``method`` (said once, on the type).

    Args:
        specs: The codec entries of the config types one method string names.
        select: Picks the variant for a JSON object; may be left out when there is one spec.
        aliases: Legacy method strings that mean this one.
        recognise: Recognises a document of this family that names no method.

    Raises:
        RegistrationError: The method string or a config type is already registered, the types
            disagree on their method string, or several specs come without a ``select``.
    """
    if not specs or (len(specs) > 1 and select is None):
        raise RegistrationError("give one spec, or several specs and a select function that picks one")
    method = specs[0].cls.method
    if not method:
        raise RegistrationError(f"{specs[0].cls.__qualname__}.method is empty; set the class variable to its method string")
    for name in (method, *aliases):
        if name in _ALIASES:
            raise RegistrationError(f"method string {name!r} is already an alias of {_ALIASES[name]!r}; pick another string")
    if any(a in _FAMILIES for a in aliases):
        raise RegistrationError(f"an alias in {aliases!r} is already a registered method string")
    if method in _FAMILIES or method in ("bitsandbytes_4bit", "bitsandbytes_8bit"):
        owner = _FAMILIES[method].specs[0].cls.__qualname__ if method in _FAMILIES else "bitsandbytes"
        raise RegistrationError(f"method string {method!r} is already registered (by {owner}); pick another string")
    for spec in specs:
        if spec.cls in _SPECS:
            raise RegistrationError(f"{spec.cls.__qualname__} already has a codec entry; register each config type once")
        if spec.cls.method != method:
            msg = f"{spec.cls.__qualname__}.method is {spec.cls.method!r} but {specs[0].cls.__qualname__}.method is {method!r}"
            raise RegistrationError(msg)
    family = Family(method, specs, select or _always(specs[0]), aliases, recognise)
    _FAMILIES[method] = family
    _ALIASES.update((a, method) for a in aliases)
    if recognise is not None:
        _RECOGNISERS.append(family)
    _SPECS.update((spec.cls, spec) for spec in specs)


def _always(spec: TypeSpec[Any]) -> Selector:
    def select(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
        return Ok(spec)

    return select


def spec_for(cls: type[AbstractQuantConfig]) -> TypeSpec[Any] | None:
    """Return the codec entry of a config type, or ``None`` if it was never registered."""
    return _SPECS.get(cls)


def method_aliases() -> dict[str, str]:
    """Legacy method strings and the method each one means."""
    return dict(_ALIASES)


def families() -> tuple[Family, ...]:
    """Every registered family, built-in ones first."""
    return tuple(_FAMILIES.values())


def _format_of(obj: Mapping[str, object], at: str, keys: tuple[str, ...], prefix: str) -> str | Issue | None:
    """Read the variant keys, lower-cased; where several are set they must agree.

    ``keys`` is in Transformers' order of precedence (the first wins there, silently).
    """
    seen: list[tuple[str, str]] = []
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return Issue(f"{prefix}.{key}.type", child_path(at, key), f"expected a string, got {type_name(value)} {quote(value)}")
        seen.append((key, value.lower()))
    for k1, v1 in seen[1:]:
        k0, v0 = seen[0]
        if v1 != v0:
            return Issue(f"{prefix}.{k1}.conflict", child_path(at, k1), f"{k0!r} says {quote(v0)} but {k1!r} says {quote(v1)}",
                         f"Transformers would silently use {quote(v0)}; keep one of them")
    return seen[0][1] if seen else None


_GPTQ_BY_FORMAT: Final = {"gptq": GPTQ_SPECS[0], "gptq_v2": GPTQ_SPECS[1]}
assert GPTQ_SPECS[0].cls is Gptq and GPTQ_SPECS[1].cls is GptqV2


def _select_gptq(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
    fmt = _format_of(obj, at, ("checkpoint_format", "format"), "gptq")
    if isinstance(fmt, Issue):
        return Err((fmt,))
    spec = _GPTQ_BY_FORMAT.get("gptq" if fmt is None else fmt)
    if spec is None:
        key = "checkpoint_format" if "checkpoint_format" in obj else "format"
        return Err((Issue("gptq.format.unsupported", child_path(at, key), f"GPTQ checkpoint format {quote(fmt)} is not supported",
                          "supported: 'gptq' (v1 zero points) and 'gptq_v2'; re-save the model with GPTQModel in one of them"),))
    return Ok(spec)


_AWQ_BY_VERSION: Final = {s.cls.version: s for s in AWQ_SPECS}
assert set(_AWQ_BY_VERSION) == {c.version for c in (AwqGemm, AwqGemv, AwqGemvFast, AwqMarlin, AwqLlm)}


def _select_awq(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
    version = _format_of(obj, at, ("checkpoint_format", "version", "format"), "awq")
    if isinstance(version, Issue):
        return Err((version,))
    backend = obj.get("backend")
    if isinstance(backend, str) and backend.lower() == "llm-awq":
        version = "llm-awq"
    spec = _AWQ_BY_VERSION.get("gemm" if version is None else version)
    if spec is None:
        key = next((k for k in ("checkpoint_format", "version", "format") if obj.get(k) is not None), "version")
        return Err((Issue("awq.version.unsupported", child_path(at, key), f"AWQ version {quote(version)} is not a known packing",
                          "known packings: " + ", ".join(sorted(_AWQ_BY_VERSION))
                          + "; 'exllama' and 'ipex' are kernels, not packings, and Transformers 5 rejects them too"),))
    return Ok(spec)


def _select_bnb(obj: Mapping[str, object], at: str) -> Result[TypeSpec[Any], Issues]:
    issues: list[Issue] = []
    flags: dict[str, bool] = {}
    for key in ("load_in_4bit", "load_in_8bit"):
        value = obj.get(key, False)
        if not isinstance(value, bool):
            issues.append(Issue(f"bnb.{key}.type", child_path(at, key), f"expected a boolean, got {type_name(value)} {quote(value)}"))
        flags[key] = value is True or (not isinstance(value, bool) and bool(value))
    if flags["load_in_4bit"] and flags["load_in_8bit"]:
        issues.append(Issue("bnb.load_in.conflict", at, "load_in_4bit and load_in_8bit are both true",
                            "a bitsandbytes checkpoint is either 4-bit or 8-bit: set one of them to false"))
    qm = obj.get("quant_method")
    if qm is not None and qm != "bitsandbytes":
        issues.append(Issue("bnb.quant_method.conflict", child_path(at, "quant_method"),
                            f"a bitsandbytes flag is true but quant_method is {quote(qm)}",
                            "Transformers silently loads this as bitsandbytes; remove the flag or fix quant_method"))
    if issues:
        return Err(tuple(issues))
    if flags["load_in_4bit"]:
        return Ok(BNB4_SPEC)
    if flags["load_in_8bit"]:
        return Ok(BNB8_SPEC)
    hint = "set load_in_4bit or load_in_8bit to true"
    if obj.get("_load_in_4bit") is True or obj.get("_load_in_8bit") is True:
        hint += " (only the private _load_in_* keys are set; Transformers reads the public ones)"
    return Err((Issue("bnb.load_in.missing", at, "quant_method is 'bitsandbytes' but neither load_in_4bit nor load_in_8bit is true", hint),))


def select_spec(obj: Mapping[str, object], at: str, default_method: str | None = None) -> Result[TypeSpec[Any], Issues]:
    """Pick the config type a JSON object describes (Transformers' discriminator, made total)."""
    if any(obj.get(k) not in (None, False) for k in ("load_in_4bit", "load_in_8bit")):
        return _select_bnb(obj, at)
    qm = obj.get("quant_method", default_method)
    if qm is None:
        recognised = next((f for f in _RECOGNISERS if f.recognise is not None and f.recognise(obj)), None)
        if recognised is not None:
            return recognised.select(obj, at)
        return Err((Issue("method.missing", at, "no quant_method and no bitsandbytes flag",
                          "add \"quant_method\" (e.g. \"gptq\", \"awq\") or load_in_4bit/load_in_8bit"),))
    where = child_path(at, "quant_method")
    if not isinstance(qm, str):
        return Err((Issue("method.type", where, f"expected a string, got {type_name(qm)} {quote(qm)}"),))
    if qm == "bitsandbytes":
        return _select_bnb(obj, at)
    family = _FAMILIES.get(qm) or _FAMILIES.get(_ALIASES.get(qm, ""))
    if family is not None:
        return family.select(obj, at)
    return Err((_unknown_method(qm, where),))


def _unknown_method(qm: str, where: str) -> Issue:
    if qm in TRANSFORMERS_METHODS:
        return Issue("method.unsupported", where, f"{quote(qm)} is a Transformers method that quantdispatch does not support yet",
                     "supported: " + ", ".join(sorted({"bitsandbytes", *_FAMILIES})))
    known = sorted({"bitsandbytes", *_FAMILIES, *_ALIASES, *TRANSFORMERS_METHODS} - {"bitsandbytes_4bit", "bitsandbytes_8bit"})
    exact = [k for k in known if k.lower() == qm.lower()]
    close = exact or (difflib.get_close_matches(qm, known, n=1, cutoff=0.6) if len(qm) <= 64 else [])
    hint = f"did you mean {close[0]!r}? method strings are exact and case-sensitive" if close else "known: " + ", ".join(known)
    return Issue("method.unknown", where, f"unknown quantization method {quote(qm)}", hint)


register_codec((BNB4_SPEC, BNB8_SPEC), _select_bnb)
register_codec(GPTQ_SPECS, _select_gptq)
register_codec(AWQ_SPECS, _select_awq)
