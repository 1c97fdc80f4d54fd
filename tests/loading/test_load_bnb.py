"""bitsandbytes through qd.load: quantize-on-load of a full-precision checkpoint, and checkpoints
Transformers saved already quantized (4-bit NF4/FP4, double quant, compute dtypes, storage; 8-bit
LLM.int8 with threshold and skipped modules), against Transformers' own load of the same directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd

from .ckpt import base_model

pytest.importorskip("bitsandbytes")
torch.set_num_threads(1)
IDS = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(3))


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


CONFIGS = [
    qd.Bnb4Bit(quant_type="nf4"),
    qd.Bnb4Bit(quant_type="fp4", use_double_quant=True),
    qd.Bnb4Bit(quant_type="nf4", compute_dtype=qd.DType.BFLOAT16, quant_storage=qd.DType.BFLOAT16),
    qd.Bnb8Bit(threshold=4.0, skip_modules=("lm_head", "mlp.down_proj")),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: repr(c)[:60])
def test_quantize_on_load_then_reload_the_saved_checkpoint(tmp_path: Path, config: qd.AbstractBnb) -> None:
    """A full-precision checkpoint quantized while loading; saved; reloaded pre-quantized by us and
    by Transformers: the same logits, close to full precision, with the skipped modules left dense."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    full = base_model()
    full.save_pretrained(tmp_path / "fp32")
    made = qd.load(tmp_path / "fp32", device="cpu", quantization=config).unwrap()
    assert not made.plan.pre_quantized and made.plan.backend.name.startswith("bitsandbytes")
    made.model.save_pretrained(tmp_path / "q")  # type: ignore[operator]
    again = qd.load(tmp_path / "q", device="cpu").unwrap()
    assert again.plan.pre_quantized and type(again.plan.config) is type(config)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "q", device_map="cpu").eval()
    ours = _logits(again.model)
    assert torch.equal(ours, _logits(theirs))
    error = (ours - _logits(full)).abs().max().item()
    assert 0 < error < 0.5 * _logits(full).abs().max().item()
    quantized = (bnb.nn.modules.Linear4bit, bnb.nn.modules.Linear8bitLt)
    layers = dict(again.model.named_modules())
    assert isinstance(layers["model.layers.0.self_attn.q_proj"], quantized)
    if config.skip_modules:
        assert not isinstance(layers["model.layers.0.mlp.down_proj"], quantized)
    # the parameter count is the architecture's, not the packed storage's (Params4bit holds two codes a byte)
    assert made.stats.parameters == again.stats.parameters == sum(p.numel() for p in full.parameters())


def test_gptq_config_on_a_full_precision_checkpoint_is_refused(tmp_path: Path) -> None:
    """GPTQ needs calibration: asking to quantize while loading is a coded issue, not a load."""
    base_model().save_pretrained(tmp_path / "fp32")
    r = qd.load(tmp_path / "fp32", quantization=qd.Gptq(bits=4))
    assert isinstance(r, qd.Err) and [i.code for i in r.error] == ["plan.gptq.needs_calibration"]
