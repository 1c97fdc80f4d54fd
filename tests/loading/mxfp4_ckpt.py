"""gpt-oss MXFP4 checkpoints for the loading tests, laid out as OpenAI's release and Transformers'
``Mxfp4HfQuantizer`` read them.

Transformers' own quantizer (``quantize_to_mxfp4``) calls ``downcast_to_mxfp_torch`` from the Triton
kernels hub, which needs Triton (not on a CPU), so ``quantize_experts`` is written here: for each
block of 32 inputs of an expert's output row, the E8M0 exponent ``ceil(log2(amax / 6))`` (6 is
E2M1's largest magnitude) and each weight's nearest E2M1 code, packed low nibble first; stored
``[E, out, in/32, 16]`` with scales ``[E, out, in/32]``. Its output is checked against
Transformers' ``convert_moe_packed_tensors`` (the tests' oracle), never against quantdispatch's code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import GptOssConfig, GptOssForCausalLM
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

__all__ = ["CONFIG", "NOT_CONVERTED", "quantize_experts", "write_mxfp4", "gpt_oss"]

CONFIG: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2, "num_local_experts": 4,
                          "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                          "vocab_size": 256, "max_position_embeddings": 128, "sliding_window": 8, "tie_word_embeddings": False}
NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]
"""gpt-oss' ``modules_to_not_convert``: attention, router, embeddings and the output layer stay bfloat16."""


def gpt_oss(seed: int = 0, **overrides: Any) -> GptOssForCausalLM:
    """A random tiny gpt-oss in float32, its expert biases and router made large enough to matter."""
    torch.manual_seed(seed)
    model: GptOssForCausalLM = GptOssForCausalLM(GptOssConfig(**{**CONFIG, **overrides}))
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name or "router" in name:
                p.normal_(0.0, 0.2 if "bias" in name else 0.05)
    return model


def quantize_experts(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``GptOssExperts``' parameter ``[E, in, out]`` as MXFP4 ``blocks`` ``[E, out, in/32, 16]`` (uint8)
    and E8M0 ``scales`` ``[E, out, in/32]`` (uint8)."""
    rows = dense.float().transpose(1, 2)  # [E, out, in]
    e, n, k = rows.shape
    blocks = rows.reshape(e, n, k // 32, 32)
    amax = blocks.abs().amax(-1)
    exponent = torch.ceil(torch.log2(torch.where(amax > 0, amax / 6.0, torch.ones_like(amax)))).clamp(-127, 127)
    scaled = blocks / torch.pow(2.0, exponent).unsqueeze(-1)
    table = torch.tensor(FP4_VALUES[:8])
    index = (scaled.abs().clamp(max=6.0).unsqueeze(-1) - table).abs().argmin(-1).to(torch.uint8)
    codes = (index | ((scaled < 0).to(torch.uint8) << 3)).reshape(e, n, k)
    packed = (codes[..., 1::2] << 4) | codes[..., 0::2]
    return packed.reshape(e, n, k // 32, 16).contiguous(), (exponent + 127).to(torch.uint8).contiguous()


def write_mxfp4(out: Path, seed: int = 0, **overrides: Any) -> tuple[GptOssForCausalLM, dict[str, torch.Tensor]]:
    """A gpt-oss MXFP4 checkpoint (experts MXFP4, everything else bfloat16) in ``out``; returns the
    float32 model holding what the checkpoint means (bfloat16 weights, experts as Transformers'
    ``convert_moe_packed_tensors`` dequantizes them in float32) and the stored tensors."""
    from safetensors.torch import save_file

    model = gpt_oss(seed, **overrides)
    stored = {name: t.to(torch.bfloat16) for name, t in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, t in stored.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = quantize_experts(t)
        else:
            tensors[name] = t.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"))
    model.config.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": NOT_CONVERTED}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    reference = GptOssForCausalLM(model.config)  # fresh: its rotary frequencies stay float32
    reference.eval()
    reference.load_state_dict({k: v.float() for k, v in stored.items()})
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                p.copy_(convert_moe_packed_tensors(tensors[f"{name}_blocks"], tensors[f"{name}_scales"], dtype=torch.float32))
    return reference, tensors
