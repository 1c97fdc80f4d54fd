"""Equal means same behaviour: what ``==`` ignores (the source's spelling) changes nothing that a
load, a reconcile, a validation or a canonical dump does; what it sees always shows in the dump."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.codec.registry import spec_for
from quantdispatch.codec.spec import canonical

from .strategies import CONFIG_STRATEGIES, environments

TYPES = list(CONFIG_STRATEGIES)


def _behaviour(config: qd.AbstractQuantConfig, env: qd.Environment, other: qd.AbstractQuantConfig) -> tuple[object, ...]:
    """Everything observable about a config, except its source spelling."""
    spec = spec_for(type(config))
    assert spec is not None
    transformers = qd.dump(config, style="transformers") if spec.to_transformers else None
    return (
        qd.plan(config, env), qd.plan(None, env, qd.LoadOptions(user_config=config)),
        qd.reconcile(other, config), qd.reconcile(config, other),
        qd.validate(config), canonical(spec, config), transformers,
    )


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_equal_configs_behave_the_same(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """A config built in code and the same config parsed from its dump: equal, same behaviour."""
    built = data.draw(CONFIG_STRATEGIES[cls])
    parsed = qd.parse(qd.dump(built))
    assert isinstance(parsed, qd.Ok) and parsed.value == built and parsed.value.source is not None
    env = data.draw(environments)
    other = data.draw(CONFIG_STRATEGIES[cls])
    assert _behaviour(built, env, other) == _behaviour(parsed.value, env, other)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_unequal_configs_differ_in_their_canonical_dump(cls: type[qd.AbstractQuantConfig], data: st.DataObject) -> None:
    """Whatever ``==`` sees is written by the canonical dump: a == b exactly when the dumps agree."""
    spec = spec_for(cls)
    assert spec is not None
    a = data.draw(CONFIG_STRATEGIES[cls])
    field = data.draw(st.sampled_from([f for f in spec.fields if f.attr is not None]))
    donor = data.draw(CONFIG_STRATEGIES[cls])
    assert field.attr is not None
    changes: dict[str, Any] = {field.attr: getattr(donor, field.attr)}
    b = attrs.evolve(a, **changes)
    assert (a == b) == (canonical(spec, a) == canonical(spec, b))
