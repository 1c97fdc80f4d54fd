"""GGUF tokenizer metadata that lies: every fault a coded issue at its key, nothing built from it,
and building a large honest vocabulary linear in its size."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from quantdispatch.backends.gguf_tokenizer import (
    MAX_TOKEN_CHARS,
    MAX_TOKENS,
    SPM_SPLIT_BUDGET,
    spm_merges,
    tokenizer_from_metadata,
    tokenizer_issues,
)
from quantdispatch.gguf.header import GgufValue
from quantdispatch.result import Err, Ok

SPM: dict[str, GgufValue] = {
    "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "▁", "a", "▁a"),
    "tokenizer.ggml.scores": (0.0, 0.0, 0.0, -1.0, -2.0, -3.0), "tokenizer.ggml.token_type": (2, 3, 3, 1, 1, 1),
    "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
}
BPE: dict[str, GgufValue] = {
    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": ("<|endoftext|>", "a", "b", "ab", "abb"),
    "tokenizer.ggml.token_type": (3, 1, 1, 1, 1), "tokenizer.ggml.merges": ("a b", "ab b"), "tokenizer.ggml.eos_token_id": 0,
}


def _found(meta: dict[str, GgufValue]) -> list[tuple[str, str]]:
    issues = tokenizer_issues(meta)
    built = tokenizer_from_metadata(meta)
    assert isinstance(built, Err) == bool(issues) and (not issues or built.error == issues)  # type: ignore[union-attr]
    return [(i.code, i.path) for i in issues]


def _key(name: str) -> str:
    return f'$.metadata["tokenizer.ggml.{name}"]'


def test_honest_metadata_builds() -> None:
    """The two vocabularies above have no issue and build."""
    for meta in (SPM, BPE):
        assert _found(meta) == []
    tok: Any = tokenizer_from_metadata(BPE)
    assert isinstance(tok, Ok) and tok.value("abb").input_ids == [4]


@pytest.mark.parametrize(("merges", "index"), [(("a b", "a z"), 1), (("a b", "b b"), 1), (("ab", "a b"), 0), (("a b", " ab"), 1),
                                               (("a b", 7), 1)])
def test_merges_that_name_no_token(merges: tuple[GgufValue, ...], index: int) -> None:
    """A merge of a missing token, whose result is missing, without a space or not a string is an
    issue at its index (``tokenizers`` raised a bare ``Exception`` on the first two)."""
    found = _found({**BPE, "tokenizer.ggml.merges": merges})
    assert len(found) == 1 and found[0][0].startswith("gguf.tokenizer.merges") and found[0][1] == f"{_key('merges')}[{index}]"


def test_a_merge_splits_at_the_first_space_after_its_first_character() -> None:
    """As llama.cpp reads ``"  b"``: the space token, then ``b``."""
    meta = {**BPE, "tokenizer.ggml.tokens": ("<|endoftext|>", "a", "b", "ab", "abb", " ", " b"),
            "tokenizer.ggml.token_type": (3, 1, 1, 1, 1, 1, 1), "tokenizer.ggml.merges": ("a b", "ab b", "  b")}
    assert _found(meta) == []


def test_merges_not_an_array() -> None:
    """Merges that are missing or a single string are issues at the key."""
    assert _found({**BPE, "tokenizer.ggml.merges": "a b"}) == [("gguf.tokenizer.merges", _key("merges"))]
    meta = dict(BPE)
    del meta["tokenizer.ggml.merges"]
    assert _found(meta) == [("gguf.tokenizer.merges", _key("merges"))]


@pytest.mark.parametrize("name", ["bos", "eos", "unknown", "padding"])
@pytest.mark.parametrize("value", [6, -1, 2**40, True, 1.0, "1", (1,)])
def test_special_ids_outside_the_vocabulary(name: str, value: GgufValue) -> None:
    """A special id out of range, negative, boolean, float, string or array is an issue at its key."""
    assert _found({**SPM, f"tokenizer.ggml.{name}_token_id": value}) == [("gguf.tokenizer.special.invalid", _key(f"{name}_token_id"))]


@pytest.mark.parametrize(("name", "value", "path"), [
    ("scores", (0.0,) * 5, ""), ("scores", (0.0,) * 7, ""), ("scores", (0.0, 0.0, 0.0, float("nan"), 0.0, 0.0), "[3]"),
    ("scores", (0.0, 0.0, "x", 0.0, 0.0, 0.0), "[2]"), ("scores", 0.0, ""),
    ("token_type", (1,) * 5, ""), ("token_type", (2, 3, 3, 1, 9, 1), "[4]"), ("token_type", (2, 3, 3, 1, 1.0, 1), "[4]"),
    ("token_type", (2, 3, 3, 1, (1,), 1), "[4]"),
])
def test_per_token_arrays_of_the_wrong_length_or_type(name: str, value: GgufValue, path: str) -> None:
    """``scores`` and ``token_type`` must hold one valid entry per token."""
    assert _found({**SPM, f"tokenizer.ggml.{name}": value}) == [(f"gguf.tokenizer.{name}", _key(name) + path)]


def test_tokens_that_are_not_a_vocabulary() -> None:
    """Non-string, nested, duplicate and over-long tokens, and too many of them, are issues."""
    assert _found({**SPM, "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", 3, "a", "▁a")}) == [
        ("gguf.tokenizer.tokens.type", _key("tokens") + "[3]")]
    assert _found({**SPM, "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", ("▁",), "a", "▁a")}) == [
        ("gguf.tokenizer.tokens.type", _key("tokens") + "[3]")]
    assert _found({**SPM, "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "a", "a", "▁a")}) == [
        ("gguf.tokenizer.tokens.duplicate", _key("tokens") + "[4]")]
    assert _found({**SPM, "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "", "", "▁a")}) == []  # llama.cpp renames empty ones
    assert _found({**SPM, "tokenizer.ggml.tokens": ("<unk>", "<s>", "</s>", "x" * (MAX_TOKEN_CHARS + 1), "a", "▁a")}) == [
        ("gguf.tokenizer.tokens.too_long", _key("tokens") + "[3]")]
    assert _found({**SPM, "tokenizer.ggml.tokens": ("a",) * (MAX_TOKENS + 1)}) == [("gguf.tokenizer.tokens.too_many", _key("tokens"))]
    assert _found({**SPM, "tokenizer.ggml.tokens": "abc"}) == [("gguf.tokenizer.tokens.type", _key("tokens"))]
    assert _found({**SPM, "tokenizer.ggml.tokens": ()}) == [("gguf.tokenizer.missing", _key("tokens"))]


def test_long_normal_sentencepiece_tokens_are_refused_in_bounded_work() -> None:
    """Splitting long normal tokens costs the square of their length: past ``SPM_SPLIT_BUDGET`` an
    issue, counted from the lengths alone before any split is tried."""
    long = tuple(f"{i:05d}" + "x" * 30_000 for i in range(200))
    assert sum(len(t) ** 2 for t in long) > SPM_SPLIT_BUDGET
    meta: dict[str, GgufValue] = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": long}
    assert _found(meta) == [("gguf.tokenizer.tokens.too_long", _key("tokens"))]
    assert _found({**meta, "tokenizer.ggml.token_type": (3,) * 200}) == []  # control tokens are never split


def test_pre_tokenizer_and_flags() -> None:
    """An unknown pre-tokenizer name would split text differently: an issue, like a non-boolean flag."""
    assert _found({**BPE, "tokenizer.ggml.pre": "deepseek-llm"}) == [("gguf.tokenizer.pre.unknown", _key("pre"))]
    assert _found({**BPE, "tokenizer.ggml.pre": ("qwen2",)}) == [("gguf.tokenizer.pre.unknown", _key("pre"))]
    assert _found({**SPM, "tokenizer.ggml.add_bos_token": 1}) == [("gguf.tokenizer.flag", _key("add_bos_token"))]


def test_every_problem_at_once() -> None:
    """A bad pre-tokenizer, a bad special id and a bad merge: three issues."""
    found = _found({**BPE, "tokenizer.ggml.pre": "x", "tokenizer.ggml.bos_token_id": 99, "tokenizer.ggml.merges": ("a q",)})
    assert sorted(c for c, _ in found) == ["gguf.tokenizer.merges.unknown_token", "gguf.tokenizer.pre.unknown", "gguf.tokenizer.special.invalid"]


def test_unknown_model_before_tokens() -> None:
    """A vocabulary of a model this module does not build is refused by its model, its tokens unread."""
    assert _found({"tokenizer.ggml.tokens": ("a", "a")}) == [("gguf.tokenizer.unsupported", _key("model"))]


def _naive_spm_merges(tokens: tuple[str, ...], scores: list[float], types: list[float]) -> list[tuple[str, str]]:
    """The former implementation: every split of every normal token."""
    rank = {t: i for i, t in reversed(list(enumerate(tokens)))}
    found = [(-scores[i], rank[m[:k]], rank[m[k:]], m[:k], m[k:]) for i, m in enumerate(tokens) if types[i] == 1
             for k in range(1, len(m)) if m[:k] in rank and m[k:] in rank]
    return [(a, b) for _, _, _, a, b in sorted(found)]


@given(st.lists(st.text(alphabet="ab▁", min_size=1, max_size=6), min_size=1, max_size=30, unique=True))
def test_spm_merges_equals_every_split(vocab: list[str]) -> None:
    """Bounding the split points by the longest token changes no merge."""
    tokens = tuple(vocab)
    scores = [-float(i % 7) for i in range(len(tokens))]
    types = [1.0 if i % 5 else 3.0 for i in range(len(tokens))]
    assert spm_merges(tokens, scores, types) == _naive_spm_merges(tokens, scores, types)


def test_large_vocabularies_build() -> None:
    """200,000 tokens of each kind build (quadratic work would be ~4·10¹⁰ steps here; no timing is asserted)."""
    n = 200_000
    spm = ("<unk>", "<s>", "</s>", *(f"▁w{i}" for i in range(n)))
    built = tokenizer_from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": spm,
                                     "tokenizer.ggml.scores": tuple(-float(i) for i in range(len(spm))),
                                     "tokenizer.ggml.token_type": (2, 3, 3, *(1,) * n), "tokenizer.ggml.bos_token_id": 1})
    assert isinstance(built, Ok)
    alphabet = [chr(0x100 + i) for i in range(448)]
    pairs = [(x, y) for x in alphabet for y in alphabet][:n]
    tokens = (*alphabet, *(x + y for x, y in pairs))
    built = tokenizer_from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
                                     "tokenizer.ggml.merges": tuple(f"{x} {y}" for x, y in pairs)})
    assert isinstance(built, Ok)


_VALUES: st.SearchStrategy[GgufValue] = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(alphabet="ab ▁<>", max_size=4),
    lambda inner: st.lists(inner, max_size=6).map(tuple), max_leaves=12)
_KEYS = st.sampled_from([f"tokenizer.ggml.{k}" for k in ("model", "tokens", "scores", "token_type", "merges", "pre", "bos_token_id",
                                                         "eos_token_id", "unknown_token_id", "padding_token_id", "add_bos_token",
                                                         "add_space_prefix")])


@given(st.dictionaries(_KEYS, _VALUES, max_size=8), st.sampled_from(["llama", "gpt2"]))
def test_total_on_any_metadata(meta: dict[str, GgufValue], model: str) -> None:
    """Any metadata gives a tokenizer or issues, never an exception."""
    tokenizer_from_metadata({**meta, "tokenizer.ggml.model": model})
    tokenizer_from_metadata(meta)
