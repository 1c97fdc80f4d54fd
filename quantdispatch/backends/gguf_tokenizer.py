"""The tokenizer of a GGUF file, from its metadata, as a Transformers fast tokenizer.

Two vocabularies of llama.cpp (``tokenizer.ggml.model``):

- ``"llama"``: SentencePiece BPE. ``tokens`` with ``scores`` (higher merges first) and
  ``token_type`` (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte ``<0xAB>``). Built as
  a ``tokenizers`` BPE whose merges are every split of a normal token into two tokens of the
  vocabulary, ranked by the merged token's score (as Transformers' SentencePiece extractor does),
  with byte fallback; spaces become ``▁`` and a ``▁`` is prepended (``add_dummy_prefix``).
- ``"gpt2"``: byte-level BPE with ``tokenizer.ggml.merges``; the pre-tokenizer's split regex
  follows ``tokenizer.ggml.pre`` where it is one of the known ones (GPT-2's otherwise).

A shell module: it imports ``tokenizers`` and ``transformers`` when called.

>>> tok = tokenizer_from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "▁", "a", "▁a"),
...     "tokenizer.ggml.scores": (0.0, 0.0, 0.0, -1.0, -2.0, -3.0), "tokenizer.ggml.token_type": (2, 3, 3, 1, 1, 1),
...     "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})  # doctest: +SKIP
>>> tok("a a").input_ids  # doctest: +SKIP
[1, 5, 5]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from ..gguf.header import GgufValue
from ..result import Err, Issue, Issues, Ok, Result
from ..text import quote

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["tokenizer_from_metadata", "tokenizer_from_file", "spm_merges", "PRE_TOKENIZER_REGEX"]

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


def _strings(metadata: Mapping[str, GgufValue], key: str) -> tuple[str, ...] | None:
    value = metadata.get(key)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return tuple(str(v) for v in value)
    return None


def _numbers(metadata: Mapping[str, GgufValue], key: str, n: int, default: float) -> list[float]:
    value = metadata.get(key)
    if isinstance(value, tuple) and len(value) == n and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]  # type: ignore[arg-type]
    return [default] * n


def _token(tokens: tuple[str, ...], metadata: Mapping[str, GgufValue], key: str) -> str | None:
    i = metadata.get(f"tokenizer.ggml.{key}_token_id")
    return tokens[i] if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(tokens) else None


def spm_merges(tokens: tuple[str, ...], scores: list[float], types: list[float]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece's greedy, score-ordered merging: each normal
    token split in two pieces of the vocabulary, the best-scored merged token first.

    >>> spm_merges(("a", "b", "ab", "abb"), [-1.0, -2.0, -3.0, -4.0], [1, 1, 1, 1])
    [('a', 'b'), ('ab', 'b')]
    """
    rank = {t: i for i, t in reversed(list(enumerate(tokens)))}
    found: list[tuple[float, int, int, str, str]] = []
    for i, merged in enumerate(tokens):
        if types[i] != _NORMAL or len(merged) < 2:
            continue
        for k in range(1, len(merged)):
            left, right = merged[:k], merged[k:]
            if left in rank and right in rank:
                found.append((-scores[i], rank[left], rank[right], left, right))
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
    """The fast tokenizer the metadata describes, or ``gguf.tokenizer.*`` issues."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = _strings(metadata, "tokenizer.ggml.tokens")
    at = '$.metadata["tokenizer.ggml.tokens"]'
    if tokens is None or not tokens:
        return Err((Issue("gguf.tokenizer.missing", at, "the file has no tokenizer.ggml.tokens", "pass a tokenizer of your own"),))
    if model == "llama":
        return Ok(_spm(tokens, metadata))
    if model == "gpt2":
        merges = _strings(metadata, "tokenizer.ggml.merges")
        if merges is None:
            return Err((Issue("gguf.tokenizer.merges", '$.metadata["tokenizer.ggml.merges"]', "a gpt2 vocabulary without merges"),))
        return Ok(_bpe(tokens, merges, metadata))
    return Err((Issue("gguf.tokenizer.unsupported", '$.metadata["tokenizer.ggml.model"]',
                      f"tokenizer model {quote(model)} is not one this version builds (llama, gpt2)"),))


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

    bos = _token(tokens, metadata, "bos")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", default_bos)
    if bos is None or add_bos is not True:
        return None
    i = tokens.index(bos)
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


def _bpe(tokens: tuple[str, ...], merges: tuple[str, ...], metadata: Mapping[str, GgufValue]) -> PreTrainedTokenizerFast:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    n = len(tokens)
    types = _numbers(metadata, "tokenizer.ggml.token_type", n, float(_NORMAL))
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges if " " in m]
    tok = Tokenizer(models.BPE(vocab, pairs, ignore_merges=False))  # type: ignore[arg-type]
    pre = metadata.get("tokenizer.ggml.pre")
    regex = PRE_TOKENIZER_REGEX.get(pre if isinstance(pre, str) else "default", _GPT2_REGEX)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    post = _post(tokens, metadata, default_bos=False)
    if post is not None:
        tok.post_processor = post  # type: ignore[assignment]
    return _wrap(tok, tokens, metadata, types)
