"""The generated artefacts: JSON Schemas derived from the codec, and the supported-methods table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.catalog import methods_table, splice
from quantdispatch.cli import main
from quantdispatch.schema import all_schemas, json_schema

from ..properties.strategies import CONFIG_STRATEGIES

jsonschema = pytest.importorskip("jsonschema")
ROOT = Path(__file__).resolve().parents[2]
TYPES = [t for t in CONFIG_STRATEGIES if t is not qd.Gguf]  # GGUF's JSON form is ours alone; tested below all the same


def _validator(cls: type[qd.AbstractQuantConfig]) -> Any:
    schema = json_schema(cls)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("cls", list(CONFIG_STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=20)
@given(data=st.data())
def test_dumped_configs_validate_against_their_schema(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """Every document dump writes is valid under its type's schema (and the schema is a valid 2020-12 schema)."""
    document = qd.dump(data.draw(CONFIG_STRATEGIES[cls]))
    errors = sorted(_validator(cls).iter_errors(document), key=str)
    assert not errors, errors[0]


@pytest.mark.parametrize(("cls", "document"), [
    (qd.Gptq, {"quant_method": "gptq", "bits": 5}),
    (qd.Gptq, {"quant_method": "gptq", "bits": 4, "group_size": 0}),
    (qd.Bnb4Bit, {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float42"}),
    (qd.Fp8, {"quant_method": "fp8", "activation_scheme": "sometimes"}),
    (qd.Fp8, {"quant_method": "fp8", "weight_block_size": [128]}),
    (qd.Higgs, {"quant_method": "higgs", "bits": 5}),
    (qd.CompressedTensors, {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": "4"}}}}),
    (qd.CompressedTensors, {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {"bits": 4}}}}),
    (qd.CompressedTensors, {"quant_method": "compressed-tensors", "quantization_status": "done"}),
    (qd.Torchao, {"quant_method": "torchao", "quant_type": "int4_weight_only"}),
    (qd.ModeloptNvfp4, {"quantization": {"quant_algo": "NVFP4", "group_size": "16"}}),
    (qd.Mlx, {"quant_method": "mlx", "bits": 7}),
])
def test_invalid_documents_are_rejected_by_schema_and_parser(cls: type[qd.AbstractQuantConfig], document: dict[str, Any]) -> None:
    """Invalid documents fail both the schema and ``parse``."""
    assert list(_validator(cls).iter_errors(document))
    assert isinstance(qd.parse(document, default_method="modelopt"), qd.Err)


def test_every_registered_type_has_a_schema() -> None:
    """``all_schemas`` covers every registered config type, each a valid 2020-12 schema."""
    schemas = all_schemas()
    assert {c.__name__ for c in CONFIG_STRATEGIES} <= set(schemas)
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    """``quantdispatch schema METHOD`` prints the schema; a legacy alias finds its family; an unknown method fails."""
    import json

    assert main(["schema", "sparseml"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "CompressedTensors"
    assert main(["schema", "awq"]) == 0
    assert len(json.loads(capsys.readouterr().out)["oneOf"]) == 5
    assert main(["schema", "nope"]) == 1


@pytest.mark.parametrize("doc", ["README.md", "docs/methods.md"])
def test_methods_table_has_not_drifted(doc: str) -> None:
    """The table in the docs is the one the registry generates (refresh: python -m quantdispatch.catalog --write)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert splice(text, methods_table()) == text, f"{doc} is stale: run python -m quantdispatch.catalog --write"


def test_methods_table_lists_every_family() -> None:
    """Every registered method string and every declared backend has a row."""
    table = methods_table()
    from quantdispatch.codec.registry import families
    from quantdispatch.methods import BUILTIN_BACKENDS

    assert all(f"`{f.method}`" in table for f in families() if f.specs[0].cls.__module__.startswith("quantdispatch."))
    assert all(f"`{name}`" in table for name in BUILTIN_BACKENDS)
