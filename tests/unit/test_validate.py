"""validate on configs built in code, and the field tables' defaults."""

from __future__ import annotations

from typing import Any

import pytest

import quantdispatch as qd
from quantdispatch.codec.fields import Problem
from quantdispatch.codec.registry import families


def _all_specs() -> list[Any]:
    return [spec for family in families() for spec in family.specs]


@pytest.mark.parametrize("spec", _all_specs(), ids=lambda s: s.cls.__name__)
def test_every_default_is_valid(spec: Any) -> None:
    """Each field's default survives its own encoder and decoder (validate skips defaults on this basis)."""
    for f in spec.fields:
        if f.attr is None or f.required:
            continue  # inert keys have no default value on the type; required ones have none at all
        back = f.decode(f.encode(f.default))
        assert not isinstance(back, Problem), (f.key, back)
        assert back == f.default, f.key


@pytest.mark.parametrize("config,codes", [
    (qd.Gptq(bits=4, group_size=0), ["gptq.group_size.range"]),
    (qd.Gptq(bits="4"), ["gptq.bits.not_allowed"]),  # type: ignore[arg-type]
    (qd.Gptq(bits=4, damp_percent=1.0), ["gptq.damp_percent.range"]),
    (qd.Bnb4Bit(skip_modules=["lm_head"]), ["bnb.llm_int8_skip_modules.type"]),  # type: ignore[arg-type]
    (qd.Bnb4Bit(compute_dtype=qd.DType.INT8), ["bnb.bnb_4bit_compute_dtype.not_float"]),
    (qd.Bnb8Bit(threshold=-1.0), ["bnb.llm_int8_threshold.range"]),
    (qd.AwqGemm(bits=8), ["awq.bits.not_allowed"]),  # type: ignore[arg-type]
    (qd.Gguf(tensors=(qd.GgufTensor("a", qd.GgmlType.Q4_K, (100,)),)), ["gguf.tensor.shape_misaligned"]),
    (qd.Gguf(tensors=(qd.GgufTensor("a", qd.GgmlType.F32), qd.GgufTensor("a", qd.GgmlType.F32))), ["gguf.tensor.duplicate_name"]),
])
def test_values_built_in_code_are_checked(config: qd.AbstractQuantConfig, codes: list[str]) -> None:
    """Annotations are not enforced at run time, so validate re-checks what the parser would have."""
    result = qd.validate(config)
    assert isinstance(result, qd.Err), result
    assert [i.code for i in result.error] == codes


def test_valid_values_pass_unchanged() -> None:
    """A valid config comes back as the very same object."""
    cfg = qd.Bnb4Bit(quant_type="nf4", compute_dtype=qd.DType.BFLOAT16, skip_modules=("lm_head",))
    result = qd.validate(cfg)
    assert isinstance(result, qd.Ok) and result.value is cfg


def test_gptqmodel_pack_dtype_other_than_int32_is_refused_at_the_config() -> None:
    """GPTQModel's ``pack_dtype``: int32 (what it writes for GPTQ) validates; int16 is one issue at
    ``$.pack_dtype``, not a dtype error per tensor at load."""
    ok = qd.parse({"quant_method": "gptq", "bits": 4, "group_size": 128, "pack_dtype": "int32"}).unwrap()
    assert isinstance(qd.validate(ok), qd.Ok)
    bad = qd.parse({"quant_method": "gptq", "bits": 4, "group_size": 128, "pack_dtype": "int16"}).unwrap()
    found = qd.validate(bad)
    assert isinstance(found, qd.Err)
    assert [(i.code, i.path) for i in found.error] == [("gptq.pack_dtype.not_allowed", "$.pack_dtype")]
    assert "int16" in found.error[0].message
