"""Decoding JSON text strictly, with every problem located by line and column.

Python's ``json`` accepts what JSON does not (``NaN``, ``Infinity``, duplicate keys, where the
last silently wins) and reports over-long integers without a position. ``decode_json`` refuses
all of them, and for each says where it is, as it does for syntax errors: the hooks stop the
decoder at the first offender, then a linear scan of the text finds that offender's position.

>>> decode_json('{"bits": 4, "bits": 8}').error[0].path
'$[line 1, column 13]'
>>> decode_json('{"damp": NaN}').error[0].code
'json.value.not_finite'
"""

from __future__ import annotations

import json
import math
import re
from typing import Final

from .result import Err, Issue, Issues, Ok, Result
from .text import quote

__all__ = ["MAX_INT_DIGITS", "decode_json"]

MAX_INT_DIGITS: Final = 40
"""Integers longer than this (beyond 128 bits) are refused: no config value is that large, and
Python's ``int`` conversion of a number thousands of digits long is slow or refused."""


class _Offence(ValueError):
    """Raised by a hook to stop decoding at the first value JSON (or we) do not accept."""


def _constant(name: str) -> object:
    raise _Offence(name)


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Offence(text)
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Offence(text)
    return value


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Offence("duplicate key")
    return out


def decode_json(text: str) -> Result[object, Issues]:
    """Decode JSON text; a syntax error, a duplicate key, NaN or infinity, or an over-long
    integer is an issue located by line and column. Never raises."""
    try:
        return Ok(json.loads(text, parse_constant=_constant, parse_int=_integer, parse_float=_real, object_pairs_hook=_pairs))
    except json.JSONDecodeError as e:
        hint = None
        if text[e.pos:e.pos + 5].startswith(("True", "False", "None")):
            hint = "Python's True/False/None are not JSON: write true/false/null"
        return Err((Issue("json.syntax", _where(text, e.pos), e.msg, hint),))
    except _Offence:
        return Err((_locate(text),))
    except RecursionError:
        return Err((Issue("json.too_deep", "$", "nested too deeply to read"),))
    except ValueError as e:  # defensive: the decoder's own limits
        return Err((Issue("json.value", "$", quote(str(e)), None),))


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"$[line {line}, column {column}]"


_TOKEN = re.compile(r'''
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?P<frac>\.[0-9]+)?(?P<exp>[eE][+-]?[0-9]+)?)
  | (?P<constant>-?Infinity|NaN)
  | (?P<punct>[{}\[\]:,])
  | (?P<word>true|false|null)
  | (?P<space>\s+)
''', re.VERBOSE | re.DOTALL)


def _locate(text: str) -> Issue:
    """Find the first value the decoder's hooks refused, scanning the text once."""
    objects: list[set[str] | None] = []  # per open bracket: the keys seen (None for arrays)
    expect_key = False
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        kind, token, start = m.lastgroup, m.group(0), pos
        pos = m.end()
        if kind == "string" and expect_key and objects and objects[-1] is not None:
            key = json.loads(token)
            if key in objects[-1]:
                return Issue("json.key.duplicate", _where(text, start), f"the key {quote(key)} appears twice in one object",
                             "JSON readers disagree on which one wins; keep one")
            objects[-1].add(key)
        elif kind == "constant":
            return Issue("json.value.not_finite", _where(text, start), f"{token} is not a JSON number", "write a finite number or null")
        elif kind == "number":
            if m.group("frac") is None and m.group("exp") is None and len(token.lstrip("-")) > MAX_INT_DIGITS:
                return Issue("json.number.too_long", _where(text, start), f"an integer of {len(token.lstrip('-'))} digits",
                             f"no config value needs more than {MAX_INT_DIGITS} digits")
            if not math.isfinite(float(token)):
                return Issue("json.value.not_finite", _where(text, start), f"{quote(token)} is beyond the range of a number",
                             "write a finite number")
        elif token in "{[":
            objects.append(set() if token == "{" else None)
            expect_key = token == "{"
        elif token in "}]":
            if objects:
                objects.pop()
            expect_key = False
        elif token == ":":
            expect_key = False
        elif token == ",":
            expect_key = bool(objects) and objects[-1] is not None
    return Issue("json.value", "$", "a value JSON does not allow")
