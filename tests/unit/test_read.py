"""read and read_config on directories, JSON files and GGUF files, good and bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import quantdispatch as qd
from tests.conftest import REALWORLD


def _write(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def _codes(r: qd.Result[object, qd.Issues]) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


def test_model_directory_with_config_json(tmp_path: Path) -> None:
    """A model directory's config.json gives the block and its JSON path."""
    _write(tmp_path / "config.json", {"model_type": "llama", "quantization_config": {"quant_method": "awq", "version": "gemv"}})
    s = qd.read(tmp_path)
    assert isinstance(s, qd.Ok) and s.value.at == "$.quantization_config" and s.value.kind == "config.json"
    assert qd.read_config(tmp_path) == qd.Ok(qd.AwqGemv())


def test_unquantized_directory_falls_back_to_side_files(tmp_path: Path) -> None:
    """An unquantized config.json beside a quantize_config.json reads the GPTQ side file."""
    _write(tmp_path / "config.json", {"model_type": "llama"})
    assert qd.read_config(tmp_path) == qd.Ok(None)
    _write(tmp_path / "quantize_config.json", {"bits": 8, "group_size": -1})
    assert qd.read_config(tmp_path) == qd.Ok(qd.Gptq(bits=8, group_size=-1))


def test_bad_json_files(tmp_path: Path) -> None:
    """Python literals, NaN, duplicate keys and garbage are coded issues with a position."""
    (tmp_path / "a.json").write_text('{"bits": 4, "desc_act": True}')
    r = qd.read(tmp_path / "a.json")
    assert _codes(r) == ["json.syntax"] and isinstance(r, qd.Err) and r.error[0].hint is not None
    (tmp_path / "b.json").write_text('{"damp_percent": NaN}')
    b = qd.read(tmp_path / "b.json")
    assert _codes(b) == ["json.value.not_finite"] and isinstance(b, qd.Err) and b.error[0].path == "$[line 1, column 18]"
    (tmp_path / "c.json").write_text('{"bits": 4,\n "bits": 8}')
    c = qd.read(tmp_path / "c.json")
    assert _codes(c) == ["json.key.duplicate"] and isinstance(c, qd.Err) and c.error[0].path == "$[line 2, column 2]"
    (tmp_path / "d.json").write_bytes(b"\xff\xfe\x00")
    assert _codes(qd.read(tmp_path / "d.json")) == ["json.encoding"]
    assert _codes(qd.read(tmp_path / "missing.json")) == ["file.missing"]
    assert _codes(qd.read(tmp_path)) == ["read.nothing_found"]


def test_onnx_quantize_config_is_not_gptq(tmp_path: Path) -> None:
    """A quantize_config.json written by ONNX Runtime is named as such, not read as GPTQ."""
    _write(tmp_path / "quantize_config.json", {"per_channel": True, "reduce_range": True, "per_model_config": {}})
    assert _codes(qd.read(tmp_path)) == ["read.not_gptq"]


def test_awq_quant_config_json_native_keys(tmp_path: Path) -> None:
    """AutoAWQ's quant_config.json (w_bit, q_group_size, version GEMM) is read as AWQ."""
    _write(tmp_path / "quant_config.json", {"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    assert qd.read_config(tmp_path) == qd.Ok(qd.AwqGemm(group_size=64))


def test_real_gguf_files() -> None:
    """Real GGUF files give a Gguf config; broken ones a coded issue, never an exception."""
    root = REALWORLD / "gguf"
    if not root.is_dir():
        pytest.skip("shared/realworld is not beside the repository")
    cfg = qd.read_config(root / "ollama__llama-2-tiny-random.gguf")
    assert isinstance(cfg, qd.Ok) and isinstance(cfg.value, qd.Gguf) and cfg.value.architecture == "llama"
    assert all(t.ggml_type in (qd.GgmlType.F16, qd.GgmlType.F32) for t in cfg.value.tensors)
    for bad in sorted(root.glob("INVALID__*.gguf")):
        assert isinstance(qd.read_config(bad), qd.Err), bad.name


def test_gguf_directory_and_ambiguity(tmp_path: Path) -> None:
    """A directory with one GGUF file reads it; with two and no config.json it asks which."""
    src = REALWORLD / "gguf" / "ollama__registry-testdata-empty-gguf-24-bytes.gguf"
    if not src.is_file():
        pytest.skip("shared/realworld is not beside the repository")
    (tmp_path / "a.gguf").write_bytes(src.read_bytes())
    assert qd.read_config(tmp_path) == qd.Ok(qd.Gguf())
    (tmp_path / "b.gguf").write_bytes(src.read_bytes())
    assert _codes(qd.read(tmp_path)) == ["read.ambiguous"]
