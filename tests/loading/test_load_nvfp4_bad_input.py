"""Bad NVFP4 checkpoints are refused with coded issues, never a traceback, before any forward.

Each case takes a good checkpoint (ModelOpt's as ``nvfp4_ckpt.write_modelopt`` writes it, or
compressed-tensors' own), changes one tensor of one layer, and loads it: a NaN, infinite or
wrongly signed scale, packed codes whose size disagrees with the layer, a scale stored in another
dtype than the format's, a layer whose input width is not whole blocks of 16.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("compressed_tensors")

import quantdispatch as qd

from .corrupt import Change, cast, changed, cut_last, set_entry
from .nvfp4_ckpt import write_ct_nvfp4, write_modelopt

torch.set_num_threads(1)
LAYER = "model.layers.0.self_attn.q_proj"


def _set(name: str, index: tuple[int, ...], value: float) -> Change:
    return set_entry(f"{LAYER}.{name}", index, value)


def _cast(name: str, dtype: torch.dtype) -> Change:
    return cast(f"{LAYER}.{name}", dtype)


def _narrow(name: str) -> Change:
    return cut_last(f"{LAYER}.{name}", 8)


MODELOPT_CASES = {
    "block scale NaN": (_set("weight_scale", (3, 1), float("nan")), "load.tensor.not_finite"),
    "block scale negative": (_set("weight_scale", (0, 2), -0.5), "load.tensor.sign"),
    "per-tensor scale zero": (_set("weight_scale_2", (), 0.0), "load.tensor.sign"),
    "per-tensor scale infinite": (_set("weight_scale_2", (), float("inf")), "load.tensor.not_finite"),
    "input scale negative": (_set("input_scale", (), -1.0), "load.tensor.sign"),
    "packed codes too narrow": (_narrow("weight"), "load.tensor.shape"),
    "block scales too few": (_narrow("weight_scale"), "load.tensor.shape"),
    "block scale stored as bfloat16": (_cast("weight_scale", torch.bfloat16), "load.tensor.dtype"),
    "codes stored as int8": (_cast("weight", torch.int8), "load.tensor.dtype"),
}
CT_CASES = {
    "global scale negative": (_set("weight_global_scale", (0,), -3.0), "load.tensor.sign"),
    "global scale NaN": (_set("weight_global_scale", (0,), float("nan")), "load.tensor.not_finite"),
    "block scale stored as float32": (_cast("weight_scale", torch.float32), "load.tensor.dtype"),
    "packed codes too narrow": (_narrow("weight_packed"), "load.tensor.shape"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nvfp4-good")
    write_modelopt(root / "modelopt")
    write_ct_nvfp4(root / "ct")
    return {"modelopt": root / "modelopt", "ct": root / "ct"}


def _codes(out: Path) -> list[str]:
    found = qd.load(out, device="cpu", dtype="float32", backend="torch-packed")
    assert isinstance(found, qd.Err), "a bad checkpoint loaded"
    return [i.code for i in found.error]


@pytest.mark.parametrize("case", MODELOPT_CASES)
def test_a_bad_modelopt_checkpoint_is_an_issue(good: dict[str, Path], tmp_path: Path, case: str) -> None:
    """One bad tensor in one layer of a ModelOpt NVFP4 checkpoint: one coded issue naming it."""
    change, code = MODELOPT_CASES[case]
    codes = _codes(changed(good["modelopt"], tmp_path / "bad", change))
    assert codes == [code]


@pytest.mark.parametrize("case", CT_CASES)
def test_a_bad_compressed_tensors_checkpoint_is_an_issue(good: dict[str, Path], tmp_path: Path, case: str) -> None:
    """One bad tensor in one layer of a compressed-tensors NVFP4 checkpoint: one coded issue naming it."""
    change, code = CT_CASES[case]
    codes = _codes(changed(good["ct"], tmp_path / "bad", change))
    assert codes == [code]


def test_the_issue_names_the_tensor(good: dict[str, Path], tmp_path: Path) -> None:
    """The issue's path is the stored tensor's name, and its message quotes the value seen."""
    out = changed(good["modelopt"], tmp_path / "bad", _set("weight_scale", (0, 2), -0.5))
    found = qd.load(out, device="cpu", dtype="float32", backend="torch-packed")
    assert isinstance(found, qd.Err)
    (issue,) = found.error
    assert issue.path == f"$.tensors['{LAYER}.weight_scale']" and "-0.5" in issue.message and "[0][2]" in issue.message


def test_input_width_not_whole_blocks(good: dict[str, Path], tmp_path: Path) -> None:
    """A model whose MLP input width (264) is not a whole number of 16-wide blocks: the layers are refused by shape."""
    out = tmp_path / "bad"
    shutil.copytree(good["modelopt"], out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "intermediate_size": 264}))
    codes = set(_codes(out))
    assert "load.layer.shape" in codes
