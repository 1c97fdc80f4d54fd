"""The laws every config type obeys, as named functions (applied in test_laws.py).

Each law returns nothing and asserts; a failing law reports the first field that differs.
"""

from __future__ import annotations

import attrs

import quantdispatch as qd
from quantdispatch.jsonvalue import Json


def first_difference(a: qd.AbstractQuantConfig, b: qd.AbstractQuantConfig) -> str:
    """Name the first field in which two configs differ (for failure messages)."""
    if type(a) is not type(b):
        return f"type {type(a).__name__} != {type(b).__name__}"
    for f in attrs.fields(type(a)):
        if f.eq and getattr(a, f.name) != getattr(b, f.name):
            return f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
    return "no field differs"


def parse_after_dump_is_identity(config: qd.AbstractQuantConfig) -> None:
    """parse(dump(c)) == Ok(c)."""
    back = qd.parse(qd.dump(config))
    assert isinstance(back, qd.Ok), back
    assert back.value == config, first_difference(back.value, config)
    assert hash(back.value) == hash(config)


def dump_after_parse_is_identity(document: dict[str, Json], default_method: str | None = None) -> None:
    """dump(parse(d)) == d for a valid document."""
    parsed = qd.parse(document, default_method=default_method)
    assert isinstance(parsed, qd.Ok), parsed
    assert qd.dump(parsed.value) == document


def parse_is_total(raw: object) -> None:
    """parse returns a Result for any input and never raises; errors carry codes and paths."""
    result = qd.parse(raw)
    assert isinstance(result, (qd.Ok, qd.Err))
    if isinstance(result, qd.Err):
        assert result.error and all(i.code and i.path.startswith("$") for i in result.error)
    else:
        assert isinstance(result.value, qd.AbstractQuantConfig)


def valid_configs_validate(config: qd.AbstractQuantConfig) -> None:
    """validate accepts every well-typed value and returns it unchanged."""
    result = qd.validate(config)
    assert isinstance(result, qd.Ok), result
    assert result.value is config


def selection_is_total(config: qd.AbstractQuantConfig, device: qd.AbstractDevice) -> None:
    """select_backend answers every (config, device) with candidates or a typed refusal."""
    answer = qd.select_backend(config, device)
    if isinstance(answer, qd.Refusal):
        assert answer.code and answer.message
    else:
        assert answer and all(isinstance(c, qd.Candidate) for c in answer)


def plan_is_total(config: qd.AbstractQuantConfig, env: qd.Environment) -> None:
    """plan returns Ok or Err for any config and environment; an Ok plan's backend fits the device."""
    result = qd.plan(config, env)
    if isinstance(result, qd.Ok):
        p = result.value
        kind = "cuda" if isinstance(p.device, qd.Cuda) else "mps" if isinstance(p.device, qd.Mps) else "cpu"
        assert kind in p.backend.devices
        assert all(r.check(env) is None for r in p.backend.requires)
    else:
        assert result.error
