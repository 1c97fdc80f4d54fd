"""Raw JSON (or a GGUF header) ↔ typed configs.

``parse`` is total: whatever it is given, it returns ``Ok(config)`` or ``Err(issues)`` listing every
problem, and never raises. ``dump`` writes a config back: by default exactly the document it was
parsed from (``dump(parse(d)) == d``), or, with ``style="transformers"``, exactly what
Transformers 5 writes into ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..configs.base import AbstractQuantConfig
from ..configs.gptq import Gptq as Gptq  # the doctest's
from ..gguf.header import GgufHeader
from ..jsonvalue import MAX_JSON_DEPTH, Json, too_deep, type_name
from ..result import Err, Issue, Issues, Result
from ..result import Ok as Ok
from ..text import quote
from .gguf import GGUF_SPEC, parse_gguf_header
from .registry import register_codec, select_spec, spec_for
from .spec import TooDeepError, TypeSpec, child_path, decode_object, encode_object

__all__ = ["parse", "dump", "locate", "DumpStyle"]

register_codec((GGUF_SPEC,))
from . import families as _families  # noqa: E402, F401  (registers every other family)

DumpStyle = Literal["source", "transformers"]
_METHOD_KEYS = ("quant_method", "load_in_4bit", "load_in_8bit")


def locate(document: Mapping[str, object], at: str = "$") -> tuple[object, str] | None:
    """Find the quantization config inside a whole ``config.json``.

    Looks at ``quantization_config``, then compressed-tensors' legacy ``compression_config``, then
    (as Transformers 5 does for composite models) ``text_config.quantization_config``. Returns the value and its JSON path, or ``None``.

    >>> locate({"model_type": "llava", "text_config": {"quantization_config": {"bits": 4}}})
    ({'bits': 4}, '$.text_config.quantization_config')
    """
    for key in ("quantization_config", "compression_config"):  # the second: compressed-tensors' legacy name
        value = document.get(key)
        if value is not None:
            return value, child_path(at, key)
    text = document.get("text_config")
    if isinstance(text, Mapping) and text.get("quantization_config") is not None:
        return text["quantization_config"], child_path(child_path(at, "text_config"), "quantization_config")
    return None


def parse(raw: object, *, default_method: str | None = None, at: str = "$") -> Result[AbstractQuantConfig, Issues]:
    """Parse a quantization config into its typed value. Never raises.

    Args:
        raw: A ``quantization_config`` object (from ``config.json`` or a user), a whole
            ``config.json`` (the block is found under ``quantization_config`` or
            ``text_config.quantization_config``), a ``quantize_config.json`` / ``quant_config.json``
            object, or a ``GgufHeader``.
        default_method: The method to assume when the object names none: ``read`` passes
            ``"gptq"`` for ``quantize_config.json`` and ``"awq"`` for ``quant_config.json``.
        at: The JSON path of ``raw`` in its document, for issue paths.

    >>> parse({"quant_method": "gptq", "bits": 4, "group_size": -1, "backend": "marlin"}) == Ok(Gptq(bits=4, group_size=-1, backend="marlin"))
    True
    >>> [i.code for i in parse({"quant_method": "GPTQ"}).error]
    ['method.unknown']
    """
    if isinstance(raw, (list, tuple)) and too_deep(raw):
        return Err((_TOO_DEEP(at),))
    try:
        return _parse(raw, default_method, at)
    except (RecursionError, TooDeepError):  # too_deep bounds every recursive walk below
        return Err((_TOO_DEEP(at),))
    except (ValueError, OverflowError) as e:
        return Err((Issue("json.value", at, f"not a JSON value: {quote(str(e))}",
                          "NaN, infinity, non-string keys and Python objects are not JSON"),))


def _TOO_DEEP(at: str) -> Issue:  # noqa: N802 - reads like the constant issue it builds
    return Issue("json.too_deep", at, f"the document nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
                 "no quantization config nests that deep; the file is corrupt or hostile")


def _parse(raw: object, default_method: str | None, at: str) -> Result[AbstractQuantConfig, Issues]:
    if isinstance(raw, GgufHeader):
        return parse_gguf_header(raw)
    if not isinstance(raw, dict):
        return Err((Issue("json.type", at, f"expected a JSON object, got {type_name(raw)}",
                          "pass the quantization_config object, or a whole config.json"),))
    if not any(k in raw for k in _METHOD_KEYS):
        found = locate(raw, at)
        if found is not None:
            return _parse(found[0], default_method, found[1])
    selected = select_spec(raw, at, default_method)
    if isinstance(selected, Err):
        return selected
    spec: TypeSpec[Any] = selected.value
    return decode_object(spec, raw, at)


def dump(config: AbstractQuantConfig, style: DumpStyle = "source") -> dict[str, Json]:
    """Write a config as a JSON object.

    Args:
        config: Any registered config.
        style: ``"source"`` writes the document the config was parsed from, changed only where
            the config was changed (a config built in code is written in full);
            ``"transformers"`` writes what Transformers 5 puts into ``config.json``.

    Raises:
        TypeError: ``config``'s type was never registered, or has no Transformers spelling.

    >>> dump(parse({"quant_method": "awq", "version": "GEMM", "w_bit": 4}).value)
    {'quant_method': 'awq', 'version': 'GEMM', 'w_bit': 4}
    """
    spec = spec_for(type(config))
    if spec is None:
        msg = f"{type(config).__qualname__} has no codec entry; register it with register_codec first"
        raise TypeError(msg)
    if style == "transformers":
        if spec.to_transformers is None:
            raise TypeError(f"Transformers has no config for {type(config).__qualname__}")
        return spec.to_transformers(config)
    return encode_object(spec, config)
