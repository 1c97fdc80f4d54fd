"""Errors as values: ``Ok``, ``Err`` and the ``Issue`` they carry.

The pure core never raises on bad input. Every function that can meet bad data returns a
``Result``: ``Ok(value)`` or ``Err(issues)``, where ``issues`` is a tuple of every problem found,
not only the first. Consume a result with ``match``; with ``case _: assert_never(r)`` mypy checks
that both arms are handled.

>>> from quantdispatch.result import Ok, Err, Issue
>>> def half(n: int) -> Result[int, Issues]:
...     if n % 2:
...         return Err((Issue("demo.odd", "$", f"{n} is odd"),))
...     return Ok(n // 2)
>>> match half(4):
...     case Ok(v): print(v)
...     case Err(e): print(e[0].code)
2
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, NoReturn, TypeAlias, TypeVar

import attrs

__all__ = ["Issue", "Issues", "Ok", "Err", "Result", "IssuesError", "collect"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
E_co = TypeVar("E_co", covariant=True)


@attrs.frozen
class Issue:
    """One problem found in the input, located and explained.

    Attributes:
        code: A stable dotted identifier, ``family.field.problem`` (``gptq.bits.unsupported``).
            Codes are part of the public API: tools may match on them.
        path: A JSON path into the input (``$.quantization_config.bits``), or for a binary file a
            byte location (``$[offset 24]``).
        message: What is wrong, quoting the value seen.
        hint: What to do instead, or the nearest valid value; ``None`` when there is nothing useful
            to suggest.
    """

    code: str
    path: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        """Render as one human-readable line: ``code at path: message (hint)``."""
        text = f"{self.code} at {self.path}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


Issues: TypeAlias = tuple[Issue, ...]


class IssuesError(Exception):
    """What ``Err.unwrap()`` raises: every issue, one per line, for scripts that prefer exceptions.

    Attributes:
        issues: The issues, as values (codes and paths intact).
    """

    def __init__(self, issues: tuple[Issue, ...]) -> None:
        self.issues = issues
        lines = [i.render() for i in issues[:50]]
        more = f"\n  … and {len(issues) - 50} more" if len(issues) > 50 else ""
        super().__init__(f"{len(issues)} issue{'s' if len(issues) != 1 else ''}:\n  " + "\n  ".join(lines) + more)


@attrs.frozen
class Ok(Generic[T_co]):
    """The success arm of a ``Result``."""

    value: T_co

    def unwrap(self) -> T_co:
        """Return the value (the raising one-liner for scripts: ``qd.load(p).unwrap().model``)."""
        return self.value


@attrs.frozen
class Err(Generic[E_co]):
    """The failure arm of a ``Result``; in this library ``error`` is always ``Issues``."""

    error: E_co

    def unwrap(self) -> NoReturn:
        """Raise ``IssuesError`` listing every issue (``error`` must be ``Issues``)."""
        error: object = self.error
        issues = tuple(i for i in error if isinstance(i, Issue)) if isinstance(error, tuple) else ()
        raise IssuesError(issues or (Issue("result.err", "$", repr(error)),))


Result: TypeAlias = Ok[T_co] | Err[E_co]


def collect(results: Iterable[Result[T, Issues]]) -> Result[tuple[T, ...], Issues]:
    """Turn many results into one: all values if every one is ``Ok``, else every issue of all.

    >>> collect([Ok(1), Ok(2)])
    Ok(value=(1, 2))
    >>> collect([Ok(1), Err((Issue("a", "$", "x"),))]).error[0].code
    'a'
    """
    values: list[T] = []
    issues: list[Issue] = []
    for r in results:
        if isinstance(r, Ok):
            values.append(r.value)
        else:
            issues.extend(r.error)
    return Err(tuple(issues)) if issues else Ok(tuple(values))

