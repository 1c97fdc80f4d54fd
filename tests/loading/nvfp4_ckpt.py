"""NVFP4 checkpoints for the loading tests: compressed-tensors' own (written by its ``ModelCompressor``)
and ModelOpt's (written here, as ModelOpt's ``NVFP4QTensor.quantize`` and its HF export lay them out).

No ModelOpt runs here, so ``write_modelopt`` follows its published quantizer: per-tensor
``weight_scale_2 = amax / (6 * 448)``, per-block ``weight_scale = block_amax / (6 * weight_scale_2)``
in E4M3 (a zero block's scale set to 1), codes the nearest E2M1 value of ``w / (weight_scale *
weight_scale_2)``, packed ``code[2j + 1] << 4 | code[2j]``. With ``power_of_two`` the per-tensor
scale is rounded to a power of two, so that compressed-tensors' ``1 / weight_scale_2`` (its
ModelOpt converter) is exact and the two formats' dequantizations coincide bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from .ckpt import base_model
from .ct_ckpt import ct, write_with_compressed_tensors

E2M1_REFERENCE = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""The E2M1 magnitudes as compressed-tensors' ``kE2M1ToFloat`` and ModelOpt's ``e2m1_values`` list them."""


def write_ct_nvfp4(out: Path, preset: str = "NVFP4A16", seed: int = 3) -> LlamaForCausalLM:
    """A checkpoint in compressed-tensors' ``nvfp4-pack-quantized`` format, written by compressed-tensors
    (scales from its ``generate_gparam`` and ``calculate_qparams``); returns the model holding its
    own decompressed (bfloat16) weights."""
    quantization, helpers = ct("quantization"), ct("quantization.utils.helpers")
    model = base_model(seed=seed)

    def calibrate(module: Any, w: torch.Tensor) -> None:
        n, k = w.shape
        g = helpers.generate_gparam(w.min(), w.max())
        module.weight_global_scale.data.copy_(g)
        blocks = w.view(n, k // 16, 16)
        s, _ = helpers.calculate_qparams(blocks.amin(-1), blocks.amax(-1), module.quantization_scheme.weights, global_scale=g)
        module.weight_scale.data.copy_(s.to(module.weight_scale.dtype))
        input_global: Any = getattr(module, "input_global_scale", None)
        if input_global is not None:
            input_global.data.fill_(1024.0)

    scheme = quantization.preset_name_to_scheme(preset, ["Linear"])
    kept = write_with_compressed_tensors(out, model, scheme, "nvfp4-pack-quantized", calibrate, ("weight_scale", "weight_global", "input_"))
    dense: LlamaForCausalLM = LlamaForCausalLM(model.config).eval()
    dense.load_state_dict(kept)
    return dense


def modelopt_quantize(w: torch.Tensor, power_of_two: bool = True) -> dict[str, torch.Tensor]:
    """One linear weight ``[N, K]`` as ModelOpt's NVFP4 export stores it (``weight``, ``weight_scale``,
    ``weight_scale_2``; ``input_scale`` is set to a plain value)."""
    n, k = w.shape
    s2 = w.abs().max().float() / (6.0 * 448.0)
    if power_of_two:
        s2 = torch.tensor(2.0 ** round(math.log2(float(s2))), dtype=torch.float32)
    blocks = w.float().view(n, k // 16, 16)
    s = blocks.abs().amax(-1) / (6.0 * s2)
    s[s == 0] = 1.0
    s8 = s.to(torch.float8_e4m3fn)
    scaled = blocks / (s8.float() * s2).unsqueeze(-1)
    table = torch.tensor(E2M1_REFERENCE)
    index = (scaled.abs().clamp(max=6.0).unsqueeze(-1) - table).abs().argmin(-1).to(torch.uint8)
    codes = (index | ((scaled < 0).to(torch.uint8) << 3)).view(n, k)
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    return {"weight": packed.contiguous(), "weight_scale": s8.contiguous(), "weight_scale_2": s2.reshape(()),
            "input_scale": torch.tensor(0.01, dtype=torch.float32)}


def modelopt_reference(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """ModelOpt's ``NVFP4QTensor.dequantize`` as published: ``e2m1_values[code] * (scale.float() * double_scale)``,
    the codes unpacked ``[..., 0::2] = byte & 0x0F`` and ``[..., 1::2] = byte >> 4``, in float32."""
    packed = tensors["weight"]
    values = torch.tensor([*E2M1_REFERENCE, *(-v for v in E2M1_REFERENCE)])
    n, half = packed.shape
    codes = torch.empty(n, 2 * half, dtype=torch.long)
    codes[:, 0::2] = (packed & 0x0F).long()
    codes[:, 1::2] = (packed >> 4).long()
    per_block = tensors["weight_scale"].to(torch.float32) * tensors["weight_scale_2"]
    return (values[codes].view(n, -1, 16) * per_block.unsqueeze(-1)).view(n, 2 * half)


def write_modelopt(out: Path, seed: int = 4, kv_cache: bool = False) -> tuple[LlamaForCausalLM, dict[str, dict[str, torch.Tensor]]]:
    """A ModelOpt NVFP4 checkpoint (``hf_quant_config.json``, ``lm_head`` excluded; with
    ``kv_cache``, an FP8 KV cache: ``k_scale``/``v_scale`` beside ``k_proj``/``v_proj``); returns
    the float32 model holding ModelOpt's dequantized weights and each layer's stored tensors."""
    from safetensors.torch import save_file

    model = base_model(seed=seed)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, torch.Tensor]] = {}
    reference = LlamaForCausalLM(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            layers[name] = modelopt_quantize(module.weight.data)
            reference.get_submodule(name).weight.data.copy_(modelopt_reference(layers[name]))
    for name, t in model.state_dict().items():
        module_name = name.rpartition(".")[0]
        if module_name not in layers:
            tensors[name] = t.contiguous()
    for module_name, stored in layers.items():
        tensors.update({f"{module_name}.{k}": v for k, v in stored.items()})
        if kv_cache and module_name.endswith(("k_proj", "v_proj")):
            tensors[f"{module_name}.{module_name[-6]}_scale"] = torch.tensor(0.02, dtype=torch.float32)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"))
    model.config.save_pretrained(out)
    hf_quant = {"producer": {"name": "modelopt", "version": "0.33.0"},
                "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8" if kv_cache else None, "group_size": 16,
                                 "exclude_modules": ["lm_head"]}}
    (out / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=4))
    return reference, layers
