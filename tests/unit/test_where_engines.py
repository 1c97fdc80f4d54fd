"""``where`` and ``engine-args`` per engine and device, over real FP8, ModelOpt and compressed-tensors configs.

The expected answers are the engines' own rules, read where each answer cites: Transformers 5.24's
``quantizers/quantizer_finegrained_fp8.py``, ``quantizer_fbgemm_fp8.py``,
``quantizer_compressed_tensors.py`` and ``auto.py``; vLLM's x86 CPU table (research/anchors-2026-12.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import quantdispatch as qd
from quantdispatch.cli import main
from quantdispatch.cli_check import check_one
from quantdispatch.engines import EngineAnswer, TransformersArgs, format_kind, transformers_args
from quantdispatch.result import Ok
from quantdispatch.where import MACHINES, engine_answers
from tests.conftest import REALWORLD

CPU, T4, A100, L40S, H100, B200 = (m for m in MACHINES)

# (file under realworld/configs, format kind, our CPU backend, Transformers on CPU / T4 / H100, vLLM on CPU / T4 / H100)
REAL = [
    ("fp8/qwen3-32b-fp8-block-e4m3.json", "fp8", "cpu-e4m3", ("dequantizes", "dequantizes", "runs"), ("refuses", "refuses", "runs")),
    ("fp8/deepseek-v3.2-fp8-block-scale_fmt-ue8m0.json", "fp8", "cpu-e4m3", ("dequantizes", "dequantizes", "runs"),
     ("refuses", "refuses", "runs")),
    ("modelopt/qwen3-32b-fp8-static-hf_quant_config.json", "fp8", "cpu-e4m3", ("refuses",) * 3, ("refuses", "refuses", "runs")),
    ("modelopt/nemotron-3-super-120b-fp8-hf_quant_config.json", "fp8", "cpu-e4m3", ("refuses",) * 3, ("refuses", "refuses", "runs")),
    ("modelopt/qwen3-32b-nvfp4-hf_quant_config.json", "nvfp4", "cpu-fp4", ("refuses",) * 3, ("unverified", "runs", "runs")),
    ("modelopt/deepseek-v3-0324-nvfp4-kv-null-hf_quant_config.json", "nvfp4", "cpu-fp4", ("refuses",) * 3, ("unverified", "runs", "runs")),
    ("compressed-tensors/laguna-s-2.1-fp8-block-float-quantized.json", "fp8", "cpu-e4m3", ("runs",) * 3, ("refuses", "runs", "runs")),
    ("compressed-tensors/llm-compressor-tinyllama-fp8-legacy-compression_config.json", "fp8", "cpu-e4m3", ("runs",) * 3,
     ("refuses", "runs", "runs")),
    ("compressed-tensors/ct-example-int8-naive-quantized.json", "int8-w8a8", "cpu-dense", ("runs",) * 3, ("runs", "runs", "runs")),
    ("compressed-tensors/kimi-k2.5-int4-pack-quantized-text_config.json", "int4-w4a16", "torch-packed", ("runs",) * 3,
     ("unverified", "runs", "runs")),
]


def _config(rel: str) -> qd.AbstractQuantConfig:
    path = REALWORLD / "configs" / rel
    if not path.exists():
        pytest.skip(f"{path} is not here")
    found = check_one(str(path))
    assert isinstance(found, Ok) and found.value is not None, found
    return found.value


def _answer(answers: tuple[EngineAnswer, ...], engine: str, device: qd.Cpu | qd.Cuda) -> EngineAnswer:
    from quantdispatch.engines import device_name
    (found,) = [a for a in answers if a.engine == engine and a.device == device_name(device)]
    return found


@pytest.mark.parametrize(("rel", "kind", "ours", "tf", "vllm"), REAL, ids=[r[0].split("/")[-1][:40] for r in REAL])
def test_real_configs_per_engine_and_device(rel: str, kind: str, ours: str, tf: tuple[str, ...], vllm: tuple[str, ...]) -> None:
    """Each engine's status on the CPU, a Turing and a Hopper GPU, and our CPU backend, for a real config."""
    config = _config(rel)
    assert format_kind(config) == kind
    answers = engine_answers(config, (CPU, T4, H100))
    assert _answer(answers, "quantdispatch", CPU).how == ours
    assert tuple(_answer(answers, "transformers", d).status for d in (CPU, T4, H100)) == tf
    assert tuple(_answer(answers, "vllm", d).status for d in (CPU, T4, H100)) == vllm
    assert {a.status for a in answers if a.engine == "llama.cpp"} == {"refuses"}
    assert all(a.source for a in answers)


def test_transformers_fp8_reasons_quote_the_quantizer() -> None:
    """Block and per-tensor FP8: dequantized to bf16 without a GPU and below sm_89, kept from Ada on."""
    for config in (qd.Fp8(), qd.Fp8(weight_block_size=None)):
        answers = engine_answers(config, (CPU, A100, L40S))
        cpu, a100, l40s = (_answer(answers, "transformers", d) for d in (CPU, A100, L40S))
        assert "requires a GPU or XPU" in cpu.reason and "quantizer_finegrained_fp8.py" in cpu.source
        assert (a100.status, l40s.status) == ("dequantizes", "runs") and ">= 8.9" in a100.reason
        assert _answer(answers, "vllm", CPU).reason.startswith("vLLM's x86 CPU backend has no FP8")


def test_fbgemm_fp8_refusals() -> None:
    """fbgemm_fp8: Transformers refuses without a GPU and below sm_90; vLLM deprecates it."""
    answers = engine_answers(qd.FbgemmFp8(), (CPU, L40S, H100))
    assert _answer(answers, "quantdispatch", CPU).how == "cpu-e4m3"
    cpu, l40s, h100 = (_answer(answers, "transformers", d) for d in (CPU, L40S, H100))
    assert cpu.status == l40s.status == "refuses" and "requires a GPU or XPU" in cpu.reason and ">= 9.0" in l40s.reason
    assert h100.status == "runs" and "quantizer_fbgemm_fp8.py" in h100.source
    assert "deprecated" in _answer(answers, "vllm", H100).reason


def _ct(weights: qd.CtArgs, inputs: qd.CtArgs | None, fmt: str) -> qd.CompressedTensors:
    return qd.CompressedTensors(format=fmt, quantization_status="compressed", config_groups=(
        ("group_0", qd.CtScheme(targets=("Linear",), weights=weights, input_activations=inputs)),))


@pytest.mark.parametrize(("config", "kind", "vllm_cpu"), [
    (_ct(qd.CtArgs(num_bits=8, type="float", strategy="tensor"), None, "float-quantized"), "fp8", "refuses"),
    (_ct(qd.CtArgs(num_bits=8, type="float", strategy="channel"), qd.CtArgs(num_bits=8, type="float", strategy="token", dynamic=True),
         "float-quantized"), "fp8", "refuses"),
    (_ct(qd.CtArgs(num_bits=8, type="int", strategy="channel"), None, "int-quantized"), "int8-w8a16", "unverified"),
    (_ct(qd.CtArgs(num_bits=8, type="int", strategy="channel"), qd.CtArgs(num_bits=8, type="int", strategy="token", dynamic=True),
         "int-quantized"), "int8-w8a8", "runs"),
    (_ct(qd.CtArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16), None, "nvfp4-pack-quantized"), "nvfp4", "unverified"),
    (_ct(qd.CtArgs(num_bits=4, type="int", strategy="group", group_size=128), None, "pack-quantized"), "int4-w4a16", "unverified"),
], ids=["fp8-tensor", "fp8-channel-dynamic", "w8a16", "w8a8", "nvfp4", "w4a16"])
def test_compressed_tensors_formats(config: qd.CompressedTensors, kind: str, vllm_cpu: str) -> None:
    """compressed-tensors: Transformers loads every format through compressed-tensors; vLLM's CPU only INT8 W8A8."""
    assert format_kind(config) == kind
    answers = engine_answers(config, (CPU, B200))
    assert _answer(answers, "transformers", CPU).status == "runs"
    assert _answer(answers, "vllm", CPU).status == vllm_cpu
    assert _answer(answers, "quantdispatch", CPU).status == "runs"
    if kind == "nvfp4":
        assert "sm100" in _answer(engine_answers(config, (H100,)), "vllm", H100).reason


def test_transformers_args_per_device() -> None:
    """from_pretrained keywords: dequantize on CPU for fp8; none to add on Hopper; a refusal for ModelOpt."""
    cpu = transformers_args(qd.Fp8(), CPU)
    assert isinstance(cpu, TransformersArgs) and cpu.as_kwargs() == {"device_map": "cpu", "dtype": "bfloat16",
                                                                     "quantization_config": {"dequantize": True}}
    hopper = transformers_args(qd.Fp8(), H100)
    assert isinstance(hopper, TransformersArgs) and hopper.as_kwargs() == {"device_map": "cuda", "dtype": "bfloat16"}
    refused = transformers_args(qd.ModeloptFp8(), H100)
    assert isinstance(refused, qd.Refusal) and refused.code == "engine.transformers.refuses" and "AUTO_QUANTIZER_MAPPING" in refused.message


def test_engine_args_command_per_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """engine-args prints each engine's arguments or its refusal, for the device asked."""
    fp8 = str(REALWORLD / "configs" / "fp8" / "qwen3-32b-fp8-block-e4m3.json")
    nvfp4 = str(REALWORLD / "configs" / "modelopt" / "qwen3-32b-nvfp4-hf_quant_config.json")
    int8 = str(REALWORLD / "configs" / "compressed-tensors" / "ct-example-int8-naive-quantized.json")
    if not Path(fp8).exists():
        pytest.skip("the real-world corpus is not here")
    assert main(["engine-args", fp8, "--engine", "transformers", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["from_pretrained"]["quantization_config"] == {"dequantize": True}
    assert main(["engine-args", fp8, "--engine", "vllm", "--device", "cpu"]) == 1
    assert "no FP8" in json.loads(capsys.readouterr().out)["reason"]
    assert main(["engine-args", int8, "--engine", "vllm", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["cli"][-2:] == ["--device", "cpu"]
    assert main(["engine-args", nvfp4, "--engine", "quantdispatch", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "cpu-fp4"
    assert main(["engine-args", nvfp4, "--engine", "transformers", "--capability", "10.0"]) == 1
    assert json.loads(capsys.readouterr().out)["refused"] == "engine.transformers.refuses"
    assert main(["engine-args", nvfp4, "--engine", "vllm", "--capability", "10.0"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"] == "modelopt_fp4"
    assert main(["where", fp8]) == 0
    out = capsys.readouterr().out
    assert "CPU:" in out and "transformers: dequantizes" in out and "Hopper (H100) sm_90:" in out
