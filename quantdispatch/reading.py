"""Reading quantization metadata from disk: the only place that opens files for it.

``read(path)`` accepts a model directory, a JSON file (``config.json``, ``quantize_config.json``,
``quant_config.json`` or a bare quantization config) or a ``.gguf`` file, and returns a ``Source``:
the raw metadata and where it came from, or an ``Err`` with coded issues. It never half-parses:
turning the raw value into a typed config is ``parse``'s job (``read_config`` does both).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

import attrs

from .codec import locate, parse
from .codec.registry import spec_for
from .configs.base import AbstractQuantConfig
from .configs.unknown import UnknownMethod
from .fileio import display, open_regular, read_bounded
from .gguf.reader import read_gguf_header
from .jsontext import decode_json
from .jsonvalue import JsonObject, freeze
from .result import Err, Issue, Issues, Ok, Result
from .text import quote

__all__ = ["Source", "read", "read_config", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 64 * 1024 * 1024
"""A config file larger than this is refused rather than read into memory."""

Kind = Literal["config.json", "quantize_config.json", "quant_config.json", "hf_quant_config.json", "json", "gguf"]
_DEFAULT_METHOD: dict[str, str] = {"quantize_config.json": "gptq", "quant_config.json": "awq", "hf_quant_config.json": "modelopt"}
_SIDE_FILES = ("quantize_config.json", "quant_config.json")
_MLX_BLOCK = "quantization"  # MLX-LM writes its settings under this key of config.json, with no method string
_METHOD_KEYS = ("quant_method", "load_in_4bit", "load_in_8bit")


@attrs.frozen
class Source:
    """Raw quantization metadata and where it was found.

    Attributes:
        path: The file it came from.
        kind: What kind of file that is.
        raw: The quantization config (a JSON value or a ``GgufHeader``); ``None`` when the
            checkpoint has no quantization config (it is not quantized).
        at: The JSON path of ``raw`` in the file.
        default_method: The method a file of this kind implies when it names none.
    """

    path: str
    kind: Kind
    raw: object
    at: str = "$"
    default_method: str | None = None


def _issue(code: str, message: str, hint: str | None = None) -> Err[Issues]:
    return Err((Issue(code, "$", message, hint),))


def _load_json(path: Path) -> Result[object, Issues]:
    data = read_bounded(path, MAX_JSON_BYTES)
    if isinstance(data, Issue):
        return Err((data,))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return _issue("json.encoding", f"not UTF-8 text (byte {e.start})")
    return decode_json(text)


def _looks_like(value: dict[str, object]) -> str:
    keys = list(value)
    if not keys:
        return "it is empty"
    if "wbits" in value:
        return "it has 'wbits', as SqueezeLLM and GPTQ-for-LLaMa write"
    return "its keys are " + ", ".join(quote(k, 30) for k in keys[:4]) + (" …" if len(keys) > 4 else "")


def _read_json_file(path: Path) -> Result[Source, Issues]:
    loaded = _load_json(path)
    if isinstance(loaded, Err):
        return loaded
    value = loaded.value
    kind: Kind = path.name if path.name in ("config.json", "hf_quant_config.json", *_SIDE_FILES) else "json"  # type: ignore[assignment]
    if not isinstance(value, dict):
        what = "null" if value is None else type(value).__name__
        return _issue("json.type", f"{path.name} holds {what}, not a JSON object",
                      "a config file is an object: {\"quant_method\": …} or a whole config.json")
    if kind == "config.json":
        found = locate(value)
        mlx = value.get(_MLX_BLOCK)
        if found is None and isinstance(mlx, dict):
            found = (mlx, f"$.{_MLX_BLOCK}")
        if found is None and not any(k in value for k in _METHOD_KEYS):
            return Ok(Source(str(path), kind, None))
        raw, at = found if found is not None else (value, "$")
        return Ok(Source(str(path), kind, raw, at, "mlx" if isinstance(mlx, dict) else None))
    if kind == "quantize_config.json" and not {"bits", "quant_method"} & value.keys():
        return _issue("read.not_gptq", f"this quantize_config.json is not a GPTQ config: {_looks_like(value)}",
                      "ONNX Runtime and other tools write files of the same name; a GPTQ model has 'bits' in it")
    if kind == "quant_config.json" and not {"w_bit", "bits", "quant_method", "q_group_size", "version"} & value.keys():
        return _issue("read.not_awq", f"this quant_config.json is not an AWQ config: {_looks_like(value)}",
                      "AutoAWQ writes 'w_bit', 'q_group_size', 'zero_point' and 'version'; load such a model with the tool that wrote it")
    return Ok(Source(str(path), kind, value, "$", _DEFAULT_METHOD.get(kind)))


def _kind_of(path: Path) -> str | Issue:
    """``"dir"``, ``"file"`` or ``"absent"`` for a name, without opening it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "absent"
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "cannot be examined"
        return Issue("file.unreadable", "$", f"cannot read {quote(display(path))}: {why}")
    return "dir" if stat.S_ISDIR(mode) else "file"


def _read_directory(path: Path) -> Result[Source, Issues]:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return _issue("file.unreadable", f"cannot list {quote(display(path))}: {e.strerror or type(e).__name__}")
    ggufs = [path / n for n in names if n.endswith(".gguf")]
    for name in ("config.json", *_SIDE_FILES, "hf_quant_config.json"):
        if name not in names:
            continue
        found = _read_json_file(path / name)
        if isinstance(found, Ok) and found.value.raw is None and name == "config.json":
            continue  # an unquantized config.json: a GPTQ/AWQ side file may still say more
        return found
    if len(ggufs) == 1:
        return _read_gguf(ggufs[0])
    if len(ggufs) > 1:
        shown = ", ".join(quote(p.name, 40) for p in ggufs[:5])
        return _issue("read.ambiguous", f"{len(ggufs)} GGUF files ({shown}) and no config.json", "name the .gguf file to read")
    if "config.json" in names:
        return Ok(Source(str(path / "config.json"), "config.json", None))
    return _issue("read.nothing_found", "no config.json, quantize_config.json, quant_config.json or .gguf file here")


def _read_gguf(path: Path) -> Result[Source, Issues]:
    header = read_gguf_header(path)
    if isinstance(header, Err):
        return header
    return Ok(Source(str(path), "gguf", header.value))


def _is_gguf(path: Path) -> bool:
    opened = open_regular(path)
    if isinstance(opened, Issue):
        return False
    file, _ = opened
    with file:
        try:
            return file.read(4) == b"GGUF"
        except OSError:
            return False


def read(path: str | os.PathLike[str]) -> Result[Source, Issues]:
    """Read the quantization metadata of a model directory, a JSON file or a GGUF file.

    Never raises on bad input: a missing or empty path, a FIFO or device, an unreadable or
    vanishing file, invalid JSON, a truncated or corrupt GGUF file each give an ``Err`` with a
    coded issue. Only regular files are opened, and only up to a size bound.
    """
    given: object = path  # untyped callers pass anything
    if not isinstance(given, (str, os.PathLike)):
        return _issue("file.path_type", f"expected a path, got {type(given).__name__}")
    if os.fspath(path) in ("", b""):
        return _issue("file.path_empty", "the path is empty", "name a model directory or a config file ('.' for this directory)")
    p = Path(path)
    kind = _kind_of(p)
    if isinstance(kind, Issue):
        return Err((kind,))
    if kind == "dir":
        return _read_directory(p)
    if kind == "absent":
        return _issue("file.missing", f"{quote(display(p))}: no such file or directory")
    if p.suffix == ".gguf" or _is_gguf(p):
        return _read_gguf(p)
    return _read_json_file(p)


def read_config(path: str | os.PathLike[str], *, keep_unknown_method: bool = False) -> Result[AbstractQuantConfig | None, Issues]:
    """``read`` then ``parse``: the typed config of a checkpoint, ``None`` if it is not quantized.

    In a model directory whose ``config.json`` is quantized, a ``quantize_config.json`` or
    ``quant_config.json`` beside it must say the same: where the two disagree on how the weights
    are stored, that is an issue (Transformers silently reads ``config.json``).

    Args:
        path: A model directory, a JSON file or a GGUF file.
        keep_unknown_method: Return a checkpoint whose ``quant_method`` nobody registered as an
            ``UnknownMethod`` (for ``plan`` to refuse, or load in full precision when asked)
            instead of the ``method.unknown`` issue.
    """
    source = read(path)
    if isinstance(source, Err):
        return source
    s = source.value
    if s.raw is None:
        return Ok(None)
    parsed = parse(s.raw, default_method=s.default_method, at=s.at)
    if keep_unknown_method and isinstance(parsed, Err) and [i.code for i in parsed.error] == ["method.unknown"]:
        frozen = freeze(s.raw) if isinstance(s.raw, dict) else None
        name = s.raw.get("quant_method") if isinstance(s.raw, dict) else None
        if isinstance(frozen, JsonObject) and isinstance(name, str):
            return Ok(UnknownMethod(name=name, document=frozen))
    if isinstance(parsed, Ok) and s.kind == "config.json":
        return _agree(Path(s.path).parent, parsed.value)
    return parsed


def _agree(directory: Path, config: AbstractQuantConfig) -> Result[AbstractQuantConfig | None, Issues]:
    for name in _SIDE_FILES:
        side_path = directory / name
        if _kind_of(side_path) != "file":
            continue
        side = _read_json_file(side_path)
        if isinstance(side, Err) or side.value.raw is None:
            continue  # an unrelated file of the same name; config.json decides
        other = parse(side.value.raw, default_method=side.value.default_method)
        if isinstance(other, Err):
            continue
        differing = _layout_differences(config, other.value)
        if differing:
            return _issue("read.configs.disagree",
                          f"config.json and {name} describe the weights differently ({'; '.join(differing)})",
                          "the checkpoint is inconsistent: re-save it, or remove the stale file")
    return Ok(config)


def _layout_differences(a: AbstractQuantConfig, b: AbstractQuantConfig) -> list[str]:
    if type(a) is not type(b):
        return [f"{type(a).__name__} vs {type(b).__name__}"]
    spec = spec_for(type(a))
    ignored = {"extras", "meta", "damp_percent", "true_sequential", *(spec.loading_attributes if spec else ())}
    out = []
    for f in attrs.fields(type(a)):
        if f.eq and f.name not in ignored and getattr(a, f.name) != getattr(b, f.name):
            out.append(f"{f.name}: {quote(getattr(a, f.name), 30)} vs {quote(getattr(b, f.name), 30)}")
    return out
