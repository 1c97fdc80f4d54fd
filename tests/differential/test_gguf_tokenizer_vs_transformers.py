"""GPT-2-style (byte-level BPE) GGUF tokenizers built from metadata, against Transformers' GGUF
tokenizer on the same file. (The SentencePiece-style one is tested on stories260K in
tests/loading/test_load_gguf.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

from quantdispatch.backends.gguf_tokenizer import tokenizer_from_file
from tests.gguf_models import T, tiny_model, write_gguf

CORPUS = ["Once upon a time, there was a little girl named Lily. She loved to play 123 games!",
          "The dog's ball\n\nwent   far away.", "café naïve 日本語 über"]
TEXTS = (*CORPUS, "Hello   world 12345 it's", "<|im_start|>user hi", " leading space", "")


def _bpe() -> tuple[list[str], list[str]]:
    """A small byte-level BPE trained with ``tokenizers``: its tokens and merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda x: x[1])]
    return tokens, [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]


@pytest.mark.parametrize(("arch", "pre"), [("qwen2", "qwen2"), ("llama", "llama-bpe")])
def test_byte_level_bpe_equals_transformers(arch: str, pre: str, tmp_path: Path) -> None:
    """Token ids and decoded text equal Transformers' for each ``tokenizer.ggml.pre``."""
    from transformers import AutoTokenizer

    tokens, merges = _bpe()
    types = [3 if t.startswith("<|") else 1 for t in tokens]
    meta = {"add_tokenizer_model": "gpt2", "add_tokenizer_pre": pre, "add_token_list": tokens, "add_token_types": types,
            "add_token_merges": merges}
    path = write_gguf(tiny_model(arch, vocab=len(tokens)), arch, tmp_path / "m.gguf", T.Q8_0, tokenizer=meta)
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = tokenizer_from_file(path).value  # type: ignore[union-attr]
    for text in TEXTS:
        ids = ours(text).input_ids
        assert ids == theirs(text).input_ids, text
        assert ours.decode(ids) == theirs.decode(ids), text
