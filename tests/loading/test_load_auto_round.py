"""qd.load on AutoRound exports written during the test: each integer packing_format loads on a
kernel of the GPTQ or AWQ layout it stores, with logits equal to a dense model of the dequantized
weights; what is no layout, or disagrees with its tensors, gives coded issues.

The checkpoints are what AutoRound writes, built without the auto-round package: its
round-to-nearest rule (``quant_tensor_sym``/``quant_tensor_asym`` in ``auto_round/data_type/int.py``,
with signed symmetric scales), packed by our GPTQ and AWQ writers' packers in the orientation and
zero-point convention of AutoRound's packer for that packing_format (see
``quantdispatch/layouts/auto_round.py``), under the ``quantization_config`` key set
``save_quantized_as_autoround`` leaves after ``filter_quantization_config``.

Transformers is no oracle here: its AutoRound quantizer imports the auto-round package to swap
modules (``quantizers/quantizer_auto_round.py``, ``validate_environment``), which this
environment does not have; ``test_transformers_needs_the_auto_round_package`` records that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernel import kernel_named
from quantdispatch.kernels.awq import pack_awq_gemm
from quantdispatch.kernels.gptq import pack_gptq_qweight, pack_gptq_qzeros
from quantdispatch.layouts import AwqPacked, GptqPacked, layout_of
from quantdispatch.testing import Quantized

from .ckpt import Quantizer, base_model, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))
NO_AUTO_ROUND = importlib.util.find_spec("auto_round") is None


def _auto_round_rtn(weight: torch.Tensor, bits: int, group_size: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``[N, K]``, zero points and fp16 scales ``[N, G]`` by AutoRound's rule at v = 0."""
    n, k = weight.shape
    size = k if group_size == -1 else group_size
    grouped = weight.to(torch.float32).reshape(n, k // size, size)
    low, high = grouped.amin(dim=2).clamp(max=0), grouped.amax(dim=2).clamp(min=0)
    if sym:  # the larger extreme maps to -2**(bits-1): the scale takes its sign
        half = 1 << (bits - 1)
        scales = (torch.where(high < -low, -low, -high) / half).to(torch.float16)
        scales = torch.where(scales == 0, torch.finfo(torch.float16).tiny, scales)
        q = torch.clamp(torch.round(grouped / scales.float().unsqueeze(2)), -half, half - 1)
        zeros = torch.full_like(low, half)
        codes = q + half
    else:
        maxq = (1 << bits) - 1
        scales = ((high - low) / maxq).clamp(min=1e-5).to(torch.float16)
        zeros = torch.round(-low / scales.float())
        codes = torch.clamp(torch.round(grouped / scales.float().unsqueeze(2)) + zeros.unsqueeze(2), 0, maxq)
    return codes.reshape(n, k).to(torch.int64), zeros.to(torch.int64), scales


def auto_round_quantizer(packing_format: str, bits: int, group_size: int, sym: bool) -> Quantizer:
    """Quantize each layer as AutoRound and pack it as its packer for ``packing_format`` does."""
    def quantize(name: str, weight: torch.Tensor) -> Quantized:
        n, k = weight.shape
        codes, zeros, scales = _auto_round_rtn(weight, bits, group_size, sym)
        group_of = torch.arange(k) // (k if group_size == -1 else group_size)
        reference = scales.float()[:, group_of] * (codes - zeros[:, group_of]).to(torch.float32)
        tensors: dict[str, torch.Tensor]
        if "awq" in packing_format:  # export_to_awq/utils.py WQLinear_GEMM: [K, N/8] words, AWQ order, zeros as they are
            tensors = {"qweight": pack_awq_gemm(codes.t()), "qzeros": pack_awq_gemm(zeros.t()), "scales": scales.t().contiguous()}
        else:  # qlinear_torch(_zp).py: [K/32*b, N] words; auto_gptq stores zeros - 1, gptqmodel/auto_round as they are
            v1 = "gptqmodel" not in packing_format and packing_format != "auto_round"
            tensors = {"qweight": pack_gptq_qweight(codes.t(), bits), "qzeros": pack_gptq_qzeros(zeros.t(), bits, v1),
                       "scales": scales.t().contiguous()}
            if "gptqmodel" in packing_format:  # QuantLinear(g_idx=True): the trivial k // group_size
                tensors["g_idx"] = group_of.to(torch.int32)
        return Quantized(tensors, codes, zeros, scales, group_of, reference)
    return quantize


def quantization_config(packing_format: str, bits: int, group_size: int, sym: bool) -> dict[str, object]:
    """What save_quantized_as_autoround writes for a default (iters=200) run of auto-round 0.15."""
    return {"autoround_version": "0.15.0", "bits": bits, "block_name_to_quantize": "model.layers", "data_type": "int",
            "group_size": group_size, "packing_format": packing_format, "quant_method": "auto-round",
            "static_attention_granularity": "tensor", "static_kv_granularity": "tensor", "sym": sym}


def write_auto_round(out: Path, packing_format: str, bits: int, group_size: int, sym: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The checkpoint, its full-precision model and the dense model of its dequantized weights."""
    model = base_model()
    # write_quantized's config only names the file's method; the quantization_config is then AutoRound's own.
    reference = write_quantized(out, model, qd.AutoRoundGptq(), auto_round_quantizer(packing_format, bits, group_size, sym))
    document = json.loads((out / "config.json").read_text())
    document["quantization_config"] = quantization_config(packing_format, bits, group_size, sym)
    (out / "config.json").write_text(json.dumps(document))
    return model, reference


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits
    return out


def _codes(found: object) -> list[str]:
    assert isinstance(found, qd.Err), found
    return [i.code for i in found.error]


CASES = [
    ("auto_round:auto_gptq", 4, 32, True),
    ("auto_round:auto_gptq", 3, 32, False),
    ("auto_round:gptq", 8, -1, True),
    ("auto_round:gptqmodel", 4, 64, True),
    ("auto_round:gptqmodel", 2, 32, False),
    ("auto_round", 2, 32, False),
    ("auto_round", 8, 64, False),
    ("auto_round:auto_awq", 4, 32, False),
    ("auto_round:auto_awq", 4, 64, True),
]


@pytest.mark.parametrize("packing_format,bits,group_size,sym", CASES, ids=lambda v: str(v))
def test_integer_exports_load_on_their_layout_exactly(tmp_path: Path, packing_format: str, bits: int, group_size: int, sym: bool) -> None:
    """The plan picks a kernel serving the layout, never the auto-round package; on the portable
    kernel the float32 logits equal the dense model's within float32 summation error."""
    model, reference = write_auto_round(tmp_path, packing_format, bits, group_size, sym)
    chosen = qd.load(tmp_path, device="cpu").unwrap()
    layout = layout_of(chosen.plan.config)
    kernel = kernel_named(chosen.plan.backend.name)
    assert isinstance(layout, AwqPacked if "awq" in packing_format else GptqPacked)
    assert kernel is not None and kernel.serves(layout), chosen.plan.explain()
    assert "layout:" in chosen.plan.explain()
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    ours = _logits(loaded.model)
    assert torch.allclose(ours, _logits(reference), atol=1e-5, rtol=0)
    assert (ours - _logits(model)).abs().max() > 1e-4  # the quantization error is real
    if sym:  # AutoRound's symmetric scales keep the sign of the larger extreme: both signs occur
        scales = loaded.model.get_submodule("model.layers.0.mlp.down_proj").scales
        assert isinstance(scales, torch.Tensor) and (scales < 0).any() and (scales > 0).any()


@pytest.mark.skipif(not NO_AUTO_ROUND, reason="with the auto-round package installed it is the fallback, and plans succeed")
def test_a_packing_format_naming_no_integer_packing_is_refused_with_the_reason(tmp_path: Path) -> None:
    """auto_round:llm_compressor holds no GPTQ or AWQ bytes: the plan says so, and that auto-round is missing."""
    write_auto_round(tmp_path, "auto_round:auto_gptq", 4, 32, True)
    document = json.loads((tmp_path / "config.json").read_text())
    document["quantization_config"]["packing_format"] = "auto_round:llm_compressor"
    (tmp_path / "config.json").write_text(json.dumps(document))
    found = qd.load(tmp_path, device="cpu")
    assert _codes(found) == ["plan.no_usable_backend"]
    assert isinstance(found, qd.Err) and "not one of AutoRound's integer packings" in found.error[0].message
    assert "auto-round" in found.error[0].message


def test_awq_packing_of_three_bits_is_an_issue(tmp_path: Path) -> None:
    """bits 3 under auto_round:auto_awq: AutoRound's AWQ exporter writes 4 bits only."""
    write_auto_round(tmp_path, "auto_round:auto_awq", 4, 32, False)
    document = json.loads((tmp_path / "config.json").read_text())
    document["quantization_config"]["bits"] = 3
    (tmp_path / "config.json").write_text(json.dumps(document))
    assert _codes(qd.load(tmp_path, device="cpu")) == ["auto-round.bits.awq"]


@pytest.mark.parametrize("packing_format", ["auto_round:auto_gptq", "auto_round:auto_awq"])
def test_config_bits_or_group_size_disagreeing_with_the_tensors(tmp_path: Path, packing_format: str) -> None:
    """A config that disagrees with the stored shapes is a shape issue per tensor, and no model."""
    write_auto_round(tmp_path, packing_format, 4, 32, False)
    document = json.loads((tmp_path / "config.json").read_text())
    key, value = ("bits", 8) if "gptq" in packing_format else ("group_size", 64)
    document["quantization_config"][key] = value
    (tmp_path / "config.json").write_text(json.dumps(document))
    assert set(_codes(qd.load(tmp_path, device="cpu"))) == {"load.tensor.shape"}


@pytest.mark.skipif(not NO_AUTO_ROUND, reason="the auto-round package is installed")
def test_transformers_needs_the_auto_round_package(tmp_path: Path) -> None:
    """Transformers loads quant_method auto-round only through the auto-round package, whatever
    the packing: it cannot cross-check these checkpoints here."""
    from transformers import AutoModelForCausalLM

    write_auto_round(tmp_path, "auto_round:auto_gptq", 4, 32, True)
    with pytest.raises(ImportError, match="auto-round"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("packing_format", ["auto_round:auto_gptq", "auto_round:auto_awq"])
@pytest.mark.parametrize("backend", ["cpu-q4", "cpu-int4"])
def test_cpu_int4_kernels_take_signed_scales(tmp_path: Path, packing_format: str, backend: str) -> None:
    """The CPU int4 kernels (through the layouts' int4 form) read AutoRound's negative symmetric
    scales: float32 logits within 5 % of the quantization error of the dense model's."""
    model, reference = write_auto_round(tmp_path, packing_format, 4, 32, True)
    found = qd.load(tmp_path, device="cpu", dtype="float32", backend=backend)
    if isinstance(found, qd.Err):
        pytest.skip(f"{backend} does not run here: {found.error[0].message[:120]}")
    ours, dense = _logits(found.value.model), _logits(reference)
    assert (ours - dense).abs().max() <= 0.05 * (_logits(model) - dense).abs().max()


def test_layers_extra_config_leaves_in_full_precision_load_dense(tmp_path: Path) -> None:
    """AutoRound writes ``extra_config: {layer: {"bits": 16}}`` for a layer it keeps in full
    precision, stored as its ``weight``: that layer loads dense, the others packed."""
    from safetensors.torch import load_file, save_file

    model, reference = write_auto_round(tmp_path, "auto_round:auto_gptq", 4, 32, True)
    kept = "model.layers.1.self_attn.o_proj"
    source, target = model.get_submodule(kept), reference.get_submodule(kept)
    assert isinstance(source, torch.nn.Linear) and isinstance(target, torch.nn.Linear)
    weight = source.weight.detach().clone()
    target.weight.data.copy_(weight)
    tensors = {k: v for k, v in load_file(str(tmp_path / "model.safetensors")).items() if not k.startswith(f"{kept}.")}
    save_file({**tensors, f"{kept}.weight": weight.contiguous()}, str(tmp_path / "model.safetensors"))
    document = json.loads((tmp_path / "config.json").read_text())
    document["quantization_config"]["extra_config"] = {kept: {"bits": 16, "data_type": "float"}}
    (tmp_path / "config.json").write_text(json.dumps(document))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert isinstance(loaded.model.get_submodule(kept), torch.nn.Linear)
    assert not isinstance(loaded.model.get_submodule("model.layers.1.self_attn.q_proj"), torch.nn.Linear)
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)
