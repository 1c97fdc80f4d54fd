"""CUDA paths chosen by dispatch: they run where torch sees a GPU and are skipped elsewhere.

On this project's CI there is no GPU; these tests are for machines that have one (and were run
on a lent GPU when one was available)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import quantdispatch as qd

from .ckpt import awq_quantizer, base_model, gptq_quantizer, write_quantized

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("config", [qd.Gptq(bits=4, group_size=32), qd.GptqV2(bits=8, group_size=-1), qd.AwqGemm(group_size=32)],
                         ids=lambda c: type(c).__name__)
def test_packed_checkpoints_load_on_cuda(tmp_path: Path, config: qd.AbstractQuantConfig) -> None:
    """device='cuda': the plan picks a CUDA-capable backend with a loader, every tensor ends on the
    GPU, and float16 logits agree with the CPU float32 load within float16 rounding."""
    quantize = awq_quantizer(config) if isinstance(config, qd.AbstractAwq) else gptq_quantizer(config)  # type: ignore[arg-type]
    write_quantized(tmp_path, base_model(), config, quantize)
    gpu = qd.load(tmp_path, device="cuda", dtype="float16").unwrap()
    assert gpu.plan.device.label.startswith("cuda") and gpu.plan.backend.loader is not None
    assert all(t.device.type == "cuda" for t in (*gpu.model.parameters(), *gpu.model.buffers()))
    cpu = qd.load(tmp_path, device="cpu", dtype="float32").unwrap()
    with torch.no_grad():
        a = gpu.model(IDS.cuda()).logits.float().cpu()
        b = cpu.model(IDS).logits
    assert (a - b).abs().max().item() < 5e-2 * max(1.0, b.abs().max().item())


def test_bitsandbytes_quantizes_on_cuda(tmp_path: Path) -> None:
    """bitsandbytes NF4 quantize-on-load on a GPU."""
    pytest.importorskip("bitsandbytes")
    base_model().save_pretrained(tmp_path / "fp32")
    loaded = qd.load(tmp_path / "fp32", device="cuda", quantization=qd.Bnb4Bit(quant_type="nf4", compute_dtype=qd.DType.FLOAT16)).unwrap()
    assert loaded.plan.backend.name == "bitsandbytes-4bit" and loaded.plan.device.label.startswith("cuda")
    with torch.no_grad():
        assert torch.isfinite(loaded.model(IDS.cuda()).logits).all()
