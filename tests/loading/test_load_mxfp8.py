"""MXFP8 (``quant_method: "mxfp8"``): E4M3 weights with one E8M0 byte per ``[1, 32]`` block, kept
packed. The checkpoint is made by Transformers' own FP8 quantizer (``Fp8Quantize`` with UE8M0
scales over ``[1, 32]`` blocks, the scales then stored as bytes as MXFP8 checkpoints ship them),
and the oracle weights are Transformers' ``Fp8Dequantize`` of those bytes, the path it loads MXFP8
with."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

import quantdispatch as qd
from quantdispatch.kernels.fp8_native import Fp8Linear, native_fp8
from quantdispatch.kernels.modules import PackedLinear
from quantdispatch.layouts import Fp8ScaleInv, Unpackable, layout_of
from quantdispatch.result import Err

from .test_load_fp8 import Quantize, _write

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(8))
E4M3 = torch.float8_e4m3fn
PROJECTIONS = 14
MXFP8_CONFIG = {"quant_method": "mxfp8", "activation_scheme": "dynamic", "weight_block_size": [1, 32], "scale_fmt": "ue8m0"}
DOWN = "model.layers.1.mlp.down_proj"


def mx_quantizer() -> Quantize:
    """Transformers' ``Fp8Quantize`` over ``[1, 32]`` blocks with UE8M0 scales; the scales stored as
    bytes, the reference weight ``Fp8Dequantize`` of those bytes."""
    from transformers import FineGrainedFP8Config
    from transformers.integrations import finegrained_fp8 as fp8

    config = FineGrainedFP8Config(weight_block_size=(1, 32), scale_fmt="ue8m0")
    quantizer = type("Quantizer", (), {"quantization_config": config})()

    def quantize(module: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with warnings.catch_warnings(action="ignore"):
            made = fp8.Fp8Quantize(quantizer)._quantize_one(f"{module}.weight", w)
        q, s = made[f"{module}.weight"], made[f"{module}.weight_scale_inv"]
        assert q.dtype == E4M3 and s.dtype == torch.float8_e8m0fnu
        stored = s.view(torch.uint8)
        dense = fp8.Fp8Dequantize(quantizer)._dequantize_one(q, stored, output_dtype=torch.float32)
        return {"weight": q, "weight_scale_inv": stored}, dense

    return quantize


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LlamaForCausalLM]:
    out = tmp_path_factory.mktemp("mxfp8") / "ckpt"
    return out, _write(out, mx_quantizer(), MXFP8_CONFIG, seed=4)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


def test_the_layout_declares_the_bytes_transformers_writes(written: tuple[Path, LlamaForCausalLM]) -> None:
    out, _ = written
    config = qd.read_config(out).unwrap()
    assert isinstance(config, qd.Mxfp8)
    layout = layout_of(config)
    assert isinstance(layout, Fp8ScaleInv) and layout.block == (1, 32) and layout.exponent_scales
    declared = layout.tensors(256, 128, bias=False)  # down_proj: in 256, out 128
    assert not isinstance(declared, Unpackable)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        for name, decl in declared.items():
            part = f.get_slice(f"{DOWN}.{name}")
            assert tuple(part.get_shape()) == decl.shape
            assert part.get_dtype() == ("F8_E4M3" if name == "weight" else "U8")


def test_dequantized_at_load_weights_are_transformers_bit_for_bit(written: tuple[Path, LlamaForCausalLM]) -> None:
    out, dense = written
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed", dequantize_at_load=True).unwrap()
    _logits(loaded.model)
    layers = [(n, m) for n, m in loaded.model.named_modules() if isinstance(m, PackedLinear)]
    assert len(layers) == PROJECTIONS
    for name, module in layers:
        reference = dense.get_submodule(name)
        assert isinstance(reference, torch.nn.Linear)
        assert module._dense is not None and torch.equal(module._dense, reference.weight.data), name


@pytest.mark.parametrize("backend", ["torch-packed", None])
def test_kept_packed_logits_equal_the_reference_model(written: tuple[Path, LlamaForCausalLM], backend: str | None) -> None:
    """Kept as bytes (the portable module, and the plan's choice: the native FP8 kernel where it builds)."""
    out, dense = written
    loaded = qd.load(out, device="cpu", dtype="float32", backend=backend).unwrap()
    if backend is None and native_fp8() is not None:
        assert loaded.plan.backend.name == "cpu-e4m3"
        assert len([m for m in loaded.model.modules() if isinstance(m, Fp8Linear)]) == PROJECTIONS
    got, want = _logits(loaded.model), _logits(dense)
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()
    assert "MXFP8 (OCP MX, E8M0 scales) FP8 E4M3 weights kept as stored, one weight_scale_inv per block of 1x32" in loaded.plan.explain()


def _poke(value: int) -> Any:
    def poked(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[3, 1] = value
        return t
    return poked


BAD = [
    ("weight_scale_inv", _poke(255), "load.tensor.not_finite"),  # E8M0's NaN
    ("weight_scale_inv", lambda t: (t.float() - 127).exp2(), "load.tensor.dtype"),  # float scales where bytes are declared
    ("weight_scale_inv", lambda t: t[:, :-1], "load.tensor.shape"),  # a scale grid that does not tile the weight
    ("weight", lambda t: t.to(torch.float8_e5m2), "load.tensor.dtype"),
]


@pytest.mark.parametrize(("tensor", "change", "code"), BAD, ids=[f"{t}-{c}" for t, _, c in BAD])
@pytest.mark.parametrize("backend", ["torch-packed", None])
def test_a_corrupt_checkpoint_is_a_coded_issue(written: tuple[Path, LlamaForCausalLM], tmp_path: Path, tensor: str, change: Any,
                                               code: str, backend: str | None) -> None:
    source, _ = written
    out = tmp_path / "broken"
    shutil.copytree(source, out)
    tensors = load_file(str(out / "model.safetensors"))
    tensors[f"{DOWN}.{tensor}"] = change(tensors[f"{DOWN}.{tensor}"]).contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    result = qd.load(out, device="cpu", dtype="float32", backend=backend)
    assert isinstance(result, Err)
    assert [i.code for i in result.error] == [code] and f"{DOWN}.{tensor}" in result.error[0].message
