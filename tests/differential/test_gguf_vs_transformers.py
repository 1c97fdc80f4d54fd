"""GGUF family: our reading of real files against Transformers' GGUF config loader.

Transformers reads GGUF metadata to build a model config and supports a list of architectures;
where it accepts a file, its ``model_type`` must be our ``architecture``. Where it fails, the
table below says how, and our answer (an ``Ok`` or a coded ``Err``, never an exception).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Final

import pytest

import quantdispatch as qd
from tests.conftest import REALWORLD

pytest.importorskip("transformers")
pytest.importorskip("gguf")

GGUF_DIR: Final = REALWORLD / "gguf"

# file -> (what Transformers does, what we answer). Transformers' loader is the reference only for
# files it accepts; on the others it raises, sometimes a bare IndexError from deep inside.
TRANSFORMERS_REFUSES: Final[dict[str, str]] = {
    "UNUSUAL__zackshen-gguf__test-le-v3.duplicate-kv-key.gguf": "KeyError from gguf-py on the duplicate key; we: gguf.metadata.duplicate_key",
    "crabml__tinyllamas-stories-260k-f32.gguf": "refuses GGUF v1; we read v1",
    "emel__app_smoke_flow_a.gguf": "IndexError (no general.architecture); we: Ok, architecture None",
    "emel__lifecycle_integration_smoke_model.gguf": "IndexError (no general.architecture); we: Ok, architecture None",
    "hirox-gguf-parser__dummy.gguf": "IndexError (no general.architecture); we: Ok, architecture None",
    "ollama__registry-testdata-empty-gguf-24-bytes.gguf": "IndexError (empty file); we: Ok, no tensors",
    "ggml__superpoint.gguf": "architecture not supported by Transformers; we: Ok",
    "threatflux__test_model.gguf": "architecture not supported; we: gguf.tensor.overlap (tensors share offset 0)",
}


def _valid_files() -> list[Path]:
    if not GGUF_DIR.is_dir():
        return []
    return sorted(p for p in GGUF_DIR.glob("*.gguf") if not p.name.startswith(("INVALID__", "UNUSUAL__zackshen-gguf__test-be")))


def _theirs(path: Path) -> Any:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return load_gguf_checkpoint(str(path), return_tensors=False)["config"]
        except Exception as e:
            return e


@pytest.mark.parametrize("path", _valid_files(), ids=lambda p: p.name)
def test_architecture_agrees_where_transformers_reads_the_file(path: Path) -> None:
    """Where Transformers reads a file, its model_type is our architecture; elsewhere the table says why."""
    theirs = _theirs(path)
    ours = qd.read_config(path)
    if isinstance(theirs, Exception):
        assert path.name in TRANSFORMERS_REFUSES, f"Transformers refuses {path.name} ({theirs!r}) and the table does not say so"
        return
    assert path.name not in TRANSFORMERS_REFUSES, f"Transformers now reads {path.name}: drop it from the table"
    assert isinstance(ours, qd.Ok) and isinstance(ours.value, qd.Gguf), ours
    assert ours.value.architecture == theirs["model_type"]


def test_refusal_table_is_not_stale() -> None:
    """Every row of the table names a file that exists and that Transformers really refuses."""
    if not GGUF_DIR.is_dir():
        pytest.skip("shared/realworld is not beside the repository")
    for name in TRANSFORMERS_REFUSES:
        assert (GGUF_DIR / name).is_file(), name
        assert isinstance(_theirs(GGUF_DIR / name), Exception), name
        assert isinstance(qd.read_config(GGUF_DIR / name), (qd.Ok, qd.Err))
