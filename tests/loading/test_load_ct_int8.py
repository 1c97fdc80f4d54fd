"""compressed-tensors ``int-quantized`` 8-bit checkpoints (W8A16 and W8A8) load kept packed, from
checkpoints compressed-tensors itself writes.

Each checkpoint is a tiny random Llama whose linear layers carry a ``QuantizationConfig`` (int8
weights with ``tensor``, ``channel`` or ``group`` scales, symmetric or not; activations float,
int8 dynamic or int8 static), scales from compressed-tensors' ``calculate_qparams``, compressed by
its ``ModelCompressor`` and saved with its ``update_config``. The oracle is a dense Llama holding
compressed-tensors' own ``decompress_model`` weights: the portable module (per call or dequantized
once) and ``cpu-dense`` hold the same float32 weights, so the logits are equal.
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
from quantdispatch.layouts import CtIntQuantized, Unpackable, layout_of

from .ckpt import base_model
from .ct_ckpt import ct, write_with_compressed_tensors

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(12))

# (format, weight strategy, symmetric weights, activations: None, "dynamic" or "static")
CASES = [
    ("int-quantized", "channel", True, "dynamic"),
    ("int-quantized", "tensor", True, "static"),
    ("int-quantized", "group", False, None),
    ("naive-quantized", "channel", False, "static"),
]
_STRATEGY_GROUP = 32
_KEPT_OUT = ("weight_scale", "weight_zero", "weight_shape", "input_scale", "input_zero")


def _args(strategy: str, symmetric: bool, activations: str | None) -> tuple[Any, Any]:
    quantization = ct("quantization")
    weights = quantization.QuantizationArgs(num_bits=8, type="int", symmetric=symmetric, strategy=strategy,
                                            group_size=_STRATEGY_GROUP if strategy == "group" else None)
    inputs = None
    if activations == "dynamic":
        inputs = quantization.QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    elif activations == "static":
        inputs = quantization.QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False)
    return weights, inputs


def _write(out: Path, fmt: str, strategy: str, symmetric: bool, activations: str | None) -> torch.nn.Module:
    """A checkpoint compressed by compressed-tensors, and the dense model of its decompressed weights."""
    quantization, utils = ct("quantization"), ct("quantization.utils")
    from transformers import LlamaForCausalLM

    model = base_model(seed=5)
    weights, inputs = _args(strategy, symmetric, activations)

    def calibrate(module: Any, w: torch.Tensor) -> None:
        n, k = w.shape
        shaped = {"group": w.view(n, k // _STRATEGY_GROUP, _STRATEGY_GROUP), "channel": w.view(n, 1, k), "tensor": w.view(1, 1, n * k)}
        groups = shaped[strategy]
        s, z = utils.calculate_qparams(groups.amin(-1), groups.amax(-1), weights)
        module.weight_scale.data.copy_(s.reshape(module.weight_scale.shape))
        zero: Any = getattr(module, "weight_zero_point", None)
        if zero is not None:
            zero.data.copy_(z.reshape(zero.shape))
        input_scale: Any = getattr(module, "input_scale", None)
        if input_scale is not None:
            input_scale.data.fill_(0.03)

    scheme = quantization.QuantizationScheme(targets=["Linear"], weights=weights, input_activations=inputs)
    kept = write_with_compressed_tensors(out, model, scheme, fmt, calibrate, _KEPT_OUT)
    dense: torch.nn.Module = LlamaForCausalLM(model.config).eval()
    dense.load_state_dict(kept)
    return dense


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[Any, ...], tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("ct-int8")
    found = {}
    for case in CASES:
        out = root / "-".join(str(c) for c in case)
        found[case] = (out, _write(out, *case))
    return found


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


def _expected_layout(fmt: str, strategy: str, symmetric: bool, activations: str | None) -> CtIntQuantized:
    acts = {None: "float", "dynamic": "dynamic", "static": "static"}[activations]
    return CtIntQuantized(bits=8, group_size=_STRATEGY_GROUP if strategy == "group" else -1, strategy=strategy,  # type: ignore[arg-type]
                          symmetric=symmetric, activations=acts)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=["-".join(str(c) for c in case) for case in CASES])
def test_the_checkpoint_is_what_compressed_tensors_writes(written: dict[tuple[Any, ...], Any], case: tuple[Any, ...]) -> None:
    """The config parses to the int-quantized layout; the stored tensors are the ones the layout declares."""
    out, _ = written[case]
    raw = json.loads((out / "config.json").read_text())["quantization_config"]
    layout = layout_of(qd.parse(raw).unwrap())
    assert layout == _expected_layout(*case)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        prefix = "model.layers.0.mlp.down_proj."
        stored = {n[len(prefix):]: (tuple(f.get_slice(n).get_shape()), f.get_slice(n).get_dtype()) for n in f.keys() if n.startswith(prefix)}
    declared = layout.tensors(256, 128, bias=False)
    assert not isinstance(declared, Unpackable)
    assert {n: s for n, (s, _) in stored.items()} == {n: d.shape for n, d in declared.items()}
    assert all(dtype == declared[n].dtype or dtype in declared[n].accepted for n, (_, dtype) in stored.items())


@pytest.mark.parametrize("case", CASES, ids=["-".join(str(c) for c in case) for case in CASES])
def test_the_portable_module_matches_compressed_tensors_decompression(written: dict[tuple[Any, ...], Any], case: tuple[Any, ...]) -> None:
    """torch-packed keeps the int8 codes and its float32 logits equal those of compressed-tensors' decompressed weights."""
    out, dense = written[case]
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 14 and all(m.weight.dtype == torch.int8 for m in packed)
    assert "compressed-tensors int-quantized 8-bit" in loaded.plan.explain()
    assert torch.equal(_logits(loaded.model), _logits(dense))
    activations_note = any("activations to int8" in n for n in loaded.plan.notes)
    assert activations_note == (case[3] is not None)


@pytest.mark.parametrize("case", CASES[:2], ids=["-".join(str(c) for c in case) for case in CASES[:2]])
def test_dequantized_at_load_the_weights_are_compressed_tensors_ones(written: dict[tuple[Any, ...], Any], case: tuple[Any, ...]) -> None:
    """With dequantize_at_load, every layer's dense weight is bit-equal to compressed-tensors' decompressed weight."""
    out, dense = written[case]
    loaded = qd.load(out, device="cpu", dtype="float32", backend="torch-packed", dequantize_at_load=True).unwrap()
    reference = dict(dense.named_modules())
    for name, module in loaded.model.named_modules():
        if isinstance(module, PackedLinear):
            assert module.dequantize_at_load and torch.equal(module.dequantize(torch.float32), reference[name].weight), name


@pytest.mark.parametrize("case", CASES[:3], ids=["-".join(str(c) for c in case) for case in CASES[:3]])
def test_cpu_dense_serves_it(written: dict[tuple[Any, ...], Any], case: tuple[Any, ...]) -> None:
    """The 8-bit dense kernel is the default on a CPU: linear layers with the same weights, the same logits."""
    out, dense = written[case]
    loaded = qd.load(out, device="cpu", dtype="float32").unwrap()
    assert loaded.plan.backend.name == "cpu-dense"
    assert not any(isinstance(m, PackedLinear) for m in loaded.model.modules())
    assert torch.equal(_logits(loaded.model), _logits(dense))
