"""The main job, end to end on a tiny model: build it, quantize it several ways, then inspect and
load each checkpoint through dispatch and compare with full precision.

Run: ``quantdispatch demo --load`` (needs the ``torch`` and ``bnb`` extras). Everything is made in a
temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from .codec import dump
from .configs.awq import AwqGemm
from .configs.base import AbstractQuantConfig
from .configs.bnb import Bnb4Bit
from .configs.gptq import Gptq, GptqV2
from .dtypes import DType
from .loading import load
from .plan import LoadOptions, plan
from .probing import probe
from .reading import read_config
from .result import Err
from .testing import quantize_awq, quantize_gptq

__all__ = ["run"]


def _say(text: str) -> None:
    print(text, flush=True)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def _write(out: Path, model: LlamaForCausalLM, config: AbstractQuantConfig) -> None:
    out.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            q = quantize_gptq(t, config) if isinstance(config, (Gptq, GptqV2)) else quantize_awq(t, config)  # type: ignore[arg-type]
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in q.tensors.items())
        else:
            tensors[name] = t.contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    document = model.config.to_dict()
    document["quantization_config"] = dump(config, style="transformers")
    (out / "config.json").write_text(json.dumps(document))


def run() -> int:
    """Build, quantize four ways, inspect, load and compare; return the exit status."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=4, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    env = probe()
    with tempfile.TemporaryDirectory(prefix="quantdispatch-demo-") as tmp:
        root = Path(tmp)
        _say(f"== a random llama: {sum(p.numel() for p in model.parameters()):,} parameters, 4 layers, hidden 256")
        model.save_pretrained(root / "fp32")
        variants: list[tuple[str, AbstractQuantConfig | None]] = [
            ("gptq-4bit-g128", Gptq(bits=4, group_size=128)), ("gptq-v2-8bit-g64", GptqV2(bits=8, group_size=64)),
            ("awq-gemm-4bit-g64", AwqGemm(group_size=64)), ("bnb-nf4", None),
        ]
        for name, qconfig in variants:
            started = time.perf_counter()
            if qconfig is not None:
                _say(f"\n== quantizing to {name} (round-to-nearest, our packer)…")
                _write(root / name, model, qconfig)
            else:
                _say(f"\n== quantizing to {name} while loading the fp32 checkpoint (bitsandbytes), then saving it…")
                made = load(root / "fp32", device="cpu", quantization=Bnb4Bit(quant_type="nf4", compute_dtype=DType.FLOAT32))
                if isinstance(made, Err):
                    _say("\n".join(i.render() for i in made.error))
                    return 1
                save: Any = made.value.model.save_pretrained
                save(root / name)
            found = read_config(root / name)
            if isinstance(found, Err) or found.value is None:
                _say(f"  cannot read {name}'s config: {found}")
                return 1
            planned = plan(found.value, env, LoadOptions(device="cpu", executable=True))
            if isinstance(planned, Err):
                _say("\n".join(i.render() for i in planned.error))
                return 1
            _say("  plan:\n" + "\n".join("    " + line for line in planned.value.explain().splitlines()))
            loaded = load(root / name, device="cpu")
            if isinstance(loaded, Err):
                _say("\n".join(i.render() for i in loaded.error))
                return 1
            with torch.no_grad():
                logits = loaded.value.model(ids).logits.float()
            err = (logits - reference).abs().max().item()
            cos = torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0).item()
            _say(f"  on disk {_size(root / name) / 2**20:.2f} MiB (fp32: {_size(root / 'fp32') / 2**20:.2f} MiB); "
                 f"logits vs fp32: max |diff| {err:.4f}, cosine {cos:.5f}; {time.perf_counter() - started:.1f} s")
    _say("\nEach checkpoint was read, parsed, validated and planned before a weight was touched; the plan chose the backend.")
    return 0


if __name__ == "__main__":
    sys.exit(run())
