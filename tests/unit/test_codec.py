"""parse and dump on real configs, legacy spellings and broken input."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

import quantdispatch as qd
from quantdispatch.jsonvalue import Json
from tests.conftest import REALWORLD


def _parsed(doc: object, default_method: str | None = None) -> qd.AbstractQuantConfig:
    r = qd.parse(doc, default_method=default_method)
    assert isinstance(r, qd.Ok), r
    return r.value


FAMILIES = {"bnb-4bit": qd.Bnb4Bit, "bnb-8bit": qd.Bnb8Bit, "gptq": qd.Gptq, "awq": qd.AwqGemm}


def _real_configs() -> list[tuple[Path, type[qd.AbstractQuantConfig]]]:
    root = REALWORLD / "configs"
    if not root.is_dir():
        return []
    return [(p, cls) for folder, cls in FAMILIES.items() for p in sorted((root / folder).glob("*.json"))]


def _codes(r: qd.Result[qd.AbstractQuantConfig, qd.Issues]) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


@pytest.mark.parametrize("path,cls", _real_configs(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_real_configs_round_trip_losslessly(path: Path, cls: type[qd.AbstractQuantConfig]) -> None:
    """Every real bnb/GPTQ/AWQ config parses into its family's type and dumps back unchanged."""
    document = json.loads(path.read_text())
    parsed = qd.parse(document, default_method="gptq" if "quantize_config" in path.name else None)
    assert isinstance(parsed, qd.Ok), parsed
    assert type(parsed.value) is cls
    assert qd.dump(parsed.value) == document
    assert list(qd.dump(parsed.value)) == list(document), "key order is kept"


def test_realworld_corpus_is_present() -> None:
    """The shared corpus, when beside the repository, holds the configs the parametrized tests use."""
    if not REALWORLD.is_dir():
        pytest.skip("shared/realworld is not beside the repository")
    assert len(_real_configs()) >= 25


def test_typed_fields_of_a_real_gptq_config() -> None:
    """Values land in typed fields; unmodelled keys ride along in extras, in order."""
    doc: dict[str, Json] = {"bits": 3, "group_size": -1, "damp_percent": 0.01, "desc_act": True, "model_file_base_name": "model"}
    cfg = _parsed(doc, default_method="gptq")
    assert isinstance(cfg, qd.Gptq)
    assert (cfg.bits, cfg.group_size, cfg.damp_percent, cfg.desc_act, cfg.sym) == (3, -1, 0.01, True, True)
    assert cfg.extras.keys() == ("model_file_base_name",)


def test_same_quantization_written_two_ways_compares_equal() -> None:
    """The wire (spelling) is not part of the value: AutoAWQ's native keys equal Transformers' keys."""
    native = _parsed({"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}, default_method="awq")
    hf = _parsed({"quant_method": "awq", "group_size": 128, "bits": 4, "version": "gemm"})
    assert native == hf and hash(native) == hash(hf)
    assert qd.dump(native) == {"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}


def test_evolve_rewrites_only_what_changed() -> None:
    """A changed field is written canonically; untouched keys keep their source spelling."""
    cfg = _parsed({"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6})
    assert isinstance(cfg, qd.Bnb8Bit)
    assert qd.dump(cfg)["llm_int8_threshold"] == 6
    assert qd.dump(attrs.evolve(cfg, threshold=4.5))["llm_int8_threshold"] == 4.5
    assert qd.dump(attrs.evolve(cfg, has_fp16_weight=True))["llm_int8_has_fp16_weight"] is True


@pytest.mark.parametrize("doc,cls", [
    ({"quant_method": "gptq", "bits": 4, "checkpoint_format": "gptq_v2"}, qd.GptqV2),
    ({"quant_method": "gptq", "bits": 4, "format": "GPTQ_V2"}, qd.GptqV2),
    ({"quant_method": "awq", "version": "gemv_fast"}, qd.AwqGemvFast),
    ({"quant_method": "awq", "format": "gemv"}, qd.AwqGemv),
    ({"quant_method": "awq", "version": "Marlin"}, qd.AwqMarlin),
    ({"quant_method": "awq", "backend": "llm-awq"}, qd.AwqLlm),
    ({"load_in_4bit": True}, qd.Bnb4Bit),
    ({"load_in_8bit": True, "quant_method": "bitsandbytes"}, qd.Bnb8Bit),
    ({"quant_method": "gguf", "architecture": "llama"}, qd.Gguf),
])
def test_variant_lives_in_the_type(doc: dict[str, Json], cls: type[qd.AbstractQuantConfig]) -> None:
    """The discriminator picks the on-disk variant as a type, from every spelling Transformers reads."""
    parsed = qd.parse(doc)
    assert isinstance(parsed, qd.Ok) and type(parsed.value) is cls


def test_config_json_and_text_config_are_located() -> None:
    """A whole config.json works; the block is found under quantization_config or text_config."""
    top = qd.parse({"model_type": "llama", "quantization_config": {"quant_method": "awq"}})
    nested = qd.parse({"model_type": "llava", "text_config": {"quantization_config": {"quant_method": "gptq", "bits": 9}}})
    assert isinstance(top.value if isinstance(top, qd.Ok) else None, qd.AwqGemm)
    assert isinstance(nested, qd.Err) and nested.error[0].path == "$.text_config.quantization_config.bits"


def test_every_problem_is_reported_at_once() -> None:
    """Invalid input lists every issue, each with a code, a JSON path and a message."""
    r = qd.parse({"quant_method": "gptq", "bits": 5, "group_size": 0, "desc_act": "yes", "damp_percent": 1.5})
    assert isinstance(r, qd.Err)
    assert {(i.code, i.path) for i in r.error} == {
        ("gptq.bits.not_allowed", "$.bits"), ("gptq.group_size.range", "$.group_size"),
        ("gptq.desc_act.type", "$.desc_act"), ("gptq.damp_percent.range", "$.damp_percent"),
    }


@pytest.mark.parametrize("doc,codes", [
    ({"load_in_4bit": True, "load_in_8bit": True}, ["bnb.load_in.conflict"]),
    ({"load_in_4bit": True, "quant_method": "gptq"}, ["bnb.quant_method.conflict"]),
    ({"load_in_4bit": "yes"}, ["bnb.load_in_4bit.type"]),
    ({"quant_method": "bitsandbytes", "_load_in_4bit": True}, ["bnb.load_in.missing"]),
    ({"load_in_4bit": True, "bnb_4bit_quant_type": "int3", "bnb_4bit_compute_dtype": "float17"},
     ["bnb.bnb_4bit_quant_type.not_allowed", "bnb.bnb_4bit_compute_dtype.not_allowed"]),
    ({"quant_method": "gptq", "bits": 4, "format": "gptq", "checkpoint_format": "gptq_v2"}, ["gptq.format.conflict"]),
    ({"quant_method": "gptq", "bits": 4, "format": "marlin"}, ["gptq.format.unsupported"]),
    ({"quant_method": "gptq"}, ["gptq.bits.missing"]),
    ({"quant_method": "awq", "version": "exllama"}, ["awq.version.unsupported"]),
    ({"quant_method": "awq", "bits": 4, "w_bit": 8}, ["awq.w_bit.not_allowed"]),
    ({"quant_method": "awq", "group_size": 64, "q_group_size": 128}, ["awq.group_size.conflict"]),
    ({"quant_method": "fp8", "activation_scheme": "sometimes"}, ["fp8.activation_scheme.not_allowed"]),
    ({"quant_method": "GPTQ"}, ["method.unknown"]),
    ({"quant_method": 4}, ["method.type"]),
    ({"bits": 4}, ["method.missing"]),
    ({"quant_method": "gguf", "tensors": [{"name": "a", "type": "Q9_K"}]}, ["gguf.tensors.unknown"]),
    ([1, 2], ["json.type"]),
    ({"quant_method": "gptq", "bits": 4, "damp_percent": float("nan")}, ["json.value"]),
])
def test_invalid_input_gets_coded_issues(doc: object, codes: list[str]) -> None:
    """Contradictory flags, unknown methods, wrong types and ranges each get their stable code."""
    assert _codes(qd.parse(doc)) == codes


def test_unknown_method_hint_names_the_nearest() -> None:
    """A miscased or misspelt method string gets the nearest known one as a hint."""
    r = qd.parse({"quant_method": "GPTQ"})
    assert isinstance(r, qd.Err) and r.error[0].hint is not None and "'gptq'" in r.error[0].hint
    r2 = qd.parse({"quant_method": "compressed-tensor"})
    assert isinstance(r2, qd.Err) and r2.error[0].hint is not None and "'compressed-tensors'" in r2.error[0].hint


def test_transformers_style_dump_of_bnb() -> None:
    """The transformers style writes every key Transformers 5 writes, private flags included."""
    out = qd.dump(qd.Bnb4Bit(quant_type="nf4"), style="transformers")
    assert out["_load_in_4bit"] is True and out["load_in_4bit"] is True and out["load_in_8bit"] is False
    assert out["bnb_4bit_compute_dtype"] == "float32" and out["llm_int8_threshold"] == 6.0


def test_dump_refuses_unregistered_types() -> None:
    """dump of a config type nobody registered is a usage error, raised."""

    @attrs.frozen(kw_only=True)
    class Stray(qd.AbstractQuantConfig):
        pass

    with pytest.raises(TypeError, match="no codec entry"):
        qd.dump(Stray())


def test_field_specs_agree_with_the_attrs_fields() -> None:
    """Every typed FieldSpec's default is its attrs field's default; keys differ from attribute
    names only where the format says so (listed here)."""
    from quantdispatch.codec.registry import families

    bnb = {"skip_modules": "llm_int8_skip_modules", "enable_fp32_cpu_offload": "llm_int8_enable_fp32_cpu_offload",
           "threshold": "llm_int8_threshold", "has_fp16_weight": "llm_int8_has_fp16_weight",
           "quant_type": "bnb_4bit_quant_type", "compute_dtype": "bnb_4bit_compute_dtype",
           "use_double_quant": "bnb_4bit_use_double_quant", "quant_storage": "bnb_4bit_quant_storage"}
    others = {"sinq_method": "method"}  # SINQ's "method" key would shadow the method ClassVar
    for family in families():
        for spec in family.specs:
            fields = {a.name: a for a in attrs.fields(spec.cls)}
            for f in spec.fields:
                if f.attr is None:
                    continue
                renamed = bnb if spec.prefix == "bnb" else others
                assert f.key == renamed.get(f.attr, f.attr), (spec.cls.__name__, f.attr)
                default = fields[f.attr].default
                assert f.required == (default is attrs.NOTHING)
                assert f.required or f.default == default, (spec.cls.__name__, f.attr)


def test_nested_problems_are_located_inside_the_value() -> None:
    """A bad entry deep in a value is reported at its own JSON path."""
    r = qd.parse({"quant_method": "gguf", "tensors": [{"name": "a", "type": "F32"}, {"name": "b", "type": "Q99"}]})
    assert isinstance(r, qd.Err) and [(i.code, i.path) for i in r.error] == [("gguf.tensors.unknown", "$.tensors[1].type")]
