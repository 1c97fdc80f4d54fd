"""Bounded, printable renderings of untrusted values for messages and terminal output.

Checkpoint files are written by strangers: a key can be megabytes long, an integer can have
thousands of digits (``str()`` refuses those), and a string can hold newlines, terminal escapes or
lone surrogates that no encoder accepts. Every message that quotes such a value goes through
``quote``; every line the CLI prints goes through ``printable``.

>>> len(quote("x" * 10_000_000)) <= MAX_QUOTE + 1
True
>>> quote(10**400)
'an integer of 401 digits'
>>> printable("a\\nb\\ud800")
'a\\\\nb\\\\ud800'
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["MAX_QUOTE", "quote", "printable", "digits"]

MAX_QUOTE: Final = 80
"""The longest rendering of one value inside a message, in characters."""

_BIG_INT_BITS: Final = 256


def digits(n: int) -> int:
    """Return the number of decimal digits of ``n`` without converting it to text."""
    bits = abs(n).bit_length()
    if bits <= _BIG_INT_BITS:
        return len(str(abs(n)))
    return int(bits * math.log10(2)) + 1


def quote(value: object, limit: int = MAX_QUOTE) -> str:
    """Render ``value`` like ``repr``, cut to about ``limit`` characters; never raises.

    Containers are walked only as far as the limit needs, so a deep or huge value costs no more
    than a small one.
    """
    out: list[str] = []
    _render(value, out, limit)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + "…"


def _render(value: object, out: list[str], budget: int) -> None:
    # An explicit stack, not recursion: a value nested 10,000 deep is quoted like any other.
    stack: list[object] = [value]
    used = 0
    while stack and used <= budget:
        item = stack.pop()
        if isinstance(item, _Lit):
            piece = item.text
        elif isinstance(item, bool) or item is None:
            piece = repr(item)
        elif isinstance(item, int):
            piece = repr(item) if abs(item).bit_length() <= _BIG_INT_BITS else f"an integer of {digits(item)} digits"
        elif isinstance(item, str):
            piece = repr(item[: budget + 2])
            if len(item) > budget + 2:
                piece = piece[:-1]
        elif isinstance(item, (list, tuple)):
            opening, closing = ("[", "]") if isinstance(item, list) else ("(", ")")
            parts: list[object] = [_Lit(opening)]
            for i, v in enumerate(item[: budget // 2 + 1]):
                parts += [_Lit(", ")] if i else []
                parts.append(v)
            parts.append(_Lit(closing))
            stack.extend(reversed(parts))
            continue
        elif isinstance(item, dict):
            parts = [_Lit("{")]
            for i, (k, v) in enumerate(item.items()):
                if i > budget // 4:
                    break
                parts += [_Lit(", ")] if i else []
                parts += [k, _Lit(": "), v]
            parts.append(_Lit("}"))
            stack.extend(reversed(parts))
            continue
        else:
            try:
                piece = repr(item)[: budget + 1]
            except Exception:  # a hostile __repr__ must not break an error message
                piece = f"<{type(item).__name__}>"
        out.append(piece)
        used += len(piece)


class _Lit:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def printable(text: str) -> str:
    """Escape what a terminal line must not contain: control characters, line breaks, lone
    surrogates and other unprintable code points, as ``\\n``, ``\\x1b``, ``\\ud800``.

    Printable text, including non-ASCII letters, is kept as it is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    if c in "\n\r\t":
        return repr(c)[1:-1]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
