"""What every command of the CLI shares: checked numeric options and a stdout kept for JSON.

Numbers on a command line are typed by strangers too: ``--repeat 1e9``, ``--threads -1``,
``--max-new-tokens nan`` or a thousand digits. ``IntRange`` and ``capability`` are argparse
``type=`` functions that accept only plain decimal numbers inside a documented range, so a bad
value is a usage error (status 2, a message on stderr) before anything runs.

A ``--json`` command writes exactly one JSON document to stdout, on success and on failure.
``json_output`` keeps stdout for it: while the command runs, whatever else would reach stdout
(a library's banner, a C extension's ``printf``) goes to stderr, and ``emit_json`` holds the record
back until the streams are restored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from typing import Final, TextIO

import attrs

from .jsonvalue import Json
from .result import Issue
from .text import quote

__all__ = ["IntRange", "capability", "backend_name", "MAX_BACKEND_NAME", "MMAP_HELP", "issue_json", "emit_json", "json_output"]

_DECIMAL: Final = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)


@attrs.frozen
class IntRange:
    """An argparse ``type=`` accepting a decimal integer from ``low`` to ``high``, both included.

    Refuses, as ``argparse.ArgumentTypeError`` (argparse turns it into status 2): text that is not
    plain ASCII decimal digits (``1e3``, ``0x10``, ``1_000``, ``nan``, ``inf``, ``٣``, an empty
    string), and a number outside the range.

    >>> IntRange(1, 8)("3")
    3
    >>> IntRange(1, 8)("9")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: 9 is out of range: expected an integer from 1 to 8
    """

    low: int
    high: int

    def __call__(self, text: str) -> int:
        """Parse ``text``, or raise ``argparse.ArgumentTypeError`` saying what is expected."""
        expected = f"expected an integer from {self.low} to {self.high}"
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{quote(text)} is not an integer: {expected}")
        value = int(text)
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {expected}")
        return value


_CAPABILITY: Final = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})", re.ASCII)


def capability(text: str) -> tuple[int, int]:
    """Parse a CUDA compute capability such as ``8.0`` or ``12.0`` (major 1 to 99, minor 0 to 99).

    >>> capability("8.6")
    (8, 6)
    """
    m = _CAPABILITY.fullmatch(text)
    if m is None or int(m[1]) < 1:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a compute capability such as 8.0 (major 1 to 99, minor 0 to 99)")
    return int(m[1]), int(m[2])


MAX_BACKEND_NAME: Final = 100


def backend_name(text: str) -> str:
    """An argparse ``type=`` for ``--backend``: 1 to 100 printable characters without spaces.

    The name is quoted back in every rejected backend's reason; a megabyte of it, or a terminal
    escape, is a usage error instead.

    >>> backend_name("cpu-int4")
    'cpu-int4'
    """
    if not (0 < len(text) <= MAX_BACKEND_NAME and text.isprintable() and not any(c.isspace() for c in text)):
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a backend name: 1 to {MAX_BACKEND_NAME} printable characters, "
                                         "no spaces (inspect lists the backends)")
    return text


def issue_json(issue: Issue) -> dict[str, Json]:
    """An issue as a JSON object: ``code``, ``path``, ``message``, ``hint``."""
    return {"code": issue.code, "path": issue.path, "message": issue.message, "hint": issue.hint}


_held: list[str] | None = None


def emit_json(value: Json, *, indent: int | None = None) -> None:
    """Print ``value`` as JSON on stdout, or, inside ``json_output``, once stdout is restored.

    The text is ASCII (``json.dumps`` escapes the rest), so no terminal encoding can garble it,
    and strict JSON: a float that is NaN or infinite (a speed over a zero time) becomes ``null``.
    """
    text = json.dumps(_finite(value), indent=indent, allow_nan=False)
    if _held is None:
        print(text)
    else:
        _held.append(text)


def _finite(value: Json) -> Json:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def json_output() -> Iterator[None]:
    """While the block runs, send what would reach stdout to stderr; then print the held records.

    Nothing is printed when the block raises: the caller prints the failure's record instead.
    """
    global _held
    outer, _held = _held, []
    try:
        with _stdout_to_stderr():
            yield
        for text in _held:
            print(text)
    finally:
        _held = outer


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # Python's writes follow sys.stdout; C's follow descriptor 1, whatever sys.stdout is.
    err: TextIO = sys.stderr if sys.stderr is not None else open(os.devnull, "w")  # closed below
    saved: int | None = None
    try:
        os.fstat(1)
        os.fstat(2)
    except OSError:
        pass
    else:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(err):
            yield
    finally:
        if saved is not None:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)
        if err is not sys.stderr:
            err.close()


def _flush_c_stdio() -> None:
    # A C library's printf buffers in libc; flush it while fd 1 still points at stderr.
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


MMAP_HELP = ("keep weights stored as-is in the memory-mapped file (less memory; the file must not change while the model "
             "runs). Default: copy them into private memory at load")
"""The help of ``--mmap`` (``load``, ``generate``, ``bench``): the CLI copies weights by default."""
