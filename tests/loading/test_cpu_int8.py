"""``cpu-int8``: compressed-tensors int8 weights kept as stored on torch's int8 kernel, bf16 activations.

Checkpoints come from compressed-tensors' own compressor (``test_load_ct_int8._write``); the reference
is the dense model of compressed-tensors' decompressed weights, run in bfloat16. The kernel computes
``(x @ q.T) * s`` with bf16 scales (torch's kernel takes no others), the dense model ``x @ (q * s).T``
with the product rounded to bf16: the two differ by bf16 rounding, not more."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd
from quantdispatch.environment import Cpu, CpuFeatures
from quantdispatch.kernel import CPU_INT8
from quantdispatch.kernels.int8 import Int8Linear, int8_unfit
from quantdispatch.layouts import CtIntQuantized
from tests.cpu import FEATURES, needs_native_bf16

from .test_load_ct_int8 import IDS, _write

torch.set_num_threads(1)
W8A16 = ("int-quantized", "channel", True, None)
GROUPS = ("int-quantized", "group", False, None)
BF16_CPU = Cpu(features=CpuFeatures(avx2=True, fma=True, avx512=True, avx512_bf16=True))
PLAIN_CPU = Cpu(features=CpuFeatures(avx2=True, fma=True))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[Any, ...], tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("cpu-int8")
    return {case: (root / "-".join(map(str, case)), _write(root / "-".join(map(str, case)), *case)) for case in (W8A16, GROUPS)}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


def test_the_fit_rule_takes_symmetric_row_scales_on_a_native_bf16_cpu() -> None:
    row = CtIntQuantized(bits=8, group_size=-1, strategy="channel", symmetric=True)
    assert CPU_INT8.fit(row, BF16_CPU) == ()
    assert any("bfloat16" in r for r in CPU_INT8.fit(row, PLAIN_CPU))
    assert any("zero points" in r for r in CPU_INT8.fit(CtIntQuantized(bits=8, group_size=-1, strategy="channel", symmetric=False),
                                                     BF16_CPU))
    assert any("per group" in r for r in CPU_INT8.fit(CtIntQuantized(bits=8, group_size=32, strategy="group", symmetric=True), BF16_CPU))
    assert int8_unfit(64, torch.bfloat16) is None and int8_unfit(72, torch.bfloat16) is not None
    assert int8_unfit(64, torch.float32) is not None


@needs_native_bf16
def test_bf16_keeps_the_int8_bytes_and_computes_the_decompressed_models_logits(
        written: dict[tuple[Any, ...], tuple[Path, torch.nn.Module]]) -> None:
    out, dense = written[W8A16]
    loaded = qd.load(out, device="cpu", dtype="bfloat16", backend="cpu-int8").unwrap()
    layers = [m for m in loaded.model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 14 and all(m.weight.dtype == torch.int8 for m in layers)  # the stored bytes, no dense copy
    half = copy.deepcopy(dense).to(torch.bfloat16)  # the fixture's model stays float32
    exact = _logits(dense)  # float32, the decompressed weights
    got, want = _logits(loaded.model), _logits(half)
    # Our error against the float32 model is of the size bf16 itself costs the dense model: bf16 rounding, not a wrong weight.
    assert (got - exact).abs().max().item() <= 2 * (want - exact).abs().max().item()
    assert torch.allclose(got, want, rtol=0, atol=0.05 * want.abs().max().item()), (got - want).abs().max()
    # Prefill (more rows than the decode path takes) computes the same model.
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        long = loaded.model(ids).logits.float()
        reference = half(ids).logits.float()
        exact_long = dense(ids).logits.float()
    assert (long - exact_long).abs().max().item() <= 2 * (reference - exact_long).abs().max().item()


def test_the_plan_chooses_it_only_where_it_fits(written: dict[tuple[Any, ...], tuple[Path, torch.nn.Module]]) -> None:
    out, _ = written[W8A16]
    assert qd.load(out, device="cpu", dtype="float32").unwrap().plan.backend.name == "cpu-dense"  # float32: not planned
    grouped, _ = written[GROUPS]
    loaded = qd.load(grouped, device="cpu", dtype="bfloat16").unwrap()
    assert loaded.plan.backend.name == "cpu-dense"
    assert "cpu-int8" in {r.backend for r in loaded.plan.rejected}
    rows = qd.load(out, device="cpu", dtype="bfloat16").unwrap().plan.backend.name
    assert rows == ("cpu-int8" if FEATURES.native_bf16 else "cpu-dense")  # the masked CPU decides


def test_a_layer_torch_cannot_take_is_made_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    """in_features not a multiple of 16: the dense layer cpu-dense would make (torch's bf16 kernel needs it)."""
    from quantdispatch.backends import cpu_int4
    from quantdispatch.kernels.int8 import prepare_int8

    dense = torch.nn.Linear(24, 4)
    monkeypatch.setattr(cpu_int4, "prepare_dense", lambda module, layout, dtype: dense)

    class Portable(torch.nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k
            self.in_features, self.out_features = k, 4
            self.bias = None

        def tensors(self) -> dict[str, torch.Tensor]:
            return {"weight": torch.ones(4, self.k, dtype=torch.int8), "weight_scale": torch.ones(4, 1)}

    layout = CtIntQuantized(bits=8, group_size=-1, strategy="channel", symmetric=True)
    assert isinstance(prepare_int8(Portable(32), layout, torch.bfloat16), Int8Linear)
    assert prepare_int8(Portable(24), layout, torch.bfloat16) is dense
    assert prepare_int8(Portable(32), layout, torch.float32) is dense
