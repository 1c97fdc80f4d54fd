"""Reading quantization metadata from disk: the only place that opens files for it.

``read(path)`` accepts a model directory, a JSON file (``config.json``, ``quantize_config.json``,
``quant_config.json`` or a bare quantization config) or a ``.gguf`` file, and returns a ``Source``:
the raw metadata and where it came from, or an ``Err`` with coded issues. It never half-parses:
turning the raw value into a typed config is ``parse``'s job (``read_config`` does both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import attrs

from .codec import locate, parse
from .configs.base import AbstractQuantConfig
from .gguf.reader import read_gguf_header
from .result import Err, Issue, Issues, Ok, Result

__all__ = ["Source", "read", "read_config", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 64 * 1024 * 1024
"""A config file larger than this is refused rather than read into memory."""

Kind = Literal["config.json", "quantize_config.json", "quant_config.json", "json", "gguf"]
_DEFAULT_METHOD: dict[str, str] = {"quantize_config.json": "gptq", "quant_config.json": "awq"}


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


def _issue(code: str, path: Path | None, message: str, hint: str | None = None) -> Err[Issues]:
    return Err((Issue(code, "$", message, hint),))


def _load_json(path: Path) -> Result[object, Issues]:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return _issue("json.too_large", path, f"{size} bytes is more than a config file can be", f"limit: {MAX_JSON_BYTES} bytes")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        return _issue("file.unreadable", path, e.strerror or str(e))
    except UnicodeDecodeError as e:
        return _issue("json.encoding", path, f"not UTF-8 text (byte {e.start})")
    return _decode(text, path)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _decode(text: str, path: Path) -> Result[object, Issues]:
    try:
        return Ok(json.loads(text, parse_constant=_no_constants, object_pairs_hook=_pairs))
    except json.JSONDecodeError as e:
        hint = None
        word = text[e.pos:e.pos + 5]
        if word.startswith(("True", "False", "None")):
            hint = "Python's True/False/None are not JSON: write true/false/null"
        return Err((Issue("json.syntax", f"$[line {e.lineno}, column {e.colno}]", e.msg, hint),))
    except ValueError as e:
        return _issue("json.value", path, str(e))
    except RecursionError:
        return _issue("json.too_deep", path, "nested too deeply to read")


def _read_json_file(path: Path) -> Result[Source, Issues]:
    loaded = _load_json(path)
    if isinstance(loaded, Err):
        return loaded
    value = loaded.value
    kind: Kind = path.name if path.name in ("config.json", "quantize_config.json", "quant_config.json") else "json"  # type: ignore[assignment]
    if kind == "config.json" and isinstance(value, dict):
        found = locate(value)
        if found is None and not any(k in value for k in ("quant_method", "load_in_4bit", "load_in_8bit")):
            return Ok(Source(str(path), kind, None))
        raw, at = found if found is not None else (value, "$")
        return Ok(Source(str(path), kind, raw, at))
    if kind == "quantize_config.json" and isinstance(value, dict) and not {"bits", "quant_method"} & value.keys():
        keys = ", ".join(list(value)[:4])
        return _issue("read.not_gptq", path, f"this quantize_config.json is not a GPTQ config (no 'bits'; keys: {keys})",
                      "ONNX Runtime and other tools write files of the same name; a GPTQ model has 'bits' in it")
    return Ok(Source(str(path), kind, value, "$", _DEFAULT_METHOD.get(kind)))


def _read_directory(path: Path) -> Result[Source, Issues]:
    ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
    candidates = [path / name for name in ("config.json", "quantize_config.json", "quant_config.json")]
    for c in candidates:
        if c.is_file():
            found = _read_json_file(c)
            if isinstance(found, Ok) and found.value.raw is None and c.name == "config.json":
                continue  # an unquantized config.json: a GPTQ/AWQ side file may still say more
            return found
    if len(ggufs) == 1:
        return _read_gguf(ggufs[0])
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs[:5])
        return _issue("read.ambiguous", path, f"{len(ggufs)} GGUF files ({names}) and no config.json", "name the .gguf file to read")
    if candidates[0].is_file():
        return Ok(Source(str(candidates[0]), "config.json", None))
    return _issue("read.nothing_found", path, "no config.json, quantize_config.json, quant_config.json or .gguf file here")


def _read_gguf(path: Path) -> Result[Source, Issues]:
    header = read_gguf_header(path)
    if isinstance(header, Err):
        return header
    return Ok(Source(str(path), "gguf", header.value))


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def read(path: str | os.PathLike[str]) -> Result[Source, Issues]:
    """Read the quantization metadata of a model directory, a JSON file or a GGUF file.

    Never raises on bad files: a missing path, unreadable or invalid JSON, a truncated or
    corrupt GGUF file each give an ``Err`` with a coded issue.
    """
    p = Path(path)
    if p.is_dir():
        return _read_directory(p)
    if not p.exists():
        return _issue("file.missing", p, "no such file or directory")
    if p.suffix == ".gguf" or _is_gguf(p):
        return _read_gguf(p)
    return _read_json_file(p)


def read_config(path: str | os.PathLike[str]) -> Result[AbstractQuantConfig | None, Issues]:
    """``read`` then ``parse``: the typed config of a checkpoint, ``None`` if it is not quantized."""
    source = read(path)
    if isinstance(source, Err):
        return source
    s = source.value
    if s.raw is None:
        return Ok(None)
    return parse(s.raw, default_method=s.default_method, at=s.at)
