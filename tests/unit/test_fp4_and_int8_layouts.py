"""The NVFP4 and int8 layouts against compressed-tensors' own functions, value by value.

Oracles: compressed-tensors 0.20.1's ``unpack_fp4_from_uint8`` / ``pack_fp4_to_uint8`` (E2M1 codes
and nibble order), ``NVFP4PackedCompressor.decompress`` (NVFP4 weights) and ``dequantize`` with
its ``QuantizationArgs`` (int8 weights); ModelOpt's published ``NVFP4QTensor.dequantize``
(``nvfp4_ckpt.modelopt_reference``). Hypothesis draws the stored bytes, so every E4M3 scale and
E2M1 code is reachable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("compressed_tensors")

import quantdispatch as qd
from quantdispatch.kernel import kernel_candidates
from quantdispatch.layouts import CtIntQuantized, CtNvfp4, ModeloptNvfp4Blocks, Unpackable, layout_of
from quantdispatch.layouts.fp4 import E2M1, e2m1_unpack
from tests.loading.ct_ckpt import quiet
from tests.loading.nvfp4_ckpt import E2M1_REFERENCE, modelopt_reference

torch.set_num_threads(1)
REALWORLD = Path("/work/shared/realworld/configs")


def _helpers() -> Any:
    with quiet():
        return pytest.importorskip("compressed_tensors.compressors.nvfp4.helpers")


def test_every_byte_unpacks_to_the_two_reference_values() -> None:
    """Each of the 256 bytes gives (low nibble, high nibble) as compressed-tensors' unpacker does,
    and as ModelOpt's table says (sign bit 3, magnitude index bits 2..0)."""
    every = torch.arange(256, dtype=torch.uint8).view(256, 1)
    ours = e2m1_unpack(every)
    theirs = _helpers().unpack_fp4_from_uint8(every, 256, 2, dtype=torch.float32)
    assert torch.equal(ours, theirs)
    for byte in range(256):
        low, high = byte & 0xF, byte >> 4
        expected = [(-1.0 if c & 8 else 1.0) * E2M1_REFERENCE[c & 7] for c in (low, high)]
        assert ours[byte].tolist() == expected
    assert [abs(v) for v in E2M1[:8]] == list(E2M1_REFERENCE) and E2M1[8:] == tuple(-v for v in E2M1_REFERENCE)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda c: len(c) % 2 == 0))
def test_compressed_tensors_packing_unpacks_to_its_values(codes: list[int]) -> None:
    """Values packed by compressed-tensors' ``pack_fp4_to_uint8`` come back in order (first value: low nibble)."""
    values = torch.tensor([E2M1[c] for c in codes], dtype=torch.float32).view(1, -1)
    packed = _helpers().pack_fp4_to_uint8(values)
    assert torch.equal(e2m1_unpack(packed), values)


_E4M3_FINITE = st.integers(0, 255).filter(lambda b: b & 0x7F != 0x7F)  # 0x7F / 0xFF are NaN


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_ct_nvfp4_dequantization_is_compressed_tensors_bit_for_bit(rows: int, blocks: int, data: st.DataObject) -> None:
    """For any stored bytes, E4M3 scales and positive global scale, the layout's bfloat16 weight is the decompressor's."""
    with quiet():
        nvfp4: Any = pytest.importorskip("compressed_tensors.compressors.nvfp4")
        quantization: Any = pytest.importorskip("compressed_tensors.quantization")
    k = 16 * blocks
    packed = torch.tensor(data.draw(st.lists(st.integers(0, 255), min_size=rows * k // 2, max_size=rows * k // 2)),
                          dtype=torch.uint8).view(rows, k // 2)
    scale = torch.tensor(data.draw(st.lists(_E4M3_FINITE, min_size=rows * blocks, max_size=rows * blocks)),
                         dtype=torch.uint8).view(torch.float8_e4m3fn).view(rows, blocks)
    g = torch.tensor([data.draw(st.floats(2.0**-10, 2.0**14, width=32))], dtype=torch.float32)
    tensors = {"weight_packed": packed, "weight_scale": scale, "weight_global_scale": g}
    scheme = quantization.preset_name_to_scheme("NVFP4A16", ["Linear"])
    with quiet():
        expected = nvfp4.NVFP4PackedCompressor.decompress(dict(tensors), scheme)["weight"]
    got = CtNvfp4().dequantize(tensors, torch.bfloat16)
    assert got.view(torch.int16).equal(expected.view(torch.int16))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_modelopt_dequantization_is_the_published_formula(rows: int, blocks: int, data: st.DataObject) -> None:
    """For any stored bytes and scales, the ModelOpt layout's float32 weight is ``e2m1 * (scale * scale_2)``."""
    k = 16 * blocks
    packed = torch.tensor(data.draw(st.lists(st.integers(0, 255), min_size=rows * k // 2, max_size=rows * k // 2)),
                          dtype=torch.uint8).view(rows, k // 2)
    scale = torch.tensor(data.draw(st.lists(_E4M3_FINITE, min_size=rows * blocks, max_size=rows * blocks)),
                         dtype=torch.uint8).view(torch.float8_e4m3fn).view(rows, blocks)
    s2 = torch.tensor(data.draw(st.floats(2.0**-20, 2.0**7, width=32)), dtype=torch.float32)
    tensors = {"weight": packed, "weight_scale": scale, "weight_scale_2": s2}
    assert torch.equal(ModeloptNvfp4Blocks().dequantize(tensors, torch.float32), modelopt_reference(tensors))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["tensor", "channel", "group"]), st.booleans(), st.integers(1, 4), st.integers(1, 3), st.data())
def test_int8_dequantization_is_compressed_tensors(strategy: str, symmetric: bool, rows: int, groups: int, data: st.DataObject) -> None:
    """For any int8 codes, scales and zero points, the layout's float32 weight is compressed-tensors' ``dequantize``."""
    with quiet():
        quantization: Any = pytest.importorskip("compressed_tensors.quantization")
        forward: Any = pytest.importorskip("compressed_tensors.quantization.lifecycle.forward")
    size = 16
    k = size * groups
    args = quantization.QuantizationArgs(num_bits=8, type="int", symmetric=symmetric, strategy=strategy,
                                         group_size=size if strategy == "group" else None)
    layout = CtIntQuantized(bits=8, group_size=size if strategy == "group" else -1, strategy=strategy,  # type: ignore[arg-type]
                            symmetric=symmetric)
    declared = layout.tensors(k, rows, bias=False)
    assert not isinstance(declared, Unpackable)
    shape = declared["weight_scale"].shape
    count = int(torch.Size(shape).numel())
    codes = torch.tensor(data.draw(st.lists(st.integers(-128, 127), min_size=rows * k, max_size=rows * k)), dtype=torch.int8).view(rows, k)
    scale = torch.tensor(data.draw(st.lists(st.floats(2.0**-13, 8.0, width=32), min_size=count, max_size=count)),
                         dtype=torch.float32).view(shape)
    tensors = {"weight": codes, "weight_scale": scale}
    if not symmetric:
        tensors["weight_zero_point"] = torch.tensor(data.draw(st.lists(st.integers(-128, 127), min_size=count, max_size=count)),
                                                    dtype=torch.int8).view(shape)
    expected = forward.dequantize(codes, scale, tensors.get("weight_zero_point"), args)
    assert torch.equal(layout.dequantize(tensors, torch.float32), expected)


@pytest.mark.parametrize(("layout", "k", "n", "code"), [
    (CtNvfp4(), 24, 16, "nvfp4.shape.not_blocks"),
    (ModeloptNvfp4Blocks(), 8, 16, "nvfp4.shape.not_blocks"),
    (CtIntQuantized(bits=8, group_size=32, strategy="group", symmetric=True), 48, 16, "compressed-tensors.shape.not_packable"),
])
def test_a_shape_the_layout_cannot_hold_is_a_coded_reason(layout: Any, k: int, n: int, code: str) -> None:
    """K not a whole number of blocks (16 for NVFP4) or groups: an Unpackable with a stable code."""
    found = layout.tensors(k, n, False)
    assert isinstance(found, Unpackable) and found.code == code


def _ct(fmt: str, weights: dict[str, Any], inputs: dict[str, Any] | None = None) -> Any:
    group: dict[str, Any] = {"targets": ["Linear"], "weights": weights}
    if inputs is not None:
        group["input_activations"] = inputs
    return qd.parse({"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
                     "config_groups": {"group_0": group}}).unwrap()


def test_layout_of_reads_the_schemes() -> None:
    """The format and the one shared scheme decide the layout; what is not loaded here has none."""
    int8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    token = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
    assert layout_of(_ct("int-quantized", int8, token)) == CtIntQuantized(bits=8, group_size=-1, strategy="channel", symmetric=True,
                                                                          activations="dynamic")
    assert layout_of(_ct("int-quantized", {**int8, "num_bits": 4})) is None
    assert layout_of(_ct("int-quantized", int8, {"num_bits": 8, "type": "float", "strategy": "tensor"})) is None  # FP8 activations
    assert layout_of(_ct("naive-quantized", {**int8, "strategy": "group", "group_size": 64})) == CtIntQuantized(
        bits=8, group_size=64, strategy="group", symmetric=True)
    fp4 = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": False}
    assert layout_of(_ct("nvfp4-pack-quantized", fp4)) == CtNvfp4()
    assert layout_of(_ct("nvfp4-pack-quantized", {**fp4, "group_size": 32})) is None
    assert layout_of(_ct("nvfp4-pack-quantized", {**fp4, "scale_dtype": "torch.uint8"})) is None
    assert layout_of(qd.ModeloptNvfp4(group_size=16)) == ModeloptNvfp4Blocks()
    assert layout_of(qd.ModeloptNvfp4(group_size=32)) is None


def _cpu_env() -> qd.Environment:
    return qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),), devices=(qd.Cpu(),))


def test_a_w8a8_plan_says_activations_stay_float() -> None:
    """W8A8 plans to a kernel computing float activations, and the plan says so; W8A16 has no such note."""
    int8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    token = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
    for backend in ("cpu-dense", "torch-packed"):
        p = qd.plan(_ct("int-quantized", int8, token), _cpu_env(), qd.LoadOptions(device="cpu", backend=backend)).unwrap()
        assert any("activations to int8" in n and "floating point" in n for n in p.notes)
        assert "layout:   compressed-tensors int-quantized 8-bit" in p.explain()
    p = qd.plan(_ct("int-quantized", int8), _cpu_env(), qd.LoadOptions(device="cpu")).unwrap()
    assert p.backend.name == "cpu-dense" and not any("activations" in n for n in p.notes)


REAL = [("modelopt", "qwen3-32b-nvfp4-hf_quant_config.json"), ("modelopt", "deepseek-v3-0324-nvfp4-kv-null-hf_quant_config.json"),
        ("modelopt", "glm-5.1-nvfp4-config-qc-quant_method-modelopt.json"),
        ("modelopt", "deepseek-v4-flash-nvfp4-mixed-precision-hf_quant_config.json"),
        ("compressed-tensors", "ct-example-int8-naive-quantized.json")]


@pytest.mark.parametrize(("folder", "name"), REAL)
def test_real_configs_plan_to_the_portable_kernel_on_a_cpu(folder: str, name: str) -> None:
    """Real ModelOpt NVFP4 and compressed-tensors int8 configs have a layout, shown by explain, and torch-packed loads them on a CPU."""
    path = REALWORLD / folder / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    raw = json.loads(path.read_text())
    config = qd.parse(raw.get("quantization_config", raw)).unwrap()
    layout = layout_of(config)
    assert layout is not None
    p = qd.plan(config, _cpu_env(), qd.LoadOptions(device="cpu", executable=True)).unwrap()
    assert f"layout:   {layout.describe()}" in p.explain()
    served = [c.backend.name for c in kernel_candidates(layout, qd.Cpu())]
    fitting = [c.backend.name for c in kernel_candidates(layout, qd.Cpu()) if not c.unfit]  # cpu-int8 needs native bf16
    assert served[-1] == "torch-packed" and p.backend.name == fitting[0]
    forced = qd.plan(config, _cpu_env(), qd.LoadOptions(device="cpu", executable=True, backend="torch-packed")).unwrap()
    assert forced.backend.name == "torch-packed"
