"""A GGUF model is opened once per load: each shard's header is parsed once, while planning, and
carried to the loader (``GgufSource``), which only maps the files. A shard that changes, vanishes
or turns into a FIFO between the plan and the load, or is truncated before, is a coded issue.

The oracles: gguf-py's ``GGUFReader`` for the tensor table (name, type, shape, offset, bytes), and
the same model written as one file for the weights of the split one.
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import torch

import quantdispatch as qd
import quantdispatch.gguf.reader as reader
import quantdispatch.loading.gguf as loading_gguf
from quantdispatch.fileio import open_regular as real_open_regular
from quantdispatch.loading.gguf import read_gguf_source
from quantdispatch.plan import plan as real_plan
from quantdispatch.result import Err, Issues, Ok, Result
from tests.gguf_models import T, rewrite, tiny_model, write_gguf

SHARDS = ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-layer Llama in Q8_0, written by gguf-py as one file and split in two shards."""
    d = tmp_path_factory.mktemp("split")
    source = write_gguf(tiny_model("llama", layers=2), "llama", d / "f32.gguf", T.F32)
    single = rewrite(source, d / "single.gguf", T.Q8_0)
    (d / "split").mkdir()
    rewrite(source, d / "split" / "m.gguf", T.Q8_0, split_max_tensors=11)
    assert sorted(p.name for p in (d / "split").iterdir()) == list(SHARDS)
    return {"single": single, "split": d / "split"}


@pytest.fixture
def shards(models: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of the two shards, for a test to damage."""
    for name in SHARDS:
        shutil.copyfile(models["split"] / name, tmp_path / name)
    return tmp_path / SHARDS[0], tmp_path / SHARDS[1]


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 33, 60, 2, 17]])


def _logits(path: Path, **kw: Any) -> torch.Tensor:
    torch.set_num_threads(1)
    found = qd.load(path, device="cpu", **kw)
    assert not isinstance(found, Err), [i.render() for i in found.error]
    with torch.no_grad():
        logits: torch.Tensor = found.value.model(_ids()).logits
    return logits


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Every GGUF header parsed while the test runs, by file name: each parse opens its file in the
    reader (``open_regular``) and runs the one parser (``_Reader.read``); both are counted, so a
    parse by any route (``read_gguf_header``, ``open_gguf_data``, ``read_config``) shows."""
    opened: collections.Counter[str] = collections.Counter()
    parsed = [0]
    real_read = reader._Reader.read

    def open_regular(path: str | os.PathLike[str], code_prefix: str = "file") -> Any:
        opened[Path(path).name] += 1
        return real_open_regular(path, code_prefix)

    def read(self: Any) -> Any:
        parsed[0] += 1
        return real_read(self)

    monkeypatch.setattr(reader, "open_regular", open_regular)
    monkeypatch.setattr(reader._Reader, "read", read)
    yield opened
    assert parsed[0] == sum(opened.values()), "a header was parsed without being opened by the reader"


@pytest.mark.parametrize("packed", [True, False])
def test_each_shard_header_is_parsed_once_per_load(models: dict[str, Path], parses: collections.Counter[str], packed: bool) -> None:
    """Loading a two-shard model (by its first shard's name) parses each shard's header exactly once."""
    _logits(models["split"] / SHARDS[0], dequantize_at_load=not packed)
    assert parses == collections.Counter({SHARDS[0]: 1, SHARDS[1]: 1})


def test_a_split_model_loads_as_the_single_file(models: dict[str, Path]) -> None:
    """The shards, from either one's name, give the single file's logits exactly."""
    expected = _logits(models["single"])
    for name in SHARDS:
        torch.testing.assert_close(_logits(models["split"] / name), expected, rtol=0, atol=0)


def test_bytes_on_disk_are_the_shards(models: dict[str, Path]) -> None:
    """The load's ``bytes_on_disk`` is the shards' sizes, as they were when their headers were read."""
    found = qd.load(models["split"] / SHARDS[0], device="cpu")
    assert not isinstance(found, Err)
    assert found.value.stats.bytes_on_disk == sum((models["split"] / n).stat().st_size for n in SHARDS)


def test_the_tensor_table_equals_gguf_py(models: dict[str, Path]) -> None:
    """The carried tensor table (name, type, shape, file, absolute offset, bytes) is what gguf-py's
    reader finds in each shard."""
    from gguf import GGUFReader

    source = read_gguf_source(models["split"] / SHARDS[1])
    assert isinstance(source, Ok)
    ours = [(e.file.name, e.name, e.info.ggml_type, e.info.shape, e.start, e.nbytes) for e in source.value.tensors]
    theirs = []
    for name in SHARDS:
        for t in GGUFReader(models["split"] / name).tensors:
            theirs.append((name, t.name, int(t.tensor_type), tuple(int(d) for d in t.shape), int(t.data_offset), int(t.n_bytes)))
    assert ours == theirs
    assert len(ours) == 21 and {e[0] for e in ours} == set(SHARDS)


# ----------------------------------------------------------------------------- changed between the plan and the load
def _after_planning(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Run ``change`` once the plan is made from the headers, before the loader maps the files."""
    def plan(*args: Any, **kw: Any) -> Any:
        made = real_plan(*args, **kw)
        change()
        return made

    monkeypatch.setattr(loading_gguf, "plan", plan)


def _grow(p: Path) -> None:
    with p.open("ab") as f:
        f.write(bytes(64))


def _truncate(p: Path) -> None:
    os.truncate(p, p.stat().st_size - 64)


def _touch(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def _replace(p: Path) -> None:
    copy = p.with_name("copy.tmp")
    shutil.copy2(p, copy)  # same bytes, same size and modification time; another inode
    os.replace(copy, p)


def _codes(found: Result[Any, Issues]) -> list[str]:
    assert isinstance(found, Err)
    return [i.code for i in found.error]


@pytest.mark.parametrize(("change", "words"), [(_grow, "size went from"), (_truncate, "size went from"),
                                               (_touch, "modified"), (_replace, "another file")])
def test_a_shard_changed_after_planning_is_refused(shards: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                   change: Callable[[Path], None], words: str) -> None:
    """A shard grown, truncated, rewritten in place or replaced by another file after its header was
    read is ``load.file.changed``, naming the shard and what changed: no model with weights the plan
    did not check."""
    _after_planning(monkeypatch, lambda: change(shards[1]))
    found = qd.load(shards[0], device="cpu")
    assert _codes(found) == ["load.file.changed"]
    assert isinstance(found, Err)
    assert found.error[0].message.startswith(SHARDS[1]) and words in found.error[0].message


def test_an_unchanged_shard_that_was_read_again_loads(shards: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a shard between the plan and the load (its atime changes) is no change."""
    def read() -> None:
        assert shards[1].read_bytes()

    _after_planning(monkeypatch, read)
    assert not isinstance(qd.load(shards[0], device="cpu"), Err)


def test_a_shard_that_vanishes_after_planning_is_an_issue(shards: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard deleted between the plan and the load is ``gguf.file.unreadable``."""
    _after_planning(monkeypatch, shards[1].unlink)
    assert _codes(qd.load(shards[0], device="cpu")) == ["gguf.file.unreadable"]


def test_a_shard_that_becomes_a_fifo_after_planning_is_an_issue(shards: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard replaced by a FIFO between the plan and the load is refused without waiting on it."""
    def to_fifo() -> None:
        shards[1].unlink()
        os.mkfifo(shards[1])

    _after_planning(monkeypatch, to_fifo)
    found = qd.load(shards[0], device="cpu")
    assert _codes(found) == ["gguf.file.unreadable"]
    assert isinstance(found, Err) and "not a regular file" in found.error[0].message


# ----------------------------------------------------------------------------- damaged before the load
def test_a_fifo_named_as_a_shard_is_an_issue(shards: tuple[Path, Path]) -> None:
    """A FIFO where the second shard should be is refused by its kind, never opened (no hang)."""
    shards[1].unlink()
    os.mkfifo(shards[1])
    found = qd.load(shards[0], device="cpu")
    assert _codes(found) == ["load.gguf.shard.missing"]
    assert isinstance(found, Err) and SHARDS[1] in found.error[0].message


@pytest.mark.parametrize(("keep", "code"), [(20, "gguf.truncated"), (-64, "gguf.tensor.out_of_bounds")])
def test_a_truncated_shard_is_an_issue(shards: tuple[Path, Path], keep: int, code: str) -> None:
    """A second shard cut inside its header, or inside its tensor data, is refused by the header check."""
    size = shards[1].stat().st_size
    os.truncate(shards[1], keep if keep > 0 else size + keep)
    assert code in _codes(qd.load(shards[0], device="cpu"))


# ----------------------------------------------------------------------------- the generic end of the load
def test_a_tied_dense_output_layer_is_the_embedding(tmp_path: Path) -> None:
    """With no ``output.weight``, dequantized at load, the output layer is tied to the embedding
    (one tensor, as Transformers ties it), and the logits are the source model's."""
    torch.set_num_threads(1)
    source = tiny_model("llama", tie=True)
    path = write_gguf(source, "llama", tmp_path / "m.gguf", T.F32)
    found = qd.load(path, device="cpu", dequantize_at_load=True)
    assert not isinstance(found, Err), [i.render() for i in found.error]
    model: Any = found.value.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(model(_ids()).logits, source(_ids()).logits, rtol=1e-5, atol=1e-5)
