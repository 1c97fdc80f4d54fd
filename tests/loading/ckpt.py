"""Writing tiny quantized checkpoints for the loading tests: a random llama, its linear layers
quantized by quantdispatch.testing's round-to-nearest writers, saved as Transformers does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

import quantdispatch as qd
from quantdispatch.codec import dump
from quantdispatch.testing import Quantized, quantize_awq, quantize_gptq

__all__ = ["CONFIG", "base_model", "write_quantized", "Quantizer", "gptq_quantizer", "awq_quantizer"]

CONFIG = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     vocab_size=256, max_position_embeddings=128, tie_word_embeddings=False)

Quantizer = Callable[[str, torch.Tensor], Quantized]


def base_model(seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    """The full-precision tiny llama every test quantizes."""
    torch.manual_seed(seed)
    config = LlamaConfig(**{**CONFIG.to_dict(), "tie_word_embeddings": tie})
    model: LlamaForCausalLM = LlamaForCausalLM(config).eval()
    return model


def gptq_quantizer(config: qd.AbstractGptq, act_order: bool = False) -> Quantizer:
    """Quantize each layer as GPTQ (act-order: a seeded random column permutation per layer)."""
    def quantize(name: str, w: torch.Tensor) -> Quantized:
        perm = torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(len(name))) if act_order else None
        return quantize_gptq(w, config, perm=perm)
    return quantize


def awq_quantizer(config: qd.AbstractAwq) -> Quantizer:
    """Quantize each layer in the config's AWQ packing."""
    return lambda name, w: quantize_awq(w, config)


def write_quantized(out: Path, model: LlamaForCausalLM, config: qd.AbstractQuantConfig, quantize: Quantizer,
                    *, shards: int = 1) -> LlamaForCausalLM:
    """Save ``model`` with every decoder-layer projection quantized; return the float model whose
    weights are the dequantized ones (the tight reference for the loaded model's logits)."""
    out.mkdir(parents=True, exist_ok=True)
    reference: LlamaForCausalLM = LlamaForCausalLM(model.config).eval()
    reference.load_state_dict(model.state_dict())
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            q = quantize(module, t)
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in q.tensors.items())
            linear = reference.get_submodule(module)
            assert isinstance(linear, torch.nn.Linear)
            linear.weight.data.copy_(q.weight)
        elif not (model.config.tie_word_embeddings and name == "lm_head.weight"):
            tensors[name] = t.contiguous()
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"))
    else:
        weight_map: dict[str, str] = {}
        for i in range(shards):
            part = names[i::shards]
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: tensors[n] for n in part}, str(out / file))
            weight_map.update((n, file) for n in part)
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    document = model.config.to_dict()
    document["quantization_config"] = dump(config, style="transformers") if isinstance(config, qd.AbstractGptq) else dump(config)
    (out / "config.json").write_text(json.dumps(document))
    return reference
