"""Bad gpt-oss MXFP4 checkpoints are refused with coded issues, never a traceback, before any forward.

Each case takes a good checkpoint (``mxfp4_ckpt.write_mxfp4``), changes one tensor of one experts
block and loads it: an E8M0 scale byte 255 (NaN), truncated blocks, codes or scales stored in another
dtype, a missing tensor, and experts whose intermediate size is not whole blocks of 32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import quantdispatch as qd

from .corrupt import Change, cast, changed, cut_last, drop, set_entry
from .mxfp4_ckpt import write_mxfp4

torch.set_num_threads(1)
EXPERTS = "model.layers.1.mlp.experts"


def _nan_scale(name: str, index: tuple[int, ...]) -> Change:
    return set_entry(f"{EXPERTS}.{name}", index, 255)  # the E8M0 byte of NaN


CASES = {
    "gate_up scale NaN": (_nan_scale("gate_up_proj_scales", (2, 5, 1)), "load.tensor.not_finite"),
    "down scale NaN": (_nan_scale("down_proj_scales", (0, 0, 0)), "load.tensor.not_finite"),
    "blocks truncated": (cut_last(f"{EXPERTS}.gate_up_proj_blocks", 1), "load.tensor.shape"),
    "scales truncated": (cut_last(f"{EXPERTS}.down_proj_scales", 1), "load.tensor.shape"),
    "blocks stored as int8": (cast(f"{EXPERTS}.gate_up_proj_blocks", torch.int8), "load.tensor.dtype"),
    "scales stored as float32": (cast(f"{EXPERTS}.down_proj_scales", torch.float32), "load.tensor.dtype"),
    "scales missing": (drop(f"{EXPERTS}.gate_up_proj_scales"), "load.tensor.missing"),
    "bias missing": (drop(f"{EXPERTS}.down_proj_bias"), "load.tensor.missing"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mxfp4-good") / "ckpt"
    write_mxfp4(out, seed=2)
    return out


def _issues(out: Path, backend: str | None) -> tuple[qd.Issue, ...]:
    found = qd.load(out, device="cpu", dtype="float32", backend=backend)
    assert isinstance(found, qd.Err), "a bad checkpoint loaded"
    return found.error


@pytest.mark.parametrize("backend", ["torch-packed", None])
@pytest.mark.parametrize("case", CASES)
def test_a_bad_checkpoint_is_one_coded_issue(good: Path, tmp_path: Path, case: str, backend: str | None) -> None:
    """One bad tensor in one experts block: one coded issue, on the portable path and the planned kernel."""
    change, code = CASES[case]
    assert [i.code for i in _issues(changed(good, tmp_path / "bad", change), backend)] == [code]


def test_the_nan_scale_issue_names_the_tensor_and_the_entry(good: Path, tmp_path: Path) -> None:
    """The issue's path is the stored tensor's name; its message gives the index and the NaN."""
    out = changed(good, tmp_path / "bad", _nan_scale("gate_up_proj_scales", (2, 5, 1)))
    (issue,) = _issues(out, None)
    assert issue.path == f"$.tensors['{EXPERTS}.gate_up_proj_scales']"
    assert "[2][5][1]" in issue.message and "nan" in issue.message


def test_intermediate_size_not_whole_blocks(good: Path, tmp_path: Path) -> None:
    """Experts whose intermediate size (48) is not whole blocks of 32 are refused by shape, per block."""
    out = tmp_path / "bad"
    shutil.copytree(good, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    codes = [i.code for i in _issues(out, None)]
    assert codes == ["load.layer.shape", "load.layer.shape"]


def test_a_marker_beside_a_module_that_is_not_an_experts_block(good: Path, tmp_path: Path) -> None:
    """The experts' marker tensor stored beside a linear layer or a norm: each is a coded shape issue
    naming the module (a linear layer is not stored in this layout; a norm is not an experts block)."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        for module in ("model.layers.0.self_attn.q_proj", "model.layers.0.input_layernorm"):
            tensors[f"{module}.gate_up_proj_blocks"] = torch.zeros(4, 2, dtype=torch.uint8)

    issues = _issues(changed(good, tmp_path / "bad", change), None)
    assert [(i.code, i.path) for i in issues] == [("load.layer.shape", "$.modules['model.layers.0.self_attn.q_proj']"),
                                                  ("load.layer.shape", "$.modules['model.layers.0.input_layernorm']")]
