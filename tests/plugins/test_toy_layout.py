"""A layout and a kernel added from outside the package, with no edit to it, load end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import quantdispatch as qd
from quantdispatch.kernels.modules import PackedLinear
from tests.loading.ckpt import base_model

from .toy_layout import METHOD, RowsLinear, ToyRows, ToyRowsLayout, quantize_rows, register

register()
torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny Llama with every decoder projection in the toy format, and the dense model of its dequantized weights."""
    out = tmp_path_factory.mktemp("toy")
    model = base_model(seed=4)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            stored = quantize_rows(t)
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in stored.items())
            linear = model.get_submodule(module)
            assert isinstance(linear, torch.nn.Linear)
            linear.weight.data.copy_(stored["codes"].float() * stored["row_scale"])
        else:
            tensors[name] = t.contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    model.config.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": METHOD}}))
    return out, model.eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits
    return out


def test_the_plugin_config_plans_its_kernel_from_its_layout() -> None:
    """With only a layout and a kernel registered, the plan offers the plugin's kernel first and the portable module next."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),), devices=(qd.Cpu(),))
    p = qd.plan(qd.parse({"quant_method": METHOD}).unwrap(), env, qd.LoadOptions(device="cpu", executable=True)).unwrap()
    assert isinstance(p.config, ToyRows) and p.layout == ToyRowsLayout()
    assert p.backend.name == "toy-int8-rows" and [r.backend for r in p.rejected] == ["torch-packed"]
    assert "toy int8 codes" in p.explain()


def test_the_plugin_kernel_loads_and_matches_the_dense_reference(checkpoint: tuple[Path, torch.nn.Module]) -> None:
    """qd.load runs the plugin's prepare on every layer; logits equal the dense model's up to float32 summation order."""
    path, dense = checkpoint
    loaded = qd.load(path, device="cpu", dtype="float32").unwrap()
    assert loaded.plan.backend.name == "toy-int8-rows"
    assert sum(isinstance(m, RowsLinear) for m in loaded.model.modules()) == 14
    ours, reference = _logits(loaded.model), _logits(dense)
    assert (ours - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()


def test_the_portable_module_serves_the_plugin_layout(checkpoint: tuple[Path, torch.nn.Module]) -> None:
    """backend='torch-packed' keeps the layers in the generic portable module, which dequantizes through the layout."""
    path, dense = checkpoint
    loaded = qd.load(path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 14 and packed[0].codes.dtype == torch.int8
    assert torch.equal(_logits(loaded.model), _logits(dense))


def test_a_corrupt_plugin_tensor_is_refused_by_the_layouts_declarations(checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """The loader checks what the plugin's layout declares: a NaN row scale is load.tensor.not_finite, before any forward."""
    from safetensors.torch import load_file

    path, _ = checkpoint
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.row_scale"][3, 0] = float("nan")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    found = qd.load(tmp_path, device="cpu", dtype="float32")
    assert isinstance(found, qd.Err) and [i.code for i in found.error] == ["load.tensor.not_finite"]
    assert "'model.layers.1.mlp.up_proj.row_scale'[3][0]" in found.error[0].message
