"""``StaticDecoder``: a static cache and a decode step compiled whole, around a loaded quantized
model. The steps must produce the logits of Transformers' own eager decoding with its dynamic
cache, and the step must compile without a graph break with our kernels as opaque ops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd
from quantdispatch.decoding import StaticDecoder, compiled_generation_config

from .ckpt import base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path: Path = tmp_path_factory.mktemp("gptq")
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(path, base_model(), config, gptq_quantizer(config))
    return qd.load(path, device="cpu", dtype="float32", backend="torch-packed").unwrap().model


def _dynamic_logits(model: Any, ids: torch.Tensor, tokens: list[int]) -> list[torch.Tensor]:
    """Transformers' eager decoding with its default cache, fed ``tokens`` one at a time."""
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        o = model(ids, use_cache=True)
        cache = o.cache
        for t in tokens:
            o = model(torch.tensor([[t]]), use_cache=True, cache=cache)
            cache = o.cache
            out.append(o.logits[0, -1].clone())
    return out


def _capture(graphs: list[torch.fx.GraphModule]) -> Callable[..., Any]:
    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        forward: Callable[..., Any] = gm.forward
        return forward
    return backend


@pytest.mark.parametrize("compile", [False, True])
def test_static_decoding_gives_the_dynamic_cache_logits(model: Any, compile: bool) -> None:
    ids = torch.arange(3, 15).unsqueeze(0)
    tokens = [5, 17, 9, 40, 2]
    graphs: list[torch.fx.GraphModule] = []
    decoder = StaticDecoder(model, max_cache_len=32, compile=compile, backend=_capture(graphs))
    decoder.prefill(ids)
    steps = [decoder.step(torch.tensor([[t]]))[0, -1] for t in tokens]
    for got, want in zip(steps, _dynamic_logits(model, ids, tokens), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if compile:
        assert len(graphs) == 1  # one graph for every step: static shapes, no break, no recompile


def test_the_decoder_refuses_what_does_not_fit(model: Any) -> None:
    decoder = StaticDecoder(model, max_cache_len=4, compile=False)
    with pytest.raises(ValueError, match="does not fit"):
        decoder.prefill(torch.arange(3, 9).unsqueeze(0))
    decoder.prefill(torch.arange(3, 7).unsqueeze(0))
    with pytest.raises(ValueError, match="is full"):
        decoder.step(torch.tensor([[3]]))
    with pytest.raises(ValueError, match="positive"):
        StaticDecoder(model, max_cache_len=0)


def test_the_generation_config_asks_transformers_for_a_static_compiled_step(model: Any) -> None:
    config = compiled_generation_config(model)
    assert config.cache_implementation == "static"
    assert config.compile_config.fullgraph and config.compile_config._compile_all_devices
    assert model.generation_config.cache_implementation != "static"  # the model's own is untouched
