"""The tokenizer of a GGUF file, from its metadata, as a Transformers fast tokenizer.

Two vocabularies of llama.cpp (``tokenizer.ggml.model``):

- ``"llama"``: SentencePiece BPE. ``tokens`` with ``scores`` (higher merges first) and
  ``token_type`` (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte ``<0xAB>``). Built as
  a ``tokenizers`` BPE whose merges are every split of a normal token into two tokens of the
  vocabulary, ranked by the merged token's score (as Transformers' SentencePiece extractor does),
  with byte fallback; spaces become ``▁`` and a ``▁`` is prepended (``add_dummy_prefix``).
- ``"gpt2"``: byte-level BPE with ``tokenizer.ggml.merges``; the pre-tokenizer's split regex
  follows ``tokenizer.ggml.pre`` (GPT-2's when the key is absent; a name this module does not
  know is an issue, since splitting text another way gives other ids).

Nothing is built from metadata that lies: ``tokenizer_issues`` checks the tokens (strings,
distinct, bounded in number and length), the per-token arrays, the special ids, the flags, the
pre-tokenizer and every merge first, in time linear in the metadata's size.

A shell module: it imports ``tokenizers`` and ``transformers`` when called.

>>> tok = tokenizer_from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "▁", "a", "▁a"),
...     "tokenizer.ggml.scores": (0.0, 0.0, 0.0, -1.0, -2.0, -3.0), "tokenizer.ggml.token_type": (2, 3, 3, 1, 1, 1),
...     "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})  # doctest: +SKIP
>>> tok("a a").input_ids  # doctest: +SKIP
[1, 5, 5]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from ..gguf.header import GgufValue
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["tokenizer_from_metadata", "tokenizer_from_file", "tokenizer_issues", "spm_merges", "PRE_TOKENIZER_REGEX", "MAX_TOKENS",
           "MAX_TOKEN_CHARS", "MAX_MERGES", "SPM_SPLIT_BUDGET"]

_NORMAL, _UNKNOWN, _CONTROL, _USER, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_GPT2_REGEX: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX: Final = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                        r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX: Final = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                       r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_REGEX: Final[Mapping[str, str]] = {
    "default": _GPT2_REGEX, "gpt-2": _GPT2_REGEX, "llama-bpe": _LLAMA3_REGEX, "llama3": _LLAMA3_REGEX, "qwen2": _QWEN2_REGEX,
}
"""The split regex of each ``tokenizer.ggml.pre`` this module knows (llama.cpp's ``llama-vocab.cpp``)."""


MAX_TOKENS: Final = 1 << 21
"""The largest vocabulary this module builds (real ones have up to ~262,000 tokens)."""

MAX_TOKEN_CHARS: Final = 1 << 16
"""The longest single token, in characters."""

MAX_MERGES: Final = 1 << 22
"""The most ``tokenizer.ggml.merges`` entries (real ones have up to ~450,000)."""

SPM_SPLIT_BUDGET: Final = 1 << 27
"""The most characters ``spm_merges`` may copy: every split of every normal token costs its
length, so a vocabulary of long normal tokens is refused instead of taking quadratic time
(SentencePiece pieces are at most 16 characters by default; real vocabularies use ~1% of this)."""

_MAX_REPORTED: Final = 20
_SPECIAL: Final = ("bos", "eos", "unknown", "padding")
_FLAGS: Final = ("add_bos_token", "add_eos_token", "add_space_prefix")
_TOKEN_TYPES: Final = range(0, 7)  # llama.cpp's LLAMA_TOKEN_TYPE_*: undefined … byte


def _key(name: str) -> str:
    return f'$.metadata["tokenizer.ggml.{name}"]'


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_score(v: object) -> bool:
    """A float that is not NaN, or an integer a float holds."""
    if isinstance(v, float):
        return not math.isnan(v)
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**53


def _token_issues(value: object) -> tuple[tuple[str, ...] | None, list[Issue]]:
    """The tokens as strings, or why they are not a vocabulary this module builds."""
    at = _key("tokens")
    if value is None or value == ():
        return None, [Issue("gguf.tokenizer.missing", at, "the file has no tokenizer.ggml.tokens", "pass a tokenizer of your own")]
    if not isinstance(value, tuple):
        return None, [Issue("gguf.tokenizer.tokens.type", at, f"tokenizer.ggml.tokens is {quote(value)}, not an array of strings")]
    if len(value) > MAX_TOKENS:
        return None, [Issue("gguf.tokenizer.tokens.too_many", at, f"{len(value):,} tokens", f"at most {MAX_TOKENS:,}")]
    issues: list[Issue] = []
    first: dict[str, int] = {}
    for i, t in enumerate(value):
        if len(issues) >= _MAX_REPORTED:
            break
        if not isinstance(t, str):
            issues.append(Issue("gguf.tokenizer.tokens.type", f"{at}[{i}]", f"token {i} is {quote(t)}, not a string"))
        elif len(t) > MAX_TOKEN_CHARS:
            issues.append(Issue("gguf.tokenizer.tokens.too_long", f"{at}[{i}]", f"token {i} has {len(t):,} characters",
                                f"at most {MAX_TOKEN_CHARS:,}"))
        elif t and (j := first.setdefault(t, i)) != i:  # empty ones llama.cpp renames "[EMPTY_i]"; others it asserts are distinct
            issues.append(Issue("gguf.tokenizer.tokens.duplicate", f"{at}[{i}]", f"token {i} is {quote(t)}, as is token {j}",
                                "every token of a vocabulary is distinct; one of the ids could never be produced"))
    return (None if issues else tuple(str(t) for t in value)), issues


def _array_issues(metadata: Mapping[str, GgufValue], name: str, n: int, valid: Callable[[object], bool], want: str) -> list[Issue]:
    """Issues of a per-token array (``scores``, ``token_type``): present, one entry per token, each valid."""
    value = metadata.get(f"tokenizer.ggml.{name}")
    at = _key(name)
    if value is None:
        return []
    if not isinstance(value, tuple):
        return [Issue(f"gguf.tokenizer.{name}", at, f"tokenizer.ggml.{name} is {quote(value)}, not an array", want)]
    if len(value) != n:
        return [Issue(f"gguf.tokenizer.{name}", at, f"tokenizer.ggml.{name} has {len(value):,} entries for {n:,} tokens",
                      "one entry per token")]
    bad = next((i for i, v in enumerate(value) if not valid(v)), None)
    return [] if bad is None else [Issue(f"gguf.tokenizer.{name}", f"{at}[{bad}]", f"entry {bad} is {quote(value[bad])}", want)]


def _merge_issues(value: object, vocab: Mapping[str, int]) -> tuple[list[tuple[str, str]], list[Issue]]:
    """The merges as pairs, or why they are not: each ``"left right"`` of two tokens whose
    concatenation is a token too (``tokenizers`` refuses any other with an exception)."""
    at = _key("merges")
    if not isinstance(value, tuple):
        return [], [Issue("gguf.tokenizer.merges", at, "a gpt2 vocabulary without merges" if value is None
                          else f"tokenizer.ggml.merges is {quote(value)}, not an array of strings")]
    if len(value) > MAX_MERGES:
        return [], [Issue("gguf.tokenizer.merges", at, f"{len(value):,} merges", f"at most {MAX_MERGES:,}")]
    pairs: list[tuple[str, str]] = []
    issues: list[Issue] = []
    for i, m in enumerate(value):
        if len(issues) >= _MAX_REPORTED:
            break
        if not isinstance(m, str):
            issues.append(Issue("gguf.tokenizer.merges", f"{at}[{i}]", f"merge {i} is {quote(m)}, not a string"))
            continue
        cut = m.find(" ", 1)  # as llama.cpp splits a merge: a first piece may itself be a space
        left, right = (m[:cut], m[cut + 1:]) if cut > 0 else ("", "")
        if not right:
            issues.append(Issue("gguf.tokenizer.merges", f"{at}[{i}]", f"merge {i} is {quote(m)}, not two tokens split by a space"))
        elif left not in vocab or right not in vocab or left + right not in vocab:
            missing = next(t for t in (left, right, left + right) if t not in vocab)
            issues.append(Issue("gguf.tokenizer.merges.unknown_token", f"{at}[{i}]",
                                f"merge {i} ({quote(m)}) names {quote(missing)}, which is not a token", "every merge joins two tokens into a token"))
        else:
            pairs.append((left, right))
    return pairs, issues


def tokenizer_issues(metadata: Mapping[str, GgufValue]) -> Issues:
    """Every reason the metadata does not describe a tokenizer this module builds, at once:
    the model, the tokens (strings, distinct, bounded), per-token arrays of the tokens' length,
    special ids inside the vocabulary, flags that are booleans, a known pre-tokenizer, and merges
    of tokens. Linear in the metadata's size.

    >>> [i.code for i in tokenizer_issues({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ("a", "a")})]
    ['gguf.tokenizer.tokens.duplicate']
    """
    return _checked(metadata)[1]


def _checked(metadata: Mapping[str, GgufValue]) -> tuple[tuple[str, ...], Issues]:
    model = metadata.get("tokenizer.ggml.model")
    raw = metadata.get("tokenizer.ggml.tokens")
    if raw is not None and raw != () and model not in ("llama", "gpt2"):
        return (), (Issue("gguf.tokenizer.unsupported", _key("model"),
                          f"tokenizer model {quote(model)} is not one this version builds (llama, gpt2)"),)
    tokens, issues = _token_issues(raw)
    if tokens is None:
        return (), tuple(issues)
    n = len(tokens)
    issues += _array_issues(metadata, "scores", n, _is_score, "a number per token")
    issues += _array_issues(metadata, "token_type", n, lambda v: _is_int(v) and v in _TOKEN_TYPES, "a token type from 0 to 6 per token")
    for name in _SPECIAL:
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None and not (_is_int(value) and 0 <= value < n):  # type: ignore[operator]
            issues.append(Issue("gguf.tokenizer.special.invalid", _key(f"{name}_token_id"),
                                f"the {name} token id is {quote(value)}; the vocabulary has {n:,} tokens", f"an id from 0 to {n - 1}"))
    for name in _FLAGS:
        value = metadata.get(f"tokenizer.ggml.{name}")
        if value is not None and not isinstance(value, bool):
            issues.append(Issue("gguf.tokenizer.flag", _key(name), f"tokenizer.ggml.{name} is {quote(value)}, not a boolean"))
    if model == "gpt2":
        pre = metadata.get("tokenizer.ggml.pre")
        if pre is not None and (not isinstance(pre, str) or pre not in PRE_TOKENIZER_REGEX):
            issues.append(Issue("gguf.tokenizer.pre.unknown", _key("pre"), f"pre-tokenizer {quote(pre)} is not one this version knows",
                                "one of " + ", ".join(sorted(PRE_TOKENIZER_REGEX)) + "; splitting text another way gives other ids"))
        issues += _merge_issues(metadata.get("tokenizer.ggml.merges"), {t: i for i, t in enumerate(tokens)})[1]
    else:
        types = metadata.get("tokenizer.ggml.token_type")
        normal = (len(t) for i, t in enumerate(tokens) if not isinstance(types, tuple) or len(types) != n or types[i] == _NORMAL)
        work = sum(length * length for length in normal)
        if work > SPM_SPLIT_BUDGET:
            issues.append(Issue("gguf.tokenizer.tokens.too_long", _key("tokens"),
                                f"splitting every normal token in two would copy {work:,} characters",
                                f"at most {SPM_SPLIT_BUDGET:,}: SentencePiece vocabularies have short normal pieces"))
    return tokens, tuple(issues)


def _numbers(metadata: Mapping[str, GgufValue], key: str, n: int, default: float) -> list[float]:
    value = metadata.get(key)
    if isinstance(value, tuple) and len(value) == n:  # checked by tokenizer_issues
        return [float(v) for v in value]  # type: ignore[arg-type]
    return [default] * n


def _token_id(tokens: tuple[str, ...], metadata: Mapping[str, GgufValue], key: str) -> int | None:
    i = metadata.get(f"tokenizer.ggml.{key}_token_id")
    return i if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(tokens) else None


def _token(tokens: tuple[str, ...], metadata: Mapping[str, GgufValue], key: str) -> str | None:
    i = _token_id(tokens, metadata, key)
    return None if i is None else tokens[i]


def spm_merges(tokens: tuple[str, ...], scores: list[float], types: list[float]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece's greedy, score-ordered merging: each normal
    token split in two pieces of the vocabulary, the best-scored merged token first.

    Costs the sum of the squared lengths of the normal tokens (``tokenizer_issues`` bounds it by
    ``SPM_SPLIT_BUDGET``); only splits whose pieces could be tokens are tried.

    >>> spm_merges(("a", "b", "ab", "abb"), [-1.0, -2.0, -3.0, -4.0], [1, 1, 1, 1])
    [('a', 'b'), ('ab', 'b')]
    """
    rank: dict[str, int] = {}
    for i, t in enumerate(tokens):
        rank.setdefault(t, i)
    longest = max((len(t) for t in tokens), default=0)
    found: list[tuple[float, int, int, str, str]] = []
    for i, merged in enumerate(tokens):
        size = len(merged)
        if types[i] != _NORMAL or size < 2:
            continue
        for k in range(max(1, size - longest), min(size, longest + 1)):  # both pieces no longer than the longest token
            left, right = merged[:k], merged[k:]
            a, b = rank.get(left), rank.get(right)
            if a is not None and b is not None:
                found.append((-scores[i], a, b, left, right))
    found.sort()
    return [(a, b) for _, _, _, a, b in found]


def tokenizer_from_file(path: str | os.PathLike[str]) -> Result[PreTrainedTokenizerFast, Issues]:
    """The tokenizer of the GGUF file at ``path`` (any version, v1 included), from its header."""
    from ..gguf.reader import read_gguf_header

    header = read_gguf_header(path)
    if isinstance(header, Err):
        return header
    return tokenizer_from_metadata(dict(header.value.metadata))


def tokenizer_from_metadata(metadata: Mapping[str, GgufValue]) -> Result[PreTrainedTokenizerFast, Issues]:
    """The fast tokenizer the metadata describes, or every ``gguf.tokenizer.*`` issue of
    ``tokenizer_issues``; nothing is built from metadata that has one."""
    tokens, issues = _checked(metadata)
    if issues:
        return Err(issues)
    if metadata.get("tokenizer.ggml.model") == "llama":
        return Ok(_spm(tokens, metadata))
    pairs, _ = _merge_issues(metadata.get("tokenizer.ggml.merges"), {t: i for i, t in enumerate(tokens)})
    return Ok(_bpe(tokens, pairs, metadata))


def _wrap(tok: object, tokens: tuple[str, ...], metadata: Mapping[str, GgufValue], types: list[float]) -> PreTrainedTokenizerFast:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    special = {f"{k}_token": _token(tokens, metadata, k) for k in ("bos", "eos", "unknown", "padding")}
    kw = {"bos_token": special["bos_token"], "eos_token": special["eos_token"], "unk_token": special["unknown_token"],
          "pad_token": special["padding_token"]}
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in kw.items() if v is not None})
    controls = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=True) if ty == _CONTROL]
    if controls:
        out.add_special_tokens({"additional_special_tokens": controls}, replace_extra_special_tokens=False)
    return out


def _post(tokens: tuple[str, ...], metadata: Mapping[str, GgufValue], default_bos: bool) -> object | None:
    from tokenizers import processors

    i = _token_id(tokens, metadata, "bos")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", default_bos)
    if i is None or add_bos is not True:
        return None
    bos = tokens[i]
    return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, i)])


def _spm(tokens: tuple[str, ...], metadata: Mapping[str, GgufValue]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, normalizers

    n = len(tokens)
    scores = _numbers(metadata, "tokenizer.ggml.scores", n, 0.0)
    types = _numbers(metadata, "tokenizer.ggml.token_type", n, float(_NORMAL))
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    unk = _token(tokens, metadata, "unknown") or next((t for t, ty in zip(tokens, types, strict=True) if ty == _UNKNOWN), None)
    bpe = models.BPE(vocab, spm_merges(tokens, scores, types), unk_token=unk, fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    prefix = metadata.get("tokenizer.ggml.add_space_prefix", True) is not False
    steps = [normalizers.Prepend("▁")] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     *([decoders.Strip(" ", 1, 0)] if prefix else [])])
    post = _post(tokens, metadata, default_bos=True)
    if post is not None:
        tok.post_processor = post  # type: ignore[assignment]
    return _wrap(tok, tokens, metadata, types)


def _bpe(tokens: tuple[str, ...], pairs: list[tuple[str, str]], metadata: Mapping[str, GgufValue]) -> PreTrainedTokenizerFast:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    n = len(tokens)
    types = _numbers(metadata, "tokenizer.ggml.token_type", n, float(_NORMAL))
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    tok = Tokenizer(models.BPE(vocab, pairs, ignore_merges=False))
    pre = metadata.get("tokenizer.ggml.pre")
    regex = PRE_TOKENIZER_REGEX.get(pre if isinstance(pre, str) else "default", _GPT2_REGEX)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    post = _post(tokens, metadata, default_bos=False)
    if post is not None:
        tok.post_processor = post  # type: ignore[assignment]
    return _wrap(tok, tokens, metadata, types)
