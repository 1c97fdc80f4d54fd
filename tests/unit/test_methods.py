"""The families beyond bitsandbytes, GPTQ, AWQ and GGUF on small hand-written inputs: located nested errors, legacy spellings,
aliases, and Transformers' own checks (plus the ones it forgets)."""

from __future__ import annotations

from typing import Any

import pytest

import quantdispatch as qd


def _issues(raw: object, **kw: Any) -> list[tuple[str, str]]:
    result = qd.parse(raw, **kw)
    assert isinstance(result, qd.Err), result
    return [(i.code, i.path) for i in result.error]


def _ct(groups: dict[str, object], **more: object) -> dict[str, object]:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": groups, **more}


_W4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}


def test_bad_num_bits_in_third_scheme_is_located() -> None:
    """A bad num_bits inside the third scheme is reported at its JSON path, with the sub-field in the code."""
    bad = {**_W4, "num_bits": "four"}
    doc = _ct({"group_0": {"targets": ["Linear"], "weights": _W4}, "group_1": {"targets": ["Embedding"], "weights": _W4},
               "group_2": {"targets": ["re:.*mlp.*"], "weights": bad}})
    assert _issues(doc) == [("compressed-tensors.config_groups.num_bits.type", "$.config_groups.group_2.weights.num_bits")]


def test_nested_rules_of_the_pydantic_models_are_located() -> None:
    """compressed-tensors' cross-field rules (group strategy needs group_size) are located too."""
    args = {"num_bits": 4, "strategy": "group"}
    assert _issues(_ct({"g": {"targets": ["Linear"], "input_activations": args}})) == [
        ("compressed-tensors.config_groups.group_size.missing", "$.config_groups.g.input_activations.group_size")]
    assert _issues(_ct({"g": {"targets": ["Linear"], "weights": {**_W4, "zero_point": 1}}})) == [
        ("compressed-tensors.config_groups.zero_point.unknown", "$.config_groups.g.weights.zero_point")]
    assert _issues(_ct({"g": {"targets": ["Linear"]}}, kv_cache_scheme={"num_bits": 16, "type": "float"})) == [
        ("compressed-tensors.kv_cache_scheme.num_bits.not_allowed", "$.kv_cache_scheme.num_bits")]


def test_ignore_regex_entries_must_compile() -> None:
    """An ``re:`` entry that is no regular expression is refused where it is (Transformers finds out at load)."""
    doc = _ct({"g": {"targets": ["Linear"], "weights": _W4}}, ignore=["lm_head", "re:.*self_attn.*", "re:.*mlp.(gate|up"])
    assert _issues(doc) == [("compressed-tensors.ignore.pattern", "$.ignore[2]")]


@pytest.mark.parametrize("legacy", ["compressed_tensors", "sparseml"])
def test_legacy_method_strings(legacy: str) -> None:
    """The legacy method strings parse as compressed-tensors, and are written back as read."""
    doc = {**_ct({"g": {"targets": ["Linear"], "weights": _W4}}), "quant_method": legacy}
    parsed = qd.parse(doc)
    assert isinstance(parsed, qd.Ok) and isinstance(parsed.value, qd.CompressedTensors)
    assert qd.dump(parsed.value) == doc
    assert parsed.value.schemes()[0].weights == qd.CtArgs(num_bits=4, strategy="group", group_size=128)


def test_legacy_compression_config_key() -> None:
    """A whole config.json with the legacy ``compression_config`` key is found."""
    assert qd.locate({"compression_config": {"quant_method": "compressed-tensors"}}) == (
        {"quant_method": "compressed-tensors"}, "$.compression_config")


def test_preset_groups() -> None:
    """A group written as a preset name with targets is read; an unknown preset is refused."""
    parsed = qd.parse(_ct({"W4A16": ["Linear"]}))
    assert isinstance(parsed, qd.Ok) and parsed.value == qd.CompressedTensors(
        config_groups=(("W4A16", qd.CtPreset(targets=("Linear",))),), format="pack-quantized")
    assert _issues(_ct({"W9A9": ["Linear"]})) == [("compressed-tensors.config_groups.preset.unknown", "$.config_groups.W9A9")]


def test_modelopt_envelope_and_flat_forms_are_equal() -> None:
    """hf_quant_config.json's nested form and config.json's flat form are one value; problems inside are located."""
    nested = {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}}
    flat = {"quant_method": "modelopt", "producer": {"name": "modelopt"}, "quant_algo": "NVFP4", "group_size": 16, "ignore": ["lm_head"]}
    a, b = qd.parse(nested), qd.parse(flat)
    assert isinstance(a, qd.Ok) and isinstance(b, qd.Ok) and a.value == b.value
    assert qd.dump(a.value) == nested and qd.dump(b.value) == flat
    assert _issues({"quantization": {"quant_algo": "NVFP4", "group_size": 0}}) == [
        ("modelopt.group_size.range", "$.quantization.group_size")]
    assert _issues({"quantization": {"quant_algo": "INT3"}}) == [("modelopt.quant_algo.unsupported", "$.quantization.quant_algo")]


def test_fp8_spellings() -> None:
    """``ignored_layers`` is read as modules_to_not_convert; the activation scheme ignores case, as Transformers."""
    parsed = qd.parse({"quant_method": "mxfp8", "activation_scheme": "DYNAMIC", "ignored_layers": ["gate"]})
    assert parsed == qd.Ok(qd.Mxfp8(modules_to_not_convert=("gate",)))
    assert _issues({"quant_method": "fp8", "weight_block_size": [128, 0]}) == [("fp8.weight_block_size.range", "$.weight_block_size[1]")]


@pytest.mark.parametrize(("doc", "code"), [
    ({"quant_method": "higgs", "hadamard_size": 500, "group_size": 64}, "higgs.hadamard_size.conflict"),
    ({"quant_method": "spqr", "bits": 4}, "spqr.bits.not_allowed"),
    ({"quant_method": "vptq", "enable_proxy_error": True}, "vptq.enable_proxy_error.not_allowed"),
    ({"quant_method": "vptq", "config_for_layers": {"l": {"is_indice_packed": False}}}, "vptq.config_for_layers.not_allowed"),
    ({"quant_method": "fp_quant", "forward_dtype": "nvfp4", "forward_method": "quest"}, "fp_quant.forward_method.conflict"),
    ({"quant_method": "torchao", "quant_type": "int4_weight_only"}, "torchao.quant_type.not_allowed"),
    ({"quant_method": "quanto", "weights": "int3"}, "quanto.weights.not_allowed"),
    ({"quant_method": "eetq", "weights": "int4"}, "eetq.weights.not_allowed"),
    ({"quant_method": "metal", "bits": 3}, "metal.bits.not_allowed"),
    ({"quant_method": "auto-round", "bits": 9}, "auto-round.bits.range"),
    ({"quant_method": "bitnet", "linear_class": "linear"}, "bitnet.linear_class.not_allowed"),
    ({"quant_method": "hqq", "quant_config": {"weight_quant_params": {"nbits": 5}}}, "hqq.quant_config.nbits.not_allowed"),
    ({"quant_method": "mlx", "bits": 4, "group_size": 64, "model.embed": {"bits": 7, "group_size": 64}}, "mlx.bits.not_allowed"),
])
def test_transformers_rules_and_forgotten_ones(doc: dict[str, object], code: str) -> None:
    """Each family's rules: parsing or validation refuses the value with a coded issue."""
    parsed = qd.parse(doc)
    issues = parsed.error if isinstance(parsed, qd.Err) else qd.validate(parsed.value).error  # type: ignore[union-attr]
    assert code in [i.code for i in issues]


def test_unknown_method_gets_the_nearest_known_one() -> None:
    """An unregistered method string is an Err naming the nearest known method."""
    result = qd.parse({"quant_method": "compressed_tensor"})
    assert isinstance(result, qd.Err) and result.error[0].code == "method.unknown"
    assert result.error[0].hint is not None and "'compressed_tensors'" in result.error[0].hint
    assert qd.parse({"quant_method": "FP8"}).error[0].hint.startswith("did you mean 'fp8'")  # type: ignore[union-attr]


def test_every_transformers_method_is_typed() -> None:
    """No Transformers 5 method string is 'unsupported' any more: each parses into its own type."""
    from quantdispatch.codec.registry import TRANSFORMERS_METHODS, families

    registered = {f.method for f in families()} | {"bitsandbytes_4bit", "bitsandbytes_8bit"}
    assert set(TRANSFORMERS_METHODS) <= registered


def _env() -> qd.Environment:
    return qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),))


def test_unknown_method_from_a_checkpoint_is_refused_by_default(tmp_path: Any) -> None:
    """A checkpoint's unregistered method: the plan refuses it, says why and how to load it anyway."""
    (tmp_path / "config.json").write_text('{"quantization_config": {"quant_method": "gptqq", "bits": 4}}')
    found = qd.read_config(tmp_path, keep_unknown_method=True)
    assert found == qd.Ok(qd.UnknownMethod(name="gptqq", document=found.value.document))  # type: ignore[union-attr]
    refused = qd.plan(found.value, _env())
    assert isinstance(refused, qd.Err) and refused.error[0].code == "plan.method.unregistered"
    assert refused.error[0].hint is not None and "'gptq'" in refused.error[0].hint and "full_precision" in refused.error[0].hint
    assert qd.read_config(tmp_path).error[0].code == "method.unknown"  # type: ignore[union-attr]


def test_unknown_method_loads_in_full_precision_when_asked(tmp_path: Any) -> None:
    """With unknown_method='full_precision' the plan loads the weights as stored, and says so."""
    made = qd.plan(qd.UnknownMethod(name="my-method"), _env(), qd.LoadOptions(unknown_method="full_precision"))
    assert isinstance(made, qd.Ok)
    p = made.value
    assert p.backend.name == "full-precision" and not p.pre_quantized and p.skip_modules == ()
    assert "'my-method'" in p.explain() and "unknown_method='full_precision'" in p.explain()


def test_directories_of_modelopt_and_mlx_checkpoints(tmp_path: Any) -> None:
    """A directory whose config.json is unquantized but has hf_quant_config.json is ModelOpt; MLX's
    quantization block in config.json is read as MLX."""
    import json

    modelopt, mlx = tmp_path / "modelopt", tmp_path / "mlx"
    modelopt.mkdir()
    mlx.mkdir()
    (modelopt / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (modelopt / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8"}}))
    assert qd.read_config(modelopt) == qd.Ok(qd.ModeloptFp8(extras=qd.parse({"quant_algo": "FP8", "producer": {"name": "modelopt"}},
                                                                             default_method="modelopt").value.extras))  # type: ignore[union-attr]
    (mlx / "config.json").write_text(json.dumps({"model_type": "qwen3", "quantization": {"group_size": 32, "bits": 8}}))
    assert qd.read_config(mlx) == qd.Ok(qd.Mlx(bits=8, group_size=32))
