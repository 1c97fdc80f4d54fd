"""gpt-oss MXFP4 checkpoints load with their experts kept packed on a CPU.

The checkpoint is a random tiny gpt-oss (2 layers, hidden 64, 4 experts, intermediate 64) whose
experts ``mxfp4_ckpt.quantize_experts`` writes as gpt-oss stores them. Oracles: Transformers'
``convert_moe_packed_tensors`` (its dequantization) and Transformers itself, which on a CPU without
Triton loads the same checkpoint by dequantizing the experts to bfloat16 (``dequantize=True``
fallback). Kept packed on the portable path, dequantized at load, and in Transformers, the
bfloat16 logits are the same bits; the native kernel agrees to float32 rounding.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

import quantdispatch as qd
import quantdispatch.kernels.mxfp4 as mxfp4_module
from quantdispatch.kernels.fp4_native import native_fp4
from quantdispatch.kernels.mxfp4 import Mxfp4ExpertsModule
from quantdispatch.layouts import Mxfp4Experts, Unpackable, layout_of
from quantdispatch.layouts.mxfp4 import ExpertSizes, dense_experts, mxfp4_rows

from .mxfp4_ckpt import CONFIG, NOT_CONVERTED, quantize_experts, write_mxfp4

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(17))
EXPERTS = "model.layers.0.mlp.experts"
needs_native = pytest.mark.skipif(native_fp4() is None, reason="the native FP4 kernel cannot be built here (no C compiler?)")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("mxfp4") / "ckpt"
    reference, tensors = write_mxfp4(out)
    return out, reference, tensors


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(ids).logits
    return out


def _experts(model: torch.nn.Module) -> list[Mxfp4ExpertsModule]:
    return [m for m in model.modules() if isinstance(m, Mxfp4ExpertsModule)]


def test_the_writer_is_what_transformers_dequantizes(ckpt: tuple[Path, Any, Any]) -> None:
    """Transformers' convert_moe_packed_tensors reads the written blocks back to within half an E2M1
    step of the bfloat16 weights they came from, block by block: the writer's layout is gpt-oss'."""
    from .mxfp4_ckpt import gpt_oss

    weight = gpt_oss(0).model.layers[0].mlp.experts.down_proj.data.to(torch.bfloat16).float()  # [E, I, H]
    blocks, scales = quantize_experts(weight)
    assert blocks.shape == (4, 64, 2, 16) and scales.shape == (4, 64, 2) and blocks.dtype == scales.dtype == torch.uint8
    back = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
    step = torch.pow(2.0, scales.int() - 127).repeat_interleave(32, dim=-1).transpose(1, 2)  # [E, I, H], like back
    assert back.shape == weight.shape and bool(((back - weight).abs() <= step).all())
    assert bool((back.abs() <= 6.0 * step).all()) and set(back.div(step).flatten().tolist()) <= set(FP4_VALUES)


def test_the_layout_declares_the_stored_tensors(ckpt: tuple[Path, Any, dict[str, torch.Tensor]]) -> None:
    """The config parses to the MXFP4 layout; each experts block stores what it declares, in its dtypes."""
    out, _, tensors = ckpt
    raw = json.loads((out / "config.json").read_text())["quantization_config"]
    assert raw == {"quant_method": "mxfp4", "modules_to_not_convert": NOT_CONVERTED}
    layout = layout_of(qd.parse(raw).unwrap())
    assert layout == Mxfp4Experts()
    declared = layout.expert_tensors(ExpertSizes(4, CONFIG["hidden_size"], CONFIG["intermediate_size"]))
    assert not isinstance(declared, Unpackable)
    codes = {torch.uint8: "U8", torch.bfloat16: "BF16"}
    stored = {n[len(EXPERTS) + 1:]: (tuple(t.shape), codes[t.dtype]) for n, t in tensors.items() if n.startswith(EXPERTS)}
    assert stored == {n: (d.shape, d.dtype) for n, d in declared.items()}
    assert isinstance(layout.tensors(64, 64, False), Unpackable)  # a linear layer is not stored in it
    unfit = layout.expert_tensors(ExpertSizes(4, 64, 48))
    assert isinstance(unfit, Unpackable) and unfit.code == "mxfp4.shape.not_blocks"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16], ids=str)
def test_dense_experts_is_transformers_dequantization_bit_for_bit(dtype: torch.dtype) -> None:
    """Over every code and every scale byte but NaN's (0..254, through subnormals and overflow to
    infinity), dense_experts equals convert_moe_packed_tensors bit for bit."""
    g = torch.Generator().manual_seed(5)
    blocks = torch.randint(0, 256, (3, 40, 4, 16), dtype=torch.uint8, generator=g)
    scales = torch.arange(3 * 40 * 4).reshape(3, 40, 4).remainder(255).to(torch.uint8)
    expected = convert_moe_packed_tensors(blocks, scales, dtype=dtype)
    got = dense_experts(blocks, scales, dtype)
    assert got.shape == expected.shape == (3, 128, 40) and got.dtype == dtype
    assert torch.equal(got.view(torch.uint8 if dtype.itemsize == 1 else torch.int16 if dtype.itemsize == 2 else torch.int32),
                       expected.view(torch.uint8 if dtype.itemsize == 1 else torch.int16 if dtype.itemsize == 2 else torch.int32))


def test_the_plan_shows_the_layout_and_the_kernel(ckpt: tuple[Path, Any, Any]) -> None:
    """On a CPU the plan picks cpu-fp4-experts (torch-packed as its fallback) and explains the layout."""
    out, _, _ = ckpt
    config = qd.parse(json.loads((out / "config.json").read_text())["quantization_config"]).unwrap()
    plan = qd.plan(config, qd.probe()).unwrap()
    text = plan.explain()
    assert "layout:   MXFP4 mixture-of-experts (gpt-oss)" in text
    assert plan.backend.name == ("cpu-fp4-experts" if native_fp4() is not None else plan.backend.name)
    assert "torch-packed" in text and "triton-mxfp4" in text


def test_kept_packed_is_transformers_own_cpu_load_bit_for_bit(ckpt: tuple[Path, Any, Any]) -> None:
    """torch-packed keeps the experts' FP4 bytes (the rest is dense); in bfloat16 its logits are the
    ones Transformers computes after its own CPU fallback dequantized the same checkpoint."""
    from transformers import AutoModelForCausalLM

    out, _, _ = ckpt
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend="torch-packed").unwrap()
    experts = _experts(loaded.model)
    assert len(experts) == 2 and all(m.gate_up_proj_blocks.dtype == torch.uint8 and m.path == "torch" for m in experts)
    assert isinstance(loaded.model.get_submodule("model.layers.0.self_attn.q_proj"), torch.nn.Linear)
    with warnings.catch_warnings(action="ignore"):
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert type(hf.get_submodule(EXPERTS)).__name__ == "GptOssExperts"  # Transformers dequantized (no Triton here)
    assert torch.equal(_logits(loaded.model), _logits(hf))


def test_kept_packed_float32_equals_the_dense_model(ckpt: tuple[Path, Any, Any]) -> None:
    """In float32 the portable path's logits are those of gpt-oss holding Transformers' dequantized experts."""
    out, reference, _ = ckpt
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert torch.equal(_logits(loaded.model), _logits(reference))


def test_only_the_picked_experts_are_dequantized(ckpt: tuple[Path, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Per call, the portable path dequantizes one expert's projection at a time, only for the experts
    the router picked (one token, top-2 of 4: 2 experts x 2 projections x 2 layers)."""
    out, _, _ = ckpt
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    seen: list[tuple[int, ...]] = []
    real = mxfp4_rows

    def counting(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        seen.append(tuple(blocks.shape))
        return real(blocks, scales, dtype)

    monkeypatch.setattr(mxfp4_module, "mxfp4_rows", counting)
    _logits(loaded.model, IDS[:1, :1])
    assert len(seen) == 2 * 2 * 2 and all(len(shape) == 3 for shape in seen)


@pytest.mark.parametrize("how", ["dequantize_at_load", "config"])
def test_dequantized_at_load_is_transformers_dequantization(ckpt: tuple[Path, Any, Any], tmp_path: Path, how: str) -> None:
    """dequantize_at_load=True, or the config's dequantize, keeps dense experts bit-equal to
    convert_moe_packed_tensors; the forward is then GptOssExperts' own arithmetic."""
    out, reference, tensors = ckpt
    if how == "config":
        shutil.copytree(out, tmp_path / "dense")
        out = tmp_path / "dense"
        config = json.loads((out / "config.json").read_text())
        config["quantization_config"]["dequantize"] = True
        (out / "config.json").write_text(json.dumps(config))
    # dequantize_at_load applies to the portable modules (the backend asked for); the config's
    # dequantize makes the plan choose them (cpu-fp4-experts refuses it).
    backend = "torch-packed" if how == "dequantize_at_load" else None
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend=backend, dequantize_at_load=how == "dequantize_at_load").unwrap()
    assert loaded.plan.backend.name == "torch-packed"
    experts = _experts(loaded.model)
    assert len(experts) == 2 and all(m.dequantize_at_load for m in experts)
    _logits(loaded.model, IDS[:1])
    module = loaded.model.get_submodule(EXPERTS)
    assert isinstance(module, Mxfp4ExpertsModule)
    for proj in ("gate_up_proj", "down_proj"):
        expected = convert_moe_packed_tensors(tensors[f"{EXPERTS}.{proj}_blocks"], tensors[f"{EXPERTS}.{proj}_scales"])
        assert module.dense(torch.bfloat16)[proj].view(torch.int16).equal(expected.view(torch.int16)), proj
        assert module._dense[proj].view(torch.int16).equal(expected.view(torch.int16)), proj


@needs_native
def test_the_native_kernel_is_the_default_on_a_cpu(ckpt: tuple[Path, Any, Any]) -> None:
    """By default a CPU load runs the experts on the native op; float32 logits agree with the dense
    model to float32 rounding, for a decode step (one token) and a prompt."""
    out, reference, _ = ckpt
    loaded = qd.load(out, device="cpu", dtype="float32").unwrap()
    assert loaded.plan.backend.name == "cpu-fp4-experts"
    experts = _experts(loaded.model)
    assert len(experts) == 2 and all(m.path == "native" and m.down_proj_scales.dtype == torch.uint8 for m in experts)
    for ids in (IDS[:1, :1], IDS):
        torch.testing.assert_close(_logits(loaded.model, ids), _logits(reference, ids), rtol=1e-4, atol=1e-4)


@needs_native
def test_the_native_op_equals_the_torch_path_per_expert(ckpt: tuple[Path, Any, Any]) -> None:
    """Within one experts block, the native path's output is the portable path's to float32 rounding,
    for few tokens (the fused loop) and many (dequantized blocks and a GEMM)."""
    out, _, _ = ckpt
    loaded = qd.load(out, device="cpu", dtype="float32", backend="cpu-fp4-experts").unwrap()
    module = loaded.model.get_submodule(EXPERTS)
    assert isinstance(module, Mxfp4ExpertsModule) and module.path == "native"
    g = torch.Generator().manual_seed(3)
    for tokens in (3, 40):
        x = torch.randn(tokens, 64, generator=g)
        indices = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(tokens)])
        weights = torch.softmax(torch.randn(tokens, 2, generator=g), dim=-1)
        native = module(x, indices, weights)
        module.path = "torch"
        portable = module(x, indices, weights)
        module.path = "native"
        torch.testing.assert_close(native, portable, rtol=1e-5, atol=1e-5)
