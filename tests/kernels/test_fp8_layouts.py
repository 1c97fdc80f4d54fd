"""The FP8 layouts' dequantization against the tools' own, on random weights and scales, and their
declarations, rules and plans (real configs from the shared corpus included).

References: Transformers' ``_dequantize_fp8_weight`` (the function its ``FP8Linear`` backward and
its checkpoint conversion share, the one that applies partial edge blocks) and
``Fp8Dequantize._dequantize_one`` (its ``dequantize=True`` load path, whole blocks only);
compressed-tensors' ``dequantize`` (what its ``decompress`` calls per layer).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Final

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantdispatch as qd
from quantdispatch.configs.compressed_tensors import CompressedTensors
from quantdispatch.layouts import Fp8Scaled, Fp8ScaleInv, Unpackable, layout_of
from quantdispatch.layouts.fp8 import ct_fp8_layout

torch.set_num_threads(1)
CORPUS: Final = Path(__file__).resolve().parents[3] / "shared" / "realworld" / "configs"
FLOATS: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _e4m3(n: int, k: int, seed: int) -> torch.Tensor:
    """Every finite e4m3 byte is as likely (0x7f and 0xff are NaN: left out)."""
    raw = torch.randint(0, 254, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.int16)
    raw = torch.where(raw >= 0x7F, raw + 1, raw).to(torch.uint8)
    return raw.view(torch.float8_e4m3fn)


def _scales(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Positive scales over many binades, the size real ones have (about amax / 448)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.exp2(torch.rand(shape, generator=g) * 16 - 20).to(dtype)


def _transformers() -> Any:
    from transformers.integrations import finegrained_fp8

    return finegrained_fp8


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 96), k=st.integers(1, 96), bn=st.integers(1, 40), bk=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_block_scales_dequantize_as_transformers_does(n: int, k: int, bn: int, bk: int, seed: int) -> None:
    """Any weight and block, partial edge blocks included: bit-equal to ``_dequantize_fp8_weight`` in float32."""
    fp8 = _transformers()
    layout = Fp8ScaleInv(granularity="block", block=(bn, bk))
    w, s = _e4m3(n, k, seed), _scales((-(-n // bn), -(-k // bk)), seed)
    mine = layout.dequantize({"weight": w, "weight_scale_inv": s}, torch.float32)
    assert torch.equal(mine, fp8._dequantize_fp8_weight(w, s, [bn, bk], torch.float32))


@settings(max_examples=40, deadline=None)
@given(gn=st.integers(1, 4), gk=st.integers(1, 4), bn=st.integers(1, 32), bk=st.integers(1, 32), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(sorted(FLOATS)))
def test_whole_blocks_dequantize_as_transformers_loads_them(gn: int, gk: int, bn: int, bk: int, seed: int, dtype: str) -> None:
    """Blocks that tile the weight: bit-equal to ``Fp8Dequantize`` (float32 product, one rounding) in every dtype."""
    fp8 = _transformers()
    layout = Fp8ScaleInv(granularity="block", block=(bn, bk))
    w, s = _e4m3(gn * bn, gk * bk, seed), _scales((gn, gk), seed)
    theirs = fp8.Fp8Dequantize(None)._dequantize_one(w, s, output_dtype=FLOATS[dtype])
    assert torch.equal(layout.dequantize({"weight": w, "weight_scale_inv": s}, FLOATS[dtype]), theirs)


def test_one_scale_per_tensor_dequantizes_as_transformers_does() -> None:
    fp8 = _transformers()
    w, s = _e4m3(24, 40, 1), torch.tensor(0.00317)
    mine = Fp8ScaleInv(granularity="tensor").dequantize({"weight": w, "weight_scale_inv": s}, torch.float32)
    assert torch.equal(mine, fp8._dequantize_fp8_weight(w, s, None, torch.float32))


def _ct() -> Any:
    with warnings.catch_warnings(action="ignore"):
        quantization: Any = pytest.importorskip("compressed_tensors.quantization")
        forward: Any = pytest.importorskip("compressed_tensors.quantization.lifecycle.forward")
    return quantization, forward


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), k=st.integers(1, 80), strategy=st.sampled_from(["tensor", "channel", "block"]), bn=st.integers(1, 32),
       bk=st.integers(1, 32), seed=st.integers(0, 2**16), scale_dtype=st.sampled_from(sorted(FLOATS)), dtype=st.sampled_from(sorted(FLOATS)))
def test_ct_float_weights_dequantize_as_compressed_tensors_does(n: int, k: int, strategy: str, bn: int, bk: int, seed: int, scale_dtype: str,
                                                                dtype: str) -> None:
    """compressed-tensors computes in the scale's dtype; the layout's weight, cast to it, is bit-equal in every pair of dtypes."""
    quantization, forward = _ct()
    block = (bn, bk) if strategy == "block" else None
    args = quantization.QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy=strategy, block_structure=list(block) if block else None)
    layout = Fp8Scaled(granularity=strategy, block=block, scale_rounding=True, scalar_shape=(1,))  # type: ignore[arg-type]
    shape = layout.scale_shape(k, n)
    assert not isinstance(shape, Unpackable)
    w, s = _e4m3(n, k, seed), _scales(shape, seed, FLOATS[scale_dtype])
    theirs = forward.dequantize(w, s, args=args)
    assert theirs.dtype == s.dtype
    assert torch.equal(layout.dequantize({"weight": w, "weight_scale": s}, FLOATS[dtype]), theirs.to(FLOATS[dtype]))


def test_shapes_and_declarations() -> None:
    """The scale grid is a ceil grid; weights are declared e4m3 only; scales must be finite and not negative."""
    layout = Fp8ScaleInv(granularity="block", block=(128, 128))
    declared = layout.tensors(7168, 576, bias=True)
    assert not isinstance(declared, Unpackable)
    assert {n: (d.shape, d.dtype, d.accepted) for n, d in declared.items()} == {
        "weight": ((576, 7168), "F8_E4M3", ()), "weight_scale_inv": ((5, 56), "F32", ("F16", "BF16", "F32", "F8_E8M0")),
        "bias": ((576,), "F16", ("F16", "BF16", "F32"))}
    assert layout.finite() == {"weight", "weight_scale_inv"} and layout.signs() == {"weight_scale_inv": "nonnegative"}
    modelopt = layout_of(qd.ModeloptFp8())
    assert isinstance(modelopt, Fp8Scaled)
    declared = modelopt.tensors(64, 32, False)
    assert not isinstance(declared, Unpackable)
    assert {n: d.shape for n, d in declared.items()} == {"weight": (32, 64), "weight_scale": (), "input_scale": ()}
    assert layout_of(qd.FbgemmFp8()) == Fp8Scaled(granularity="channel", producer="FBGEMM")
    assert layout_of(qd.Fp8(weight_block_size=None)) == Fp8ScaleInv(granularity="tensor", producer="Transformers fine-grained")
    assert layout_of(qd.Mxfp8()) == Fp8ScaleInv(granularity="block", block=(1, 32), exponent_scales=True, producer="MXFP8 (OCP MX, E8M0 scales)")


@pytest.mark.parametrize(("layout", "k", "n", "code"), [
    (Fp8ScaleInv(granularity="block", block=(0, 128)), 256, 256, "fp8.block.invalid"),
    (Fp8ScaleInv(granularity="block", block=None), 256, 256, "fp8.block.invalid"),
    (Fp8Scaled(granularity="channel"), 0, 16, "fp8.shape.empty"),
])
def test_a_shape_the_layout_cannot_hold_is_a_coded_reason(layout: Fp8Scaled | Fp8ScaleInv, k: int, n: int, code: str) -> None:
    found = layout.tensors(k, n, False)
    assert isinstance(found, Unpackable) and found.code == code


def _ct_config(weights: dict[str, Any], inputs: dict[str, Any] | None = None, fmt: str = "float-quantized") -> CompressedTensors:
    group: dict[str, Any] = {"targets": ["Linear"], "weights": weights}
    if inputs is not None:
        group["input_activations"] = inputs
    parsed = qd.parse({"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed", "config_groups": {"group_0": group}})
    config = parsed.unwrap()
    assert isinstance(config, CompressedTensors)
    return config


def test_ct_fp8_layout_reads_the_schemes() -> None:
    """Tensor, channel and block strategies; a static tensor activation scheme adds the unused input_scale; the rest has no layout."""
    fp8 = {"num_bits": 8, "type": "float"}
    static = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False}
    dynamic = {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}
    assert ct_fp8_layout(_ct_config(fp8)) == Fp8Scaled(granularity="tensor", scalar_shape=(1,), scale_rounding=True,
                                                       producer="compressed-tensors float-quantized")
    found = ct_fp8_layout(_ct_config({**fp8, "strategy": "block", "block_structure": [128, 64]}, static))
    assert found is not None and found.block == (128, 64) and found.activation_scales == ("input_scale",)
    found = ct_fp8_layout(_ct_config({**fp8, "strategy": "channel"}, dynamic))
    assert found is not None and found.granularity == "channel" and found.activation_scales == ()
    assert ct_fp8_layout(_ct_config({**fp8, "strategy": "channel"}, fmt="naive-quantized")) is not None
    assert ct_fp8_layout(_ct_config({**fp8, "strategy": "group", "group_size": 128})) is None
    assert ct_fp8_layout(_ct_config({**fp8, "symmetric": False})) is None
    assert ct_fp8_layout(_ct_config({"num_bits": 4, "type": "float", "strategy": "channel"})) is None
    assert ct_fp8_layout(_ct_config({**fp8, "strategy": "channel"}, fmt="pack-quantized")) is None
    assert layout_of(_ct_config(fp8)) is not None


CPU_ENV = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),), devices=(qd.Cpu(),))


def _corpus() -> list[str]:
    if not CORPUS.is_dir():
        return []
    fp8 = [f"fp8/{p.name}" for p in sorted((CORPUS / "fp8").glob("*.json"))]
    modelopt = [f"modelopt/{p.name}" for p in sorted((CORPUS / "modelopt").glob("*fp8*.json"))]
    ct = [f"compressed-tensors/{p.name}" for p in sorted((CORPUS / "compressed-tensors").glob("*fp8*.json"))]
    return fp8 + modelopt + ct


@pytest.mark.parametrize("rel", _corpus() or ["none"])
def test_real_fp8_configs_plan_kept_packed_on_a_cpu(rel: str, tmp_path: Path) -> None:
    """Every real FP8 config of the shared corpus (Transformers fp8, ModelOpt FP8, compressed-tensors FP8)
    has a layout and plans, executable, on a CPU: the native kernel first, torch-packed (the portable
    module, which also takes every layer the native kernel cannot) next; the plan names the layout."""
    if rel == "none":
        pytest.skip(f"the shared real-world corpus is not at {CORPUS}")
    block = json.loads((CORPUS / rel).read_text(encoding="utf-8"))
    if rel.endswith("hf_quant_config.json"):
        path = tmp_path / "hf_quant_config.json"
        path.write_text(json.dumps(block))
    else:
        key = "compression_config" if "compression_config" in rel else "quantization_config"
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"model_type": "test", key: block}))
    config = qd.read_config(path).unwrap()
    assert config is not None and isinstance(layout_of(config), (Fp8Scaled, Fp8ScaleInv)), config
    planned = qd.plan(config, CPU_ENV, qd.LoadOptions(device="cpu", executable=True)).unwrap()
    assert planned.backend.name == "cpu-e4m3" and "torch-packed" in {r.backend for r in planned.rejected}
    assert "FP8 E4M3 weights kept as stored" in planned.explain()


def test_gpus_keep_their_native_fp8_kernels_first() -> None:
    """The portable kernel comes after each method's own FP8 paths on a GPU (and is offered there)."""
    from quantdispatch.rules import select_backend

    for config, first in [(qd.Fp8(), "transformers-fp8"), (qd.FbgemmFp8(), "fbgemm-fp8"), (qd.ModeloptFp8(), "modelopt-fp8"),
                          (_ct_config({"num_bits": 8, "type": "float"}), "compressed-tensors-fp8")]:
        selection = select_backend(config, qd.Cuda(capability=(9, 0)))
        assert not isinstance(selection, qd.Refusal)
        names = [c.backend.name for c in selection]
        assert names[0] == first and "torch-packed" in names, names


def test_a_full_precision_checkpoint_is_not_loaded_as_if_quantized() -> None:
    """The layout's kernels read stored FP8 weights; with a user's FP8 config for a checkpoint that
    is not quantized, none of them is usable (they quantize nothing while loading), so no plan
    would return the full-precision weights as they are."""
    options = qd.LoadOptions(device="cpu", user_config=qd.Fp8(), executable=True)
    planned = qd.plan(None, CPU_ENV, options)
    assert isinstance(planned, qd.Err) and [i.code for i in planned.error] == ["plan.no_usable_backend"]
    assert "quantizes nothing while loading" in planned.error[0].message
    assert qd.plan(qd.Fp8(), CPU_ENV, qd.LoadOptions(device="cpu", executable=True)).unwrap().backend.name == "cpu-e4m3"
