"""A CPU load swaps a large dense bf16 output layer for ``GemvLinear`` (the native bf16 kernel at
decode), keeps it tied to the input embedding, and keeps the model's outputs.

Oracle: the same loaded model with its output layer's forward as ``F.linear`` (torch's bf16 GEMM,
what the layer computed before the swap); both round float32 sums once to bf16, so their logits
agree within bf16's rounding of the largest logit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

import quantdispatch as qd
from quantdispatch.kernels.dense_native import GEMV_MIN_WEIGHTS, GemvLinear, native_dense

from .ckpt import CONFIG, gptq_quantizer, write_quantized

torch.set_num_threads(1)

VOCAB = 32768  # x hidden 128: a 4M-weight output layer, the size use_gemv starts at
assert VOCAB * CONFIG.hidden_size >= GEMV_MIN_WEIGHTS


def _model(tie: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**{**CONFIG.to_dict(), "vocab_size": VOCAB, "tie_word_embeddings": tie})
    model: LlamaForCausalLM = LlamaForCausalLM(config).eval()
    return model


@pytest.mark.skipif(native_dense() is None, reason="no native bf16 kernel here (no SIMD level or no C compiler)")
@pytest.mark.parametrize("tie", [True, False])
def test_cpu_load_decodes_the_bf16_head_on_the_kernel(tmp_path: Path, tie: bool) -> None:
    write_quantized(tmp_path, _model(tie), qd.Gptq(bits=4, group_size=32), gptq_quantizer(qd.Gptq(bits=4, group_size=32)))
    model: Any = qd.load(tmp_path, device="cpu", dtype="bfloat16").unwrap().model
    head = model.get_output_embeddings()
    assert type(head) is GemvLinear and head.weight.dtype is torch.bfloat16
    assert (head.weight is model.get_input_embeddings().weight) is tie
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.inference_mode():
        out = model(ids[:, :8], use_cache=True)
        step = model(ids[:, 8:], cache=out["cache"], use_cache=True)  # one row: the kernel
        reference = F.linear(seen[-1], head.weight, head.bias).float()  # the same input through torch's GEMM
    hook.remove()
    got = step.logits.float()
    assert got.shape == reference.shape == (1, 1, VOCAB)
    assert float((got - reference).abs().max()) <= 2.0**-7 * float(reference.abs().max())


def test_float32_loads_keep_plain_linears(tmp_path: Path) -> None:
    write_quantized(tmp_path, _model(True), qd.Gptq(bits=4, group_size=32), gptq_quantizer(qd.Gptq(bits=4, group_size=32)))
    model: Any = qd.load(tmp_path, device="cpu", dtype="float32").unwrap().model
    assert type(model.get_output_embeddings()) is torch.nn.Linear
