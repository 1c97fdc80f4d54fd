"""Backend names users passed before kernels lost their method keep working: the same kernel
loads, bit for bit, and the plan says the new name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernel import renames
from tests.cpu import needs_avx2_fma, needs_vector_int4

from .ckpt import awq_quantizer, base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(5))

OLD_NAMES = {"torch-gptq": "torch-packed", "cpu-int4-gptq": "cpu-int4", "cpu-q4-gptq": "cpu-q4", "cpu-dense-gptq": "cpu-dense",
             "torch-awq": "torch-packed", "cpu-int4-awq": "cpu-int4", "cpu-q4-awq": "cpu-q4"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("renamed")
    gptq, awq = qd.Gptq(bits=4, group_size=32), qd.AwqGemm(group_size=32)
    write_quantized(root / "gptq", base_model(), gptq, gptq_quantizer(gptq))
    write_quantized(root / "awq", base_model(), awq, awq_quantizer(awq))
    return {"gptq": root / "gptq", "awq": root / "awq"}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits.float()
    return out


def test_every_old_name_is_declared_for_its_method() -> None:
    """The table of old names is the one the methods declare, each for its own method's configs."""
    assert {r.old: r.new for r in renames()} == OLD_NAMES


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_name_plans_the_kernel_and_notes_the_new_name(old: str) -> None:
    """backend='cpu-int4-gptq' plans cpu-int4, and a note names it; an old name of another method is no candidate."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),),
                         devices=(qd.Cpu(features=qd.CpuFeatures(avx2=True, fma=True)),))
    config = qd.Gptq(bits=8 if "dense" in old else 4) if "gptq" in old else qd.AwqGemm()
    p = qd.plan(config, env, qd.LoadOptions(device="cpu", backend=old))
    assert isinstance(p, qd.Ok) and p.value.backend.name == OLD_NAMES[old]
    assert any(f"{old!r} is now called {OLD_NAMES[old]!r}" in n for n in p.value.notes)
    other = qd.AwqGemm() if "gptq" in old else qd.Gptq(bits=4)
    wrong = qd.plan(other, env, qd.LoadOptions(device="cpu", backend=old))
    assert isinstance(wrong, qd.Err) and "not a candidate" in wrong.error[0].message


@pytest.mark.parametrize(("family", "old"), [
    ("gptq", "torch-gptq"), pytest.param("gptq", "cpu-int4-gptq", marks=needs_vector_int4),
    pytest.param("gptq", "cpu-q4-gptq", marks=needs_avx2_fma), ("awq", "torch-awq"),
    pytest.param("awq", "cpu-int4-awq", marks=needs_vector_int4), pytest.param("awq", "cpu-q4-awq", marks=needs_avx2_fma),
])
def test_an_old_name_loads_exactly_as_the_new_one(checkpoints: dict[str, Path], family: str, old: str) -> None:
    """The model an old name loads has the same modules and the same logits as the new name's."""
    before = qd.load(checkpoints[family], device="cpu", dtype="float32", backend=old).unwrap()
    after = qd.load(checkpoints[family], device="cpu", dtype="float32", backend=OLD_NAMES[old]).unwrap()
    assert before.plan.backend == after.plan.backend
    assert [type(m).__name__ for m in before.model.modules()] == [type(m).__name__ for m in after.model.modules()]
    assert torch.equal(_logits(before.model), _logits(after.model))
