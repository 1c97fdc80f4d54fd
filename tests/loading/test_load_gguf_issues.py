"""GGUF files ``qd.load`` refuses, each with an issue naming what is wrong, and no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import numpy as np
import torch

import quantdispatch as qd
from quantdispatch.result import Err
from tests.conftest import REALWORLD
from tests.gguf_models import T, tiny_model, write_gguf


def _codes(path: Path, **kw: object) -> list[str]:
    found = qd.load(path, device="cpu", **kw)  # type: ignore[arg-type]
    assert isinstance(found, Err)
    return [i.code for i in found.error]


def test_unsupported_architecture_names_it() -> None:
    """A GGUF file of an architecture with no Transformers mapping (ggml's superpoint) is refused by name."""
    path = REALWORLD / "gguf" / "ggml__superpoint.gguf"
    if not path.is_file():
        pytest.skip("the shared real-world corpus is not beside the repository")
    assert "load.gguf.architecture.unsupported" in _codes(path)


@pytest.mark.parametrize("packed", [True, False])
def test_missing_tensor_is_an_issue(tmp_path: Path, packed: bool) -> None:
    """A file without one layer's down projection is refused, naming the parameter."""
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "m.gguf", T.Q8_0, skip=("blk.0.ffn_down.weight",))
    found = qd.load(path, device="cpu", dequantize_at_load=not packed)
    assert isinstance(found, Err)
    assert [i.code for i in found.error] == ["load.tensor.missing"]
    assert "model.layers.0.mlp.down_proj.weight" in found.error[0].message


def test_unexpected_tensor_is_an_issue(tmp_path: Path) -> None:
    """A tensor a llama has no place for is refused, naming it."""
    extra = {"blk.0.attn_sinks.weight": np.zeros(4, dtype=np.float32)}
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "m.gguf", T.Q8_0, extra=extra)
    assert _codes(path) == ["load.tensor.unexpected"]


def test_backend_forced_by_name_picks_the_mode(tmp_path: Path) -> None:
    """``backend="torch-gguf"`` dequantizes at load; the plan names the other mode as rejected."""
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "m.gguf", T.Q8_0)
    found = qd.load(path, device="cpu", backend="torch-gguf")
    assert not isinstance(found, Err)
    loaded = found.value
    model: Any = loaded.model
    assert loaded.plan.backend.name == "torch-gguf"
    assert isinstance(model.model.layers[0].mlp.down_proj, torch.nn.Linear)
    rejected = [r.backend for r in loaded.plan.rejected]
    assert "torch-gguf-packed" in rejected and "torch-gguf" not in rejected
