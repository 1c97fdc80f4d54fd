"""NVFP4 checkpoints load kept packed on a CPU: compressed-tensors' ``nvfp4-pack-quantized``
(written by compressed-tensors itself) and ModelOpt's (written by ``nvfp4_ckpt.write_modelopt``).

Oracles: compressed-tensors' ``decompress_model`` for its own checkpoints; for ModelOpt's, the
dequantization ModelOpt publishes (``NVFP4QTensor.dequantize``) and compressed-tensors' ModelOpt
converter followed by its NVFP4 decompressor, which coincide bit for bit when ``weight_scale_2``
is a power of two. Kept packed (torch-packed, per call) and dequantized at load, the weights and
logits equal the oracle's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("compressed_tensors")

import quantdispatch as qd
from quantdispatch.kernels.modules import PackedLinear
from quantdispatch.layouts import CtNvfp4, ModeloptNvfp4Blocks, Unpackable, layout_of

from .ct_ckpt import quiet
from .nvfp4_ckpt import write_ct_nvfp4, write_modelopt

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(13))
PRESETS = {"NVFP4A16": "float", "NVFP4": "static"}


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("ct-nvfp4")
    return {preset: (root / preset, write_ct_nvfp4(root / preset, preset)) for preset in PRESETS}


@pytest.fixture(scope="module")
def modelopt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, dict[str, dict[str, torch.Tensor]]]:
    out = tmp_path_factory.mktemp("modelopt-nvfp4") / "ckpt"
    reference, layers = write_modelopt(out)
    return out, reference, layers


def _in_bfloat16(dense: torch.nn.Module) -> torch.nn.Module:
    """The dense model built in bfloat16 as the loader builds its skeleton (``from_config``: the
    rotary frequencies stay float32), holding the same weights."""
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_config(dense.config, dtype=torch.bfloat16).eval()
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in dense.state_dict().items()})
    return model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_the_ct_checkpoint_is_what_compressed_tensors_writes(ct: dict[str, Any], preset: str) -> None:
    """The config parses to the NVFP4 layout; the stored tensors are the ones it declares, in its dtypes."""
    out, _ = ct[preset]
    raw = json.loads((out / "config.json").read_text())["quantization_config"]
    layout = layout_of(qd.parse(raw).unwrap())
    assert layout == CtNvfp4(activations=PRESETS[preset])  # type: ignore[arg-type]
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        prefix = "model.layers.0.mlp.down_proj."
        stored = {n[len(prefix):]: (tuple(f.get_slice(n).get_shape()), f.get_slice(n).get_dtype()) for n in f.keys() if n.startswith(prefix)}
    declared = layout.tensors(256, 128, bias=False)
    assert not isinstance(declared, Unpackable)
    assert stored == {n: (d.shape, d.dtype) for n, d in declared.items()}


@pytest.mark.parametrize("preset", PRESETS)
def test_ct_kept_packed_matches_compressed_tensors(ct: dict[str, Any], preset: str) -> None:
    """torch-packed keeps the FP4 bytes; in bfloat16 (compressed-tensors decompresses to it) the logits
    equal those of a dense model holding compressed-tensors' decompressed weights."""
    out, dense = ct[preset]
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend="torch-packed").unwrap()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 14 and all(m.weight_packed.dtype == torch.uint8 for m in packed)
    assert "nvfp4-pack-quantized" in loaded.plan.explain()
    assert any("activations to FP4" in n for n in loaded.plan.notes) == (preset == "NVFP4")
    assert torch.equal(_logits(loaded.model), _logits(_in_bfloat16(dense)))


def test_ct_dequantized_at_load_is_bit_equal(ct: dict[str, Any]) -> None:
    """With dequantize_at_load each layer's bfloat16 weight is compressed-tensors' decompressed one, bit for bit."""
    out, dense = ct["NVFP4A16"]
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend="torch-packed", dequantize_at_load=True).unwrap()
    reference = dict(dense.named_modules())
    layers = [(n, m) for n, m in loaded.model.named_modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 14
    for name, module in layers:
        weight = module.dequantize(torch.bfloat16)
        assert weight.view(torch.int16).equal(reference[name].weight.to(torch.bfloat16).view(torch.int16)), name


def test_modelopt_kept_packed_matches_modelopt_formula(modelopt: tuple[Path, torch.nn.Module, Any]) -> None:
    """On torch-packed the ModelOpt checkpoint's float32 logits equal those of the dense model holding
    ModelOpt's published dequantization."""
    out, reference, _ = modelopt
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert loaded.plan.layout == ModeloptNvfp4Blocks()
    assert "ModelOpt NVFP4" in loaded.plan.explain()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 14 and all(m.weight.dtype == torch.uint8 for m in packed)
    assert isinstance(loaded.model.get_submodule("lm_head"), torch.nn.Linear)
    assert torch.equal(_logits(loaded.model), _logits(reference))


def test_modelopt_matches_compressed_tensors_where_the_formats_coincide(modelopt: tuple[Path, torch.nn.Module, Any]) -> None:
    """compressed-tensors' ModelOpt converter (``g = 1 / weight_scale_2``) and NVFP4 decompressor give,
    for every layer, the weights the ModelOpt layout dequantizes at load, bit for bit in bfloat16."""
    with quiet():
        converters: Any = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4")
        nvfp4: Any = pytest.importorskip("compressed_tensors.compressors.nvfp4")
        quantization: Any = pytest.importorskip("compressed_tensors.quantization")
    out, _, layers = modelopt
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend="torch-packed", dequantize_at_load=True).unwrap()
    scheme = quantization.preset_name_to_scheme("NVFP4", ["Linear"])
    for name, stored in layers.items():
        converted = converters.ModelOptNvfp4Converter(targets=["Linear"]).process({f"{name}.{k}": v.clone() for k, v in stored.items()})
        local = {k.rpartition(".")[2]: v for k, v in converted.items()}
        with quiet():
            expected = nvfp4.NVFP4PackedCompressor.decompress(local, scheme)["weight"]
        module = loaded.model.get_submodule(name)
        assert isinstance(module, PackedLinear)
        got = module.dequantize(torch.bfloat16)
        assert got.view(torch.int16).equal(expected.to(torch.bfloat16).view(torch.int16)), name


def test_modelopt_kv_cache_scales_are_accepted_and_not_read(tmp_path: Path) -> None:
    """With an FP8 KV cache, k_proj/v_proj also store k_scale/v_scale: the load accepts them, keeps the
    cache in the compute dtype and says so; the same tensors without kv_cache_quant_algo are unexpected."""
    from safetensors import safe_open

    out = tmp_path / "kv"
    reference, _ = write_modelopt(out, kv_cache=True)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {"model.layers.0.self_attn.k_proj.k_scale", "model.layers.1.self_attn.v_proj.v_scale"} <= set(f.keys())
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert loaded.plan.layout == ModeloptNvfp4Blocks(kv_cache=True)
    assert any("KV cache" in n for n in loaded.plan.notes)
    assert torch.equal(_logits(loaded.model), _logits(reference))
    hf_quant = json.loads((out / "hf_quant_config.json").read_text())
    hf_quant["quantization"]["kv_cache_quant_algo"] = None
    (out / "hf_quant_config.json").write_text(json.dumps(hf_quant))
    found = qd.load(out, device="cpu", dtype="float32", backend="torch-packed")
    assert isinstance(found, qd.Err) and {i.code for i in found.error} == {"load.tensor.unexpected"}
