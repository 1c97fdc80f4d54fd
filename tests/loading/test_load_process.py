"""What a load does to the process: nothing lasting. Every load path leaves torch's default dtype,
``nn.Module``'s methods, ``torch.nn.init``, warning filters and the environment as it found them;
concurrent loads give the models sequential ones give; ``mmap=False`` models never read their
files again; every argument of ``qd.load`` is type-checked before a file is read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import quantdispatch as qd
from quantdispatch.loading.guard import process_state
from quantdispatch.result import Err

from .ckpt import awq_quantizer, base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(5))


def _logits(model: Any, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(ids).logits.float()
    return out


@pytest.fixture(scope="module")
def gptq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gptq")
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(d, base_model(), config, gptq_quantizer(config))
    return d


@pytest.fixture(scope="module")
def awq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("awq")
    config = qd.AwqGemm(bits=4, group_size=32)
    write_quantized(d, base_model(seed=1), config, awq_quantizer(config))
    return d


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dense")
    base_model(seed=2).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    from tests.gguf_models import T, tiny_model, write_gguf

    return write_gguf(tiny_model("llama"), "llama", tmp_path_factory.mktemp("gguf") / "m.gguf", T.Q4_0)


LoadCall = Callable[[dict[str, Path]], "qd.Result[qd.Loaded, qd.Issues]"]

PATHS: dict[str, LoadCall] = {
    "gptq portable": lambda d: qd.load(d["gptq"], device="cpu", dtype="float32", backend="torch-packed"),
    "gptq planned (bf16 where native)": lambda d: qd.load(d["gptq"], device="cpu"),
    "gptq bfloat16 forced": lambda d: qd.load(d["gptq"], device="cpu", dtype="bfloat16"),
    "gptq dequantized at load": lambda d: qd.load(d["gptq"], device="cpu", dtype="float32", dequantize_at_load=True),
    "gptq private memory": lambda d: qd.load(d["gptq"], device="cpu", dtype="float32", mmap=False),
    "awq": lambda d: qd.load(d["awq"], device="cpu", dtype="float32"),
    "gptqmodel-torch (imports gptqmodel)": lambda d: qd.load(d["gptq"], device="cpu", dtype="float16", backend="gptqmodel-torch"),
    "bnb quantize-on-load": lambda d: qd.load(d["dense"], device="cpu", quantization=qd.Bnb4Bit(quant_type="nf4")),
    "gguf packed": lambda d: qd.load(d["gguf"], device="cpu"),
    "gguf dequantized": lambda d: qd.load(d["gguf"], device="cpu", dtype="bfloat16", dequantize_at_load=True),
    "gguf portable packed": lambda d: qd.load(d["gguf"], device="cpu", backend="torch-gguf-packed", mmap=False),
    "failure: missing source": lambda d: qd.load(d["gptq"] / "nowhere", device="cpu"),
    "failure: bad dtype": lambda d: qd.load(d["gptq"], dtype="int8"),
    "failure: unknown backend": lambda d: qd.load(d["gptq"], device="cpu", backend="no-such-backend"),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_no_load_leaves_process_state_changed(path: str, gptq_dir: Path, awq_dir: Path, dense_dir: Path, gguf_file: Path) -> None:
    """Default dtype and device, nn.Module's methods, torch.nn.init, warning filters and the
    environment are the same after each load path as before it, and a new nn.Linear is an
    ordinary float32 CPU module."""
    if path.startswith("bnb"):
        pytest.importorskip("bitsandbytes")
    if path.startswith("gptqmodel"):
        pytest.importorskip("gptqmodel")
    before = process_state()
    PATHS[path]({"gptq": gptq_dir, "awq": awq_dir, "dense": dense_dir, "gguf": gguf_file})
    after = process_state()
    for field in ("default_dtype", "default_device", "module_methods", "init_functions", "warning_filters", "environ"):
        assert getattr(after, field) == getattr(before, field), field
    probe = torch.nn.Linear(3, 3)
    assert probe.weight.device.type == "cpu" and probe.weight.dtype == torch.float32


def test_state_is_restored_when_a_loader_raises(gptq_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader that dies half-way (here: after setting the default dtype and patching
    nn.Module.register_parameter, as a model build does) leaves nothing behind."""
    import quantdispatch.loading as loading

    def dies(request: object) -> object:
        torch.set_default_dtype(torch.bfloat16)
        torch.nn.Module.register_parameter = lambda self, name, param: None  # type: ignore[method-assign]
        raise RuntimeError("died half-way")

    monkeypatch.setattr(loading, "_resolve_loader", lambda reference: dies)
    before = process_state()
    with pytest.raises(RuntimeError, match="half-way"):
        qd.load(gptq_dir, device="cpu", dtype="float32")
    assert process_state() == before
    assert torch.nn.Linear(2, 2).weight.dtype == torch.float32


def test_concurrent_loads_equal_sequential_ones(gptq_dir: Path, gguf_file: Path) -> None:
    """Four threads loading a bfloat16 and a float32 model at once get the models that loading
    them one after the other gives, and the process is as before."""
    def gptq_bf16() -> Any:
        return qd.load(gptq_dir, device="cpu", dtype="bfloat16", backend="torch-packed")

    def gguf_f32() -> Any:
        return qd.load(gguf_file, device="cpu", dtype="float32")

    calls = [gptq_bf16, gguf_f32, gptq_bf16, gguf_f32]
    sequential = [_logits(c().unwrap().model, IDS % 96) for c in calls[:2]]
    before = process_state()
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert process_state() == before
    for i, found in enumerate(results):
        model = found.unwrap().model
        expected_dtype = torch.bfloat16 if i % 2 == 0 else torch.float32
        assert all(p.dtype == expected_dtype for p in model.parameters() if p.is_floating_point())
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert torch.equal(_logits(model, IDS % 96), sequential[i % 2])


def _rewrite_data(path: Path, header: int) -> None:
    """Overwrite every byte after the first ``header`` bytes, in place (same inode, so a shared
    mapping of the file sees the change)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(header)
        f.write(bytes(size - header))  # zeros: every index stays in range, every weight changes


def _header_bytes_gguf(path: Path) -> int:
    from quantdispatch.gguf.data import open_gguf_data

    data = open_gguf_data(path).unwrap()
    try:
        return int(data.header.data_offset)
    finally:
        data.close()


@pytest.mark.parametrize("mmap", [True, False])
def test_mmap_false_models_never_read_their_file_again(tmp_path: Path, gguf_file: Path, mmap: bool) -> None:
    """Kept packed, a GGUF model reads the file's pages after the load: rewriting the file
    changes its logits (documented). With mmap=False the weights were copied at load: the same
    rewrite changes nothing."""
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_file.read_bytes())
    loaded = qd.load(path, device="cpu", dtype="float32", mmap=mmap).unwrap()
    ids = IDS % 96
    before = _logits(loaded.model, ids)
    _rewrite_data(path, _header_bytes_gguf(path))
    after = _logits(loaded.model, ids)
    assert torch.equal(before, after) is (not mmap)


def test_mmap_false_covers_safetensors_checkpoints(tmp_path: Path, gptq_dir: Path) -> None:
    """GPTQ words and float tensors read in their stored dtype are file-backed too; mmap=False
    copies them, shared tensors stay shared."""
    d = tmp_path / "copy"
    d.mkdir()
    for f in gptq_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    mapped = qd.load(d, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    private = qd.load(d, device="cpu", dtype="float32", backend="torch-packed", mmap=False).unwrap()
    assert not all(t.untyped_storage().resizable() for t in (*mapped.model.parameters(), *mapped.model.buffers()))
    assert all(t.untyped_storage().resizable() for t in (*private.model.parameters(), *private.model.buffers()))
    before = _logits(private.model)
    _rewrite_data(d / "model.safetensors", 8 + int.from_bytes((d / "model.safetensors").read_bytes()[:8], "little"))
    assert torch.equal(_logits(private.model), before)
    assert not torch.equal(_logits(mapped.model), before)


def test_privatize_keeps_shared_tensors_shared() -> None:
    """Two modules viewing the same foreign memory share one copy afterwards."""
    import numpy as np

    from quantdispatch.loading import privatize

    foreign = torch.from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert not foreign.untyped_storage().resizable()
    a, b = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(4, 3, bias=False)
    a.weight = b.weight = torch.nn.Parameter(foreign, requires_grad=False)
    holder = torch.nn.Sequential(a, b)
    assert privatize(holder) == 48
    assert a.weight.untyped_storage().resizable() and a.weight.data_ptr() == b.weight.data_ptr()
    assert torch.equal(a.weight, torch.arange(12, dtype=torch.float32).reshape(3, 4))


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"source": 42}, "$.source"),
    ({"device": 0}, "$.device"),
    ({"dtype": torch.float32}, "$.dtype"),
    ({"quantization": {"quant_method": "gptq"}}, "$.quantization"),
    ({"backend": ["torch-packed"]}, "$.backend"),
    ({"device_map": {"model": 1.5}}, "$.device_map"),
    ({"device_map": {"model": True}}, "$.device_map"),
    ({"max_memory": {"cpu": -1}}, "$.max_memory"),
    ({"max_memory": ["cpu"]}, "$.max_memory"),
    ({"offload_folder": 3}, "$.offload_folder"),
    ({"trust_remote_code": "yes"}, "$.trust_remote_code"),
    ({"allow_pickle": 1}, "$.allow_pickle"),
    ({"dequantize_at_load": None}, "$.dequantize_at_load"),
    ({"mmap": "no"}, "$.mmap"),
    ({"progress": "print"}, "$.progress"),
]


@pytest.mark.parametrize("kwargs,path", BAD_ARGUMENTS, ids=[p for _, p in BAD_ARGUMENTS])
def test_every_argument_is_type_checked_before_any_file_is_read(kwargs: dict[str, Any], path: str, gptq_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong-typed argument is a load.argument.type issue at its path; no file is opened."""
    import quantdispatch.loading as loading

    def no_reading(*args: object, **kw: object) -> object:
        raise AssertionError("a file was read before the arguments were checked")

    monkeypatch.setattr(loading, "resolve_source", no_reading)
    monkeypatch.setattr(loading, "gguf_source", no_reading)
    call: dict[str, Any] = {"source": gptq_dir, **kwargs}
    found = qd.load(**call)
    assert isinstance(found, Err)
    assert [(i.code, i.path) for i in found.error] == [("load.argument.type", path)]


def test_all_wrong_arguments_are_reported_at_once(gptq_dir: Path) -> None:
    found = qd.load(gptq_dir, device=1, mmap="x", backend=2)  # type: ignore[arg-type]
    assert isinstance(found, Err) and {i.path for i in found.error} == {"$.device", "$.mmap", "$.backend"}


@pytest.mark.parametrize("source", ["/tmp/" + "a" * 5000, "/etc/passwd/child", "a" * 300 + "/" + "b" * 300])
def test_unusable_source_paths_are_issues(source: str) -> None:
    """A path too long for the OS, under a file, or a Hub id too long: an issue, not an OSError."""
    found = qd.load(source, device="cpu")
    assert isinstance(found, Err) and found.error[0].code in ("file.unreadable", "file.missing", "load.source.invalid")


def test_a_progress_callback_that_raises_propagates_and_leaves_nothing_behind(gptq_dir: Path) -> None:
    """The caller's own exception is the caller's: it propagates, and the process state is restored."""
    def boom(done: int, total: int) -> None:
        raise KeyError("from the caller")

    before = process_state()
    with pytest.raises(KeyError, match="from the caller"):
        qd.load(gptq_dir, device="cpu", dtype="float32", progress=boom)
    assert process_state() == before


def test_a_fifo_as_source_is_not_regular_and_never_opened(tmp_path: Path) -> None:
    """A FIFO named like a GGUF file (or not) is refused by its kind, without opening it (no hang)."""
    import os

    for name in ("m.gguf", "model"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        found = qd.load(fifo, device="cpu")
        assert isinstance(found, Err) and [i.code for i in found.error] == ["file.not_regular"]
