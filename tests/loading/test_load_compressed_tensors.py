"""compressed-tensors ``pack-quantized`` W4A16 loads packed, from checkpoints compressed-tensors
itself writes, on the portable module and on the CPU int4 kernels.

Each checkpoint is a tiny random Llama whose linear layers carry a ``QuantizationConfig``
(int4, symmetric or asymmetric, ``group`` or ``channel``), with scales from compressed-tensors'
``calculate_qparams``, compressed by its ``ModelCompressor`` (``PackedQuantizationCompressor``)
and saved with its ``update_config``. The oracle is a dense Llama holding compressed-tensors' own
``decompress_model`` weights. The portable module computes the same float32 weights, so its
logits are equal; the int4 kernels round differently (torch's in bfloat16, the native one sums
in another order) and are held to a twentieth of the quantization error.

Transformers 5.24 with compressed-tensors 0.20.1 cannot load the asymmetric checkpoints packed
(the zero points are left unpacked on the meta device and every ``weight_zero_point`` mismatches
in size; only ``dequantize=True`` works, at dense size). Ours must, and these tests load them packed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("compressed_tensors")

import quantdispatch as qd
from quantdispatch.kernels.int4 import Int4Linear
from quantdispatch.kernels.int4_native import Q4Linear, native_int4
from quantdispatch.kernels.modules import PackedLinear
from quantdispatch.layouts import CtPackQuantized, Unpackable, layout_of
from tests.cpu import needs_avx2_fma, needs_vector_int4

from .ckpt import base_model
from .ct_ckpt import ct, write_with_compressed_tensors

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(11))
CASES = [(False, "group"), (True, "group"), (False, "channel"), (True, "channel")]


def _write(out: Path, symmetric: bool, strategy: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A checkpoint compressed by compressed-tensors, the dense model of its decompressed weights, and the unquantized model."""
    quantization, utils = ct("quantization"), ct("quantization.utils")
    from transformers import LlamaForCausalLM

    model = base_model(seed=7)
    full = LlamaForCausalLM(model.config).eval()
    full.load_state_dict(model.state_dict())
    args = quantization.QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy=strategy,
                                         group_size=32 if strategy == "group" else None)

    def calibrate(module: Any, w: torch.Tensor) -> None:
        n, k = w.shape
        groups = w.view(n, k // 32, 32) if strategy == "group" else w.view(n, 1, k)
        s, z = utils.calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        module.weight_scale.data.copy_(s)
        zero: Any = getattr(module, "weight_zero_point", None)
        if zero is not None:
            zero.data.copy_(z)

    scheme = quantization.QuantizationScheme(targets=["Linear"], weights=args)
    kept = write_with_compressed_tensors(out, model, scheme, "pack-quantized", calibrate, ("weight_scale", "weight_zero", "weight_shape"))
    dense = LlamaForCausalLM(model.config).eval()
    dense.load_state_dict(kept)
    return dense, full


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[bool, str], tuple[Path, torch.nn.Module, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("ct")
    found = {}
    for symmetric, strategy in CASES:
        out = root / f"{'sym' if symmetric else 'asym'}-{strategy}"
        dense, full = _write(out, symmetric, strategy)
        found[symmetric, strategy] = (out, dense, full)
    return found


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


@pytest.mark.parametrize(("symmetric", "strategy"), CASES)
def test_the_checkpoint_is_what_compressed_tensors_writes(written: dict[tuple[bool, str], Any], symmetric: bool, strategy: str) -> None:
    """The config parses to the pack-quantized layout; the tensors are the ones the layout declares."""
    out, _, _ = written[symmetric, strategy]
    raw = json.loads((out / "config.json").read_text())["quantization_config"]
    config = qd.parse(raw).unwrap()
    layout = layout_of(config)
    assert layout == CtPackQuantized(bits=4, group_size=32 if strategy == "group" else -1, symmetric=symmetric)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        prefix = "model.layers.0.mlp.down_proj."
        stored = {n[len(prefix):]: tuple(f.get_slice(n).get_shape()) for n in f.keys() if n.startswith(prefix)}
    declared = layout.tensors(256, 128, bias=False)
    assert not isinstance(declared, Unpackable) and stored == {n: d.shape for n, d in declared.items()}


@pytest.mark.parametrize(("symmetric", "strategy"), CASES)
def test_the_portable_module_matches_compressed_tensors_decompression(written: dict[tuple[bool, str], Any], symmetric: bool,
                                                                      strategy: str) -> None:
    """torch-packed keeps the layers packed and its float32 logits equal those of compressed-tensors' decompressed weights."""
    out, dense, _ = written[symmetric, strategy]
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 14 and all(m.weight_packed.dtype == torch.int32 for m in packed)
    assert loaded.plan.layout is not None and "compressed-tensors pack-quantized 4-bit" in loaded.plan.explain()
    assert torch.equal(_logits(loaded.model), _logits(dense))


@pytest.mark.parametrize(("symmetric", "strategy"), CASES)
@pytest.mark.parametrize(("backend", "module"), [pytest.param("cpu-int4", Int4Linear, marks=needs_vector_int4),
                                                  pytest.param("cpu-q4", Q4Linear, marks=needs_avx2_fma)])
def test_the_int4_kernels_load_it(written: dict[tuple[bool, str], Any], symmetric: bool, strategy: str, backend: str, module: type) -> None:
    """cpu-int4 and cpu-q4 take every layer, with no change to the loader or the kernels; logits within a twentieth of the quantization error."""
    if backend == "cpu-q4" and native_int4() is None:
        module = Int4Linear  # no compiler: the native kernel's loader falls back to torch's
    out, dense, full = written[symmetric, strategy]
    loaded = qd.load(out, device="cpu", dtype="float32", backend=backend).unwrap()
    assert sum(isinstance(m, module) for m in loaded.model.modules()) == 14
    reference, exact = _logits(dense), _logits(full)
    quantization_error = (reference - exact).abs().max().item()
    assert (_logits(loaded.model) - reference).abs().max().item() <= 0.05 * quantization_error


def test_the_plan_offers_the_kernels_from_the_layout_alone() -> None:
    """No compressed-tensors rule names a CPU kernel: the layout makes the planner offer them, best first."""
    raw = {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
           "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": False,
                                                                           "strategy": "group", "group_size": 128}}}}
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),),
                         devices=(qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True)),))
    p = qd.plan(qd.parse(raw).unwrap(), env, qd.LoadOptions(device="cpu", executable=True)).unwrap()
    assert p.backend.name == "cpu-q4-q8dot" and [r.backend for r in p.rejected][:3] == ["cpu-q4", "cpu-int4", "torch-packed"]
    fp8 = {**raw, "format": "float-quantized", "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float"}}}}
    assert not isinstance(layout_of(qd.parse(fp8).unwrap()), CtPackQuantized)  # FP8 weights: another layout


def test_a_weight_shape_that_disagrees_with_the_layer_is_an_issue(written: dict[tuple[bool, str], Any], tmp_path: Path) -> None:
    """A stored weight_shape other than the layer's [N, K] is refused with a coded issue naming it, before any forward."""
    import shutil

    from safetensors.torch import load_file, save_file

    out, _, _ = written[True, "group"]
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    tensors = load_file(str(out / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight_shape"
    tensors[name] = torch.tensor([256, 160], dtype=tensors[name].dtype)
    save_file(tensors, str(bad / "model.safetensors"))
    found = qd.load(bad, device="cpu", dtype="float32", backend="torch-packed")
    assert isinstance(found, qd.Err)
    assert [(i.code, i.path) for i in found.error] == [("load.tensor.value", f"$.tensors['{name}']")]
