"""Ok, Err, Issue and collect."""

from __future__ import annotations

from typing import assert_never

import pytest

from quantdispatch import Err, Issue, Issues, Ok, Result
from quantdispatch.result import collect


def _half(n: int) -> Result[int, Issues]:
    return Err((Issue("demo.odd", "$", f"{n} is odd"),)) if n % 2 else Ok(n // 2)


def _describe(r: Result[int, Issues]) -> str:
    match r:
        case Ok(v):
            return f"ok {v}"
        case Err(e):
            return f"err {e[0].code}"
        case _:
            assert_never(r)


def test_match_reaches_both_arms() -> None:
    """A Result is consumed with match, binding the value or the issues."""
    assert _describe(_half(4)) == "ok 2"
    assert _describe(_half(3)) == "err demo.odd"


def test_collect_keeps_every_issue() -> None:
    """collect returns all values when all are Ok, else the issues of every Err in order."""
    oks: list[Result[int, Issues]] = [Ok(1), Ok(2)]
    assert collect(oks) == Ok((1, 2))
    a, b = Issue("a", "$", "x"), Issue("b", "$.k", "y", "z")
    mixed: list[Result[int, Issues]] = [Err((a,)), Ok(1), Err((b,))]
    assert collect(mixed) == Err((a, b))


def test_values_are_frozen_and_hashable() -> None:
    """Ok, Err and Issue compare structurally, hash, and refuse mutation."""
    one: object = Err(1)
    assert Ok(1) == Ok(1) and hash(Ok(1)) == hash(Ok(1)) and Ok(1) != one
    issue = Issue("c", "$", "m")
    with pytest.raises(AttributeError):
        issue.code = "d"  # type: ignore[misc]


def test_render() -> None:
    """Issues render on one line, with their hint when they have one."""
    assert Issue("x.y", "$.a", "bad", "do this").render() == "x.y at $.a: bad (hint: do this)"
    assert Issue("x.y", "$.a", "bad").render() == "x.y at $.a: bad"
