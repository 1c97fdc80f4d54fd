"""Every file of the shared real-world corpus, and the new families' behaviours on small inputs.

Each corpus file is read the way ``read`` reads its kind of file: a ``quantize_config.json``
implies GPTQ, an ``hf_quant_config.json`` ModelOpt, an MLX ``quantization`` block MLX. The
expected outcome of every file is written below by hand from what the file is (its folder and
the notes in ``SOURCES.md``): the config type for the valid ones, which must also validate and
round-trip losslessly (``dump(parse(d)) == d``, and the canonical dump parses back to an equal
value); the issue codes for the invalid and self-contradictory ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest

import quantdispatch as qd
from quantdispatch.codec.registry import spec_for
from quantdispatch.codec.spec import canonical

CORPUS: Final = Path(__file__).resolve().parents[3] / "shared" / "realworld" / "configs"

_TYPES: Final[dict[str, type[qd.AbstractQuantConfig]]] = {
    "compressed-tensors/ct-example-int4-pack-quantized.json": qd.CompressedTensors,
    "compressed-tensors/ct-example-int8-fakequant-format.json": qd.CompressedTensors,
    "compressed-tensors/ct-example-int8-naive-quantized.json": qd.CompressedTensors,
    "compressed-tensors/kimi-k2.5-int4-pack-quantized-text_config.json": qd.CompressedTensors,
    "compressed-tensors/kimi-k3-mxfp4-pack-quantized-text_config.json": qd.CompressedTensors,
    "compressed-tensors/laguna-s-2.1-fp8-block-float-quantized.json": qd.CompressedTensors,
    "compressed-tensors/llm-compressor-stories42M-sparse-24-bitmask.json": qd.CompressedTensors,
    "compressed-tensors/llm-compressor-tinyllama-fp8-default-kv-legacy-compression_config.json": qd.CompressedTensors,
    "compressed-tensors/llm-compressor-tinyllama-fp8-legacy-compression_config.json": qd.CompressedTensors,
    "compressed-tensors/nm-testing-llama3.1-8b-fp8-hf-simplified-quote-in-transformers-docs.json": qd.CompressedTensors,
    "fp8/deepseek-v3.2-fp8-block-scale_fmt-ue8m0.json": qd.Fp8,
    "fp8/glm-5-fp8-30kb-modules_to_not_convert.json": qd.Fp8,
    "fp8/minimax-m2.5-fp8-block-float8_e4m3fn.json": qd.Fp8,
    "fp8/qwen3-235b-a22b-fp8-long-modules_to_not_convert.json": qd.Fp8,
    "fp8/qwen3-32b-fp8-block-e4m3.json": qd.Fp8,
    "fp8/qwen3.8-2.4t-fp8-weight_per_tensor-act_per_tensor.json": qd.Fp8,
    "fp8/step-3.7-flash-fp8-minimal.json": qd.Fp8,
    "mlx/fast_qwen-mlx-mixed-per-layer-quantization-key.json": qd.Mlx,
    "mlx/fast_qwen-mlx-mixed-per-layer-quantization_config.json": qd.Mlx,
    "mlx/qwen3-14b-mlx-4bit-g64.json": qd.Mlx,
    "modelopt/deepseek-v3-0324-nvfp4-kv-null-hf_quant_config.json": qd.ModeloptNvfp4,
    "modelopt/deepseek-v4-flash-nvfp4-mixed-precision-hf_quant_config.json": qd.ModeloptMixed,
    "modelopt/glm-5.1-nvfp4-config-qc-quant_method-modelopt.json": qd.ModeloptNvfp4,
    "modelopt/nemotron-3-super-120b-fp8-hf_quant_config.json": qd.ModeloptFp8,
    "modelopt/qwen3-32b-fp8-static-hf_quant_config.json": qd.ModeloptFp8,
    "modelopt/qwen3-32b-nvfp4-hf_quant_config.json": qd.ModeloptNvfp4,
    "modelopt/qwen3.6-27b-nvfp4-mixed-w4a16_nvfp4-hf_quant_config.json": qd.ModeloptMixed,
    "mxfp4/gpt-oss-120b-mxfp4.json": qd.Mxfp4,
    # legacy method strings of compressed-tensors
    "unusual/ct-legacy-quant_method-compressed_tensors-underscore.json": qd.CompressedTensors,
    "unusual/ct-legacy-quant_method-sparseml.json": qd.CompressedTensors,
    "unusual/ct-legacy-sparseml-quantization_status-frozen.json": qd.CompressedTensors,
    # documented: a ModelOpt producer with no quant_method is recognised as ModelOpt
    "unusual/qwen3-32b-fp8-static-pertensor-modelopt-no-quant_method.json": qd.ModeloptFp8,
    # documented: "mlx" is the method string MLX blocks are written with when a tool adds one
    "unusual/verantyx-quant_method-mlx-in-model_4bit-dir.json": qd.Mlx,
}
_REFUSED: Final[dict[str, tuple[str, ...]]] = {
    "invalid/thebloke-wizvic30b-python-True-quantize_config.json": ("json.syntax",),
    "unusual/deepseek-v4-flash-nvfp4-quant_method-fp8-but-mixed-precision.json": ("fp8.quant_algo.conflict",),
    "unusual/gte-small-onnx-quantize_config-name-collision.json": ("read.not_gptq",),
    "unusual/networkmonitorllm-quant_config-is-json-array-of-gguf-recipes.json": ("json.type",),
    "unusual/phowhisper-tiny-onnx-quantize_config-multi-model.json": ("read.not_gptq",),
    "unusual/squeezellm-quant_config-wbits-only.json": ("read.not_awq",),
}
_OLD_FAMILIES: Final = ("gptq", "bnb-4bit", "bnb-8bit", "awq")
"""Covered by tests/differential/test_vs_transformers.py; here only checked to parse and round-trip."""
_FILE_KIND: Final = {"hf_quant_config": "hf_quant_config.json", "quantize_config": "quantize_config.json", "quant_config": "quant_config.json"}


def _files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.json") if p.parent != CORPUS)


def _read_as_its_kind(rel: str, tmp_path: Path) -> qd.Result[qd.AbstractQuantConfig | None, qd.Issues]:
    """Read a corpus file under the name its kind of file has on disk (``read`` decides by name)."""
    name = next((kind for marker, kind in _FILE_KIND.items() if marker in rel.replace("-", "_")), "config.json")
    if "unusual/squeezellm" in rel or "networkmonitorllm" in rel:
        name = "quant_config.json"
    if "onnx-quantize_config" in rel:
        name = "quantize_config.json"
    text = (CORPUS / rel).read_bytes()
    if name == "config.json":
        # Back into the config.json it was extracted from: MLX-LM writes its block under
        # "quantization" (and, for Transformers, again under "quantization_config").
        blocks = (["quantization"] if rel.endswith("quantization-key.json") else ["quantization", "quantization_config"] if rel.startswith("mlx")
                  else ["compression_config"] if "compression_config" in rel else ["quantization_config"])
        try:
            block = json.loads(text)
            text = json.dumps({"model_type": "test", **dict.fromkeys(blocks, block)}).encode()
        except ValueError:
            pass
    (tmp_path / name).write_bytes(text)
    return qd.read_config(tmp_path / name)


def test_every_corpus_file_is_listed() -> None:
    """The expectation tables name every corpus file of the new families, and only existing ones."""
    files = _files()
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    new = {f for f in files if not f.startswith(_OLD_FAMILIES)}
    assert new == set(_TYPES) | set(_REFUSED)


@pytest.mark.parametrize("rel", sorted(_TYPES))
def test_valid_corpus_file(rel: str, tmp_path: Path) -> None:
    """A valid real config is read as its type, validates and round-trips losslessly."""
    if not (CORPUS / rel).is_file():
        pytest.skip("no corpus")
    got = _read_as_its_kind(rel, tmp_path)
    assert isinstance(got, qd.Ok) and got.value is not None, got
    config = got.value
    assert type(config) is _TYPES[rel]
    assert isinstance(qd.validate(config), qd.Ok)
    document = json.loads((CORPUS / rel).read_text(encoding="utf-8"))
    assert qd.dump(config) == document
    spec = spec_for(type(config))
    assert spec is not None
    again = qd.parse(canonical(spec, config))
    assert isinstance(again, qd.Ok) and again.value == config


@pytest.mark.parametrize("rel", sorted(_REFUSED))
def test_refused_corpus_file(rel: str, tmp_path: Path) -> None:
    """An invalid or self-contradictory real file is refused with the expected coded issues."""
    if not (CORPUS / rel).is_file():
        pytest.skip("no corpus")
    got = _read_as_its_kind(rel, tmp_path)
    assert isinstance(got, qd.Err), got
    assert tuple(i.code for i in got.error) == _REFUSED[rel]


@pytest.mark.parametrize("rel", [f for f in _files() if f.startswith(_OLD_FAMILIES)] or ["gptq/none.json"])
def test_old_family_corpus_file_round_trips(rel: str) -> None:
    """The first four families' real files still parse and round-trip with every family registered."""
    if not (CORPUS / rel).is_file():
        pytest.skip("no corpus")
    document = json.loads((CORPUS / rel).read_text(encoding="utf-8"))
    parsed = qd.parse(document, default_method="gptq" if rel.startswith("gptq") else None)
    assert isinstance(parsed, qd.Ok), parsed
    assert qd.dump(parsed.value) == document
