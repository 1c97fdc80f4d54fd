"""engine-args (vLLM) and the capability verdicts on hand-built machines.

The oracle is vLLM's source, as data in quantdispatch.engine (its QUANTIZATION_METHODS at the cited
commit, the classes' get_min_capability): every method string we emit is one vLLM lists, and the
expected strings below are what vLLM's own override rules give for these checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import quantdispatch as qd
from quantdispatch.cli import main
from quantdispatch.engine import VLLM_MIN_CAPABILITY, VLLM_QUANTIZATION_METHODS, EngineArgs, vllm_args
from quantdispatch.where import GPUS, verdicts

from ..properties.strategies import CONFIG_STRATEGIES


def test_min_capabilities_name_vllm_methods() -> None:
    """Every method with a capability floor is one vLLM lists."""
    assert set(VLLM_MIN_CAPABILITY) <= set(VLLM_QUANTIZATION_METHODS)


@pytest.mark.parametrize(("config", "name"), [
    (qd.Gptq(bits=4, group_size=128), "gptq_marlin"),     # Marlin-compatible: vLLM's override upgrades it
    (qd.Gptq(bits=3), "gptq"),                            # 3-bit: Marlin cannot, plain GPTQ kernels
    (qd.AwqGemm(group_size=128), "awq_marlin"),
    (qd.Bnb4Bit(), "bitsandbytes"), (qd.Fp8(), "fp8"), (qd.Mxfp8(), "mxfp8"), (qd.Mxfp4(), "mxfp4"),
    (qd.CompressedTensors(), "compressed-tensors"), (qd.ModeloptFp8(), "modelopt"), (qd.ModeloptNvfp4(), "modelopt_fp4"),
    (qd.AutoRound(), "inc"), (qd.Gguf(), "gguf"),
])
def test_vllm_method_names(config: qd.AbstractQuantConfig, name: str) -> None:
    """The method string vLLM would use for the checkpoint."""
    made = vllm_args(config)
    assert isinstance(made, EngineArgs) and made.quantization == name


@pytest.mark.parametrize("config", [qd.Quanto(), qd.Hqq(), qd.Eetq(), qd.Mlx(), qd.AwqGemv(), qd.Nvfp4()])
def test_vllm_refuses_what_it_cannot_serve(config: qd.AbstractQuantConfig) -> None:
    """Methods vLLM does not list are refused with a reason, not guessed."""
    made = vllm_args(config)
    assert isinstance(made, qd.Refusal) and made.code == "engine.vllm.unsupported"


def test_deprecated_and_capability_refusals() -> None:
    """Deprecated methods need the flag; a GPU below the floor is refused; the KV-cache dtype is carried."""
    assert vllm_args(qd.FbgemmFp8()).code == "engine.vllm.deprecated"  # type: ignore[union-attr]
    assert isinstance(vllm_args(qd.FbgemmFp8(), allow_deprecated=True), EngineArgs)
    assert vllm_args(qd.Fp8(), qd.Cuda(capability=(7, 5))).code == "engine.vllm.capability"  # type: ignore[union-attr]
    ct = qd.CompressedTensors(kv_cache_scheme=qd.CtArgs(num_bits=8, type="float"))
    made = vllm_args(ct, qd.Cuda(capability=(9, 0)))
    assert isinstance(made, EngineArgs) and made.kv_cache_dtype == "fp8" and "--kv-cache-dtype" in made.as_cli()


@pytest.mark.parametrize("cls", list(CONFIG_STRATEGIES), ids=lambda c: c.__name__)
def test_every_type_gets_an_answer(cls: type[qd.AbstractQuantConfig]) -> None:
    """engine-args is total over the registered types: arguments naming a vLLM method, or a refusal."""
    from hypothesis import given, settings

    @settings(max_examples=5)
    @given(CONFIG_STRATEGIES[cls])
    def check(config: qd.AbstractQuantConfig) -> None:
        made = vllm_args(config, qd.Cuda(capability=(9, 0)), allow_deprecated=True)
        assert isinstance(made, qd.Refusal) or made.quantization in VLLM_QUANTIZATION_METHODS

    check()


def test_verdicts_follow_the_kernels_floors() -> None:
    """FP8: dequantized on Turing and Ampere, native from Ada; NVFP4 ModelOpt natively on Blackwell,
    kept packed by the portable kernel before it."""
    fp8 = {v.machine: v.backend for v in verdicts(qd.Fp8())}
    assert fp8 == {"Turing (T4)": "fp8-dequantize", "Ampere (A100)": "fp8-dequantize", "Ada (L40S)": "transformers-fp8",
                   "Hopper (H100)": "transformers-fp8", "Blackwell (B200)": "transformers-fp8"}
    nvfp4 = verdicts(qd.ModeloptNvfp4())
    assert [v.backend for v in nvfp4] == ["torch-packed"] * 4 + ["modelopt-nvfp4"]
    assert "10.0+" in nvfp4[0].why_not[0]
    gptq = {v.machine: v.backend for v in verdicts(qd.Gptq(bits=4))}
    assert gptq["Turing (T4)"] == "torch-packed" and gptq["Ampere (A100)"] == "gptqmodel-marlin"
    assert len(GPUS) == 5


def test_engine_args_and_where_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands print vLLM's arguments (or the refusal) and the per-machine verdicts."""
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}))
    assert main(["engine-args", str(tmp_path), "--engine", "vllm"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quantization"] == "gptq_marlin" and out["dtype"] == "float16" and out["min_capability"] == "8.0"
    assert main(["engine-args", str(tmp_path), "--capability", "7.0"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"] == "gptq"
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "quanto"}}))
    assert main(["engine-args", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["refused"] == "engine.vllm.unsupported"
    assert main(["where", str(tmp_path)]) == 0
    assert "Hopper (H100)" in capsys.readouterr().out
