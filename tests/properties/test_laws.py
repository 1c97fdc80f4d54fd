"""Apply the laws in laws.py to every built-in config type, and to arbitrary JSON."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.jsonvalue import Json

from . import laws
from .strategies import CONFIG_STRATEGIES, devices, environments, json_objects, json_values

TYPES = list(CONFIG_STRATEGIES)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_parse_after_dump(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """Every config value survives dump then parse, equal and with the same hash."""
    laws.parse_after_dump_is_identity(data.draw(CONFIG_STRATEGIES[cls]))


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_dump_after_parse_of_dumped_documents(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """A document written by dump is written back identically after parsing."""
    laws.dump_after_parse_is_identity(qd.dump(data.draw(CONFIG_STRATEGIES[cls])))


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_evolved_parsed_config_round_trips(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """A parsed config changed with attrs.evolve dumps its new values, and parses back to itself."""
    source = data.draw(CONFIG_STRATEGIES[cls])
    parsed = qd.parse(qd.dump(source))
    assert isinstance(parsed, qd.Ok)
    other = data.draw(CONFIG_STRATEGIES[cls])
    name = data.draw(st.sampled_from([f.name for f in attrs.fields(cls) if f.eq and f.name != "extras"]))
    changed: Any = attrs.evolve(parsed.value, **{name: getattr(other, name)})
    laws.parse_after_dump_is_identity(changed)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_generated_configs_validate(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """validate accepts every value the strategies build (they build only valid values)."""
    laws.valid_configs_validate(data.draw(CONFIG_STRATEGIES[cls]))


@given(raw=json_values)
def test_parse_never_raises_on_any_json(raw: Json) -> None:
    """parse is total over arbitrary JSON values."""
    laws.parse_is_total(raw)


_KEYS = ["quant_method", "load_in_4bit", "load_in_8bit", "bits", "group_size", "format", "checkpoint_format", "version",
         "w_bit", "q_group_size", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "llm_int8_threshold", "desc_act",
         "sym", "damp_percent", "zero_point", "meta", "tensors", "file_type", "quantization_config", "text_config"]
_VALUES = st.sampled_from(["gptq", "awq", "bitsandbytes", "gguf", "GPTQ", "gemm", "gptq_v2", "nf4", "int3", "bfloat16"]) | json_values


@given(doc=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8), more=json_objects)
def test_parse_never_raises_on_config_shaped_json(doc: dict[str, Json], more: dict[str, Json]) -> None:
    """parse is total over objects made of the keys and values real configs use."""
    laws.parse_is_total({**more, **doc})
    laws.parse_is_total({"quantization_config": doc})


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_selection_is_total(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """Every config type on every device kind gets candidates or a typed refusal."""
    laws.selection_is_total(data.draw(CONFIG_STRATEGIES[cls]), data.draw(devices))


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_plan_is_total(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """plan never raises, and an Ok plan's backend runs on its device with its requirements met."""
    laws.plan_is_total(data.draw(CONFIG_STRATEGIES[cls]), data.draw(environments))
