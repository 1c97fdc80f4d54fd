"""``quantdispatch/loading/`` names no quantization method: everything it knows about a packing
comes from the layout's declarations, so a new format is a layout file, not a loader change.

The words are derived, not listed: the built-in families' method strings and aliases, the first
word of each built-in config type's name (``Gptq``, ``Awq``, ``Bnb``…), and the marker tensors
of the built-in layouts (``qweight``, ``weight_packed``…). Every identifier, string, docstring and
comment of every file under ``loading/`` is split into words (snake_case, camelCase, punctuation)
and compared; a hit names ``file:line``.

One word is allowed: ``gguf``. GGUF is a container format as well as a method, and ``loading/``
opens GGUF files the way it opens safetensors ones (``loading/gguf.py`` finds the shards and reads
each header once into a ``GgufSource``); what the blocks mean is the GGUF layout's and backend's.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Final

import quantdispatch  # noqa: F401  (registers the built-in families and layouts)
from quantdispatch.codec.registry import families
from quantdispatch.layouts import Dense, layouts

LOADING: Final = Path(__file__).resolve().parents[2] / "quantdispatch" / "loading"
NOT_SCANNED: Final = frozenset[str]()
"""Every file is scanned."""
NOT_METHOD_WORDS: Final = frozenset({"gguf", "auto", "bit", "four", "metal", "gemma"})
"""``gguf``: the container format (see above). The others are first words of config type names that
are ordinary words here: ``auto`` (AutoRound; ``dtype="auto"``, ``AutoConfig``), ``bit`` (BitNet),
``four`` (FourOverSix), ``metal`` (a device), ``gemma`` (an architecture)."""


def _words(text: str) -> list[str]:
    """Lower-case words of an identifier or a piece of text: snake_case, camelCase and punctuation split."""
    spaced = re.sub(r"([a-z0-9])([A-Z])|([A-Za-z])([0-9])", lambda m: f"{m.group(1) or m.group(3)} {m.group(2) or m.group(4)}", text)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def _builtin_words() -> frozenset[str]:
    words: set[str] = set()
    for family in families():
        if not all(spec.cls.__module__.startswith("quantdispatch.") for spec in family.specs):
            continue  # a plugin's, registered by another test
        for method in (family.method, *family.aliases):
            words.add("".join(_words(method)))  # "compressed-tensors" -> "compressedtensors", matched across word pieces
        for spec in family.specs:
            first = _words(spec.cls.__name__)[0]
            if len(first) > 2:
                words.add(first)
    for layout in layouts():
        # a built-in marker as a whole ("weight_packed", not "packed"), and not a dense "weight"
        if layout.__module__.startswith("quantdispatch.") and layout.marker != Dense.marker:
            words.add("".join(_words(layout.marker)))
    return frozenset(words - NOT_METHOD_WORDS)


def _hits(path: Path, words: frozenset[str]) -> list[str]:
    found: list[str] = []
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
            continue
        pieces = _words(token.string)
        joined = {"".join(pieces[i:j]) for i in range(len(pieces)) for j in range(i + 2, min(len(pieces), i + 3) + 1)}
        for word in sorted(words & (set(pieces) | joined)):
            found.append(f"{path.parent.name}/{path.name}:{token.start[0]}: {word!r} in {token.string[:60]!r}")
    return found


def test_the_words_are_derived_from_the_registries() -> None:
    """The list is not empty and holds the obvious ones, so the scan below can fail."""
    words = _builtin_words()
    assert {"gptq", "awq", "bnb", "bitsandbytes", "compressedtensors", "qweight"} <= words


def test_the_scan_sees_identifiers_strings_and_comments(tmp_path: Path) -> None:
    """A method name in an identifier, a string or a comment is found, with its line."""
    sample = tmp_path / "loading" / "x.py"
    sample.parent.mkdir()
    sample.write_text('def load_gptq():\n    return "qweight"  # AWQ too\n', encoding="utf-8")
    hits = _hits(sample, frozenset({"gptq", "qweight", "awq"}))
    assert [h.split(": ")[0] for h in hits] == ["loading/x.py:1", "loading/x.py:2", "loading/x.py:2"]


def test_loading_names_no_method() -> None:
    """No file under quantdispatch/loading/ names a built-in method, config type or layout marker."""
    words = _builtin_words()
    files = sorted(p for p in LOADING.rglob("*.py") if p.name not in NOT_SCANNED)
    assert files
    hits = [h for p in files for h in _hits(p, words)]
    assert hits == []
