"""GGUF: from a file header, or from the JSON ``dump`` writes, to the ``Gguf`` config."""

from __future__ import annotations

from typing import Any

from ..configs.gguf import Gguf, GgufTensor
from ..gguf._layout import duplicate_issue
from ..gguf.header import GgufHeader, TensorInfo
from ..gguf.types import REMOVED_GGML_TYPES, ROW_MISALIGNED, GgmlType, LlamaFileType, duplicate_names, misaligned_row
from ..jsonvalue import Json, type_name
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote
from . import fields as F
from .fields import FieldSpec, Problem, field
from .spec import TypeSpec

__all__ = ["GGUF_SPEC", "parse_gguf_header", "tensor_issues"]


def _file_type(value: object) -> LlamaFileType | None | Problem:
    """Accept the recipe name (``"MOSTLY_Q4_K_M"`` or ``"Q4_K_M"``) or the integer id."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value in LlamaFileType._value2member_map_:
            return LlamaFileType(value)
        return Problem("unknown", f"general.file_type {value} is not a known llama file type")
    if isinstance(value, str):
        for ft in LlamaFileType:
            if value in (ft.name, ft.recipe):
                return ft
        return Problem("unknown", f"{value!r} is not a known llama file type", "write a name such as 'Q4_K_M'")
    return Problem("type", f"expected a file-type name or id, got {type_name(value)} {value!r}")


_MAX_DIM = 2**63 - 1


def _tensor(value: object, i: int) -> GgufTensor | Problem:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(value.get("type"), str):
        return Problem("type", f"expected an object with string 'name' and 'type', got {quote(value)}", at=f"[{i}]")
    shape = value.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM for d in shape):
        return Problem("type", f"expected an array of non-negative 64-bit integers, got {quote(shape)}", at=f"[{i}].shape")
    try:
        t = GgmlType[value["type"]]
    except KeyError:
        return Problem("unknown", f"{quote(value['type'])} is not a GGML type", at=f"[{i}].type")
    return GgufTensor(value["name"], t, tuple(shape))


def _tensors(value: object) -> tuple[GgufTensor, ...] | Problem:
    if not isinstance(value, list):
        return Problem("type", f"expected an array of tensors, got {type_name(value)}")
    out: list[GgufTensor] = []
    for i, item in enumerate(value):
        t = _tensor(item, i)
        if isinstance(t, Problem):
            return t
        out.append(t)
    return tuple(out)


def _encode_tensors(value: tuple[GgufTensor, ...]) -> Json:
    return [{"name": t.name, "type": t.ggml_type.name, "shape": list(t.shape)} for t in value]


def _encode_file_type(value: LlamaFileType | None) -> Json:
    return None if value is None else value.name


GGUF_FIELDS: tuple[FieldSpec[Any], ...] = (
    field(Gguf, "architecture", F.optional(F.text)),
    field(Gguf, "file_type", _file_type, _encode_file_type),
    field(Gguf, "quantization_version", F.optional(F.integer(lo=0))),
    field(Gguf, "tensors", _tensors, _encode_tensors),
    # Transformers' GgufConfig keys: loading attributes, not facts about the file.
    field(Gguf, "gguf_file", F.optional(F.text), omit_default=True),
    field(Gguf, "dequantize", F.boolean, omit_default=True),
)


def _gguf_transformers(c: Gguf) -> dict[str, Json]:
    """Transformers' ``GgufConfig``: only loading options (the file itself describes the rest)."""
    return {"quant_method": "gguf", "gguf_file": c.gguf_file, "dequantize": c.dequantize}


GGUF_SPEC: TypeSpec[Gguf] = TypeSpec(
    Gguf, fields=GGUF_FIELDS, loading_attributes=("gguf_file", "dequantize"), to_transformers=_gguf_transformers,
)


def _tensor_issue(i: int, info: TensorInfo) -> GgufTensor | Issue:
    at = f"$.tensors[{i}]"
    if info.ggml_type not in GgmlType._value2member_map_:
        old = REMOVED_GGML_TYPES.get(info.ggml_type)
        name = quote(info.name)
        if old is not None:
            return Issue("gguf.tensor.type_removed", at, f"tensor {name} has type {info.ggml_type} ({old}), which ggml no longer reads",
                         "re-convert the model with a current llama.cpp")
        return Issue("gguf.tensor.type_unknown", at, f"tensor {name} has unknown GGML type id {info.ggml_type}",
                     "the file may be newer than this library, or corrupt")
    return GgufTensor(info.name, GgmlType(info.ggml_type), info.shape)


def tensor_issues(config: Gguf) -> Issues:
    """The rules across a ``Gguf``'s tensors (unique names, whole-block rows), in linear time."""
    issues = [duplicate_issue(i, j, config.tensors[i].name) for i, j in duplicate_names(t.name for t in config.tensors)]
    for i, t in enumerate(config.tensors):
        why = misaligned_row(t.ggml_type, t.shape[0]) if t.shape else None
        if why is not None:
            issues.append(Issue(ROW_MISALIGNED, f"$.tensors[{i}]", f"tensor {quote(t.name)}: {why}"))
    return tuple(issues)


def parse_gguf_header(header: GgufHeader) -> Result[Gguf, Issues]:
    """Build the ``Gguf`` config from a file header, checking every tensor's type and shape."""
    issues: list[Issue] = []
    tensors: list[GgufTensor] = []
    for i, info in enumerate(header.tensors):
        t = _tensor_issue(i, info)
        (issues if isinstance(t, Issue) else tensors).append(t)  # type: ignore[arg-type]
    arch = header.get("general.architecture")
    if arch is not None and not isinstance(arch, str):
        issues.append(Issue("gguf.architecture.type", '$.metadata["general.architecture"]', f"expected a string, got {quote(arch)}"))
    ft = _file_type(header.get("general.file_type"))
    if isinstance(ft, Problem):
        issues.append(Issue(f"gguf.file_type.{ft.kind}", '$.metadata["general.file_type"]', ft.message, ft.hint))
    qv = header.get("general.quantization_version")
    if qv is not None and (not isinstance(qv, int) or isinstance(qv, bool)):
        issues.append(Issue("gguf.quantization_version.type", '$.metadata["general.quantization_version"]', f"expected an integer, got {quote(qv)}"))
    if issues:
        return Err(tuple(issues))
    return Ok(Gguf(
        architecture=arch if isinstance(arch, str) else None,
        file_type=ft if isinstance(ft, LlamaFileType) else None,
        tensors=tuple(tensors),
        quantization_version=qv if isinstance(qv, int) else None,
    ))
