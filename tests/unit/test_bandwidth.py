"""The decode-speed limit: the bytes one decode step reads, and the copy bandwidth it is divided by."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quantdispatch.bandwidth import bytes_per_token, copy_bandwidth, limit_tokens_per_s


def _llama(tie: bool) -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=500, max_position_embeddings=64, tie_word_embeddings=tie)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def _weight(module: object) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    assert isinstance(weight, torch.Tensor)
    return weight


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_an_untied_model_reads_everything_but_the_input_embedding_table() -> None:
    model = _llama(tie=False)
    embedding = _weight(model.get_input_embeddings())
    everything = _nbytes([*model.parameters(), *model.buffers()])
    assert bytes_per_token(model) == everything - _nbytes([embedding])
    assert bytes_per_token(model) < everything


def test_a_tied_head_reads_the_shared_table_once() -> None:
    model = _llama(tie=True)
    table = _weight(model.get_input_embeddings())
    assert _weight(model.get_output_embeddings()).data_ptr() == table.data_ptr()
    unique = {t.data_ptr(): _nbytes([t]) for t in [*model.parameters(), *model.buffers()]}
    assert bytes_per_token(model) == sum(unique.values())  # the table counts once, and is not subtracted


def test_copy_bandwidth_is_a_positive_rate_and_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    rate = copy_bandwidth(mib=8, repeat=3, threads=1)
    assert math.isfinite(rate) and rate > 1e8  # any machine copies 8 MiB faster than 100 MB/s
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="mib >= 1"):
        copy_bandwidth(mib=0)


def test_the_limit_divides_bandwidth_by_bytes() -> None:
    assert limit_tokens_per_s(36e9, 900_000_000) == pytest.approx(40.0)
    assert limit_tokens_per_s(1e9, 0) == math.inf


def test_the_decode_split_puts_a_slow_weight_layer_on_the_linear_side() -> None:
    """A head that sleeps 20 ms per call: at least that much is inside the weight layers, and the
    parts add up to the step."""
    import time

    from quantdispatch.cli_bench import decode_split

    model = _llama(tie=False)
    head = model.get_output_embeddings()
    assert isinstance(head, torch.nn.Linear)
    plain = head.forward

    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return plain(x)

    head.forward = slow  # type: ignore[method-assign, assignment]
    split = decode_split(model, steps=3)
    assert split["linear_ms"] >= 20.0
    assert split["rest_ms"] >= 0.0
    assert split["linear_ms"] + split["rest_ms"] == pytest.approx(split["step_ms"])


def test_another_librarys_quantized_linear_counts_as_a_weight_layer() -> None:
    """A layer class of another library named ``…Linear`` (gptqmodel's ``TorchAtenLinear``) is a weight
    layer, not "the rest"; a norm is not."""
    from quantdispatch.cli_bench import _weight_layer

    class TorchAtenLinear(torch.nn.Module):
        pass

    assert _weight_layer(TorchAtenLinear()) and _weight_layer(torch.nn.Linear(2, 2))
    assert not _weight_layer(torch.nn.LayerNorm(2)) and not _weight_layer(torch.nn.Embedding(3, 2))
