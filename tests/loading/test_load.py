"""qd.load on checkpoints written during the test: every GPTQ and AWQ variant loads, and its
logits equal those of a float model holding the dequantized weights; bad checkpoints give coded
issues and no model."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

import quantdispatch as qd
from quantdispatch.kernels.modules import GptqLinear

from .ckpt import awq_quantizer, base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))


def _codes(r: object) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits
    return out


GPTQ_CASES = [
    (qd.Gptq(bits=4, group_size=32), False),
    (qd.GptqV2(bits=4, group_size=32), False),
    (qd.Gptq(bits=2, group_size=64, sym=False), False),
    (qd.Gptq(bits=3, group_size=32, desc_act=True), True),
    (qd.GptqV2(bits=8, group_size=-1), False),
    (qd.Gptq(bits=4, group_size=128, desc_act=True, sym=False), True),
]


@pytest.mark.parametrize("config,act_order", GPTQ_CASES, ids=lambda c: repr(c)[:40] if not isinstance(c, bool) else str(c))
def test_gptq_variants_load_exactly(tmp_path: Path, config: qd.AbstractGptq, act_order: bool) -> None:
    """2/3/4/8 bits, v1/v2, sym/asym, act-order, group -1: the loaded model's float32 logits equal
    a dense model holding the dequantized weights (exact), far inside the quantization error."""
    model = base_model()
    reference = write_quantized(tmp_path, model, config, gptq_quantizer(config, act_order))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()  # the portable kernel: exact in float32
    got = loaded.plan.config
    assert loaded.plan.backend.name == "torch-packed" and isinstance(got, type(config))
    assert (got.bits, got.group_size, got.sym, got.desc_act) == (config.bits, config.group_size, config.sym, config.desc_act)
    assert not loaded.model.training
    assert all(t.device.type == "cpu" for t in (*loaded.model.parameters(), *loaded.model.buffers()))
    ours = _logits(loaded.model)
    assert torch.allclose(ours, _logits(reference), atol=1e-5, rtol=0)
    assert (ours - _logits(model)).abs().max() > 1e-4  # the quantization error is real, and much larger
    assert loaded.stats.bytes_read == loaded.stats.bytes_on_disk > 0
    # counted as the dense model has them: packed words are buffers, not parameters
    assert loaded.stats.parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", [qd.AwqGemm(group_size=32), qd.AwqGemv(group_size=64), qd.AwqGemvFast(group_size=32),
                                    qd.AwqGemm(group_size=64, zero_point=False)], ids=lambda c: type(c).__name__)
def test_awq_packings_load_exactly(tmp_path: Path, config: qd.AbstractAwq) -> None:
    """GEMM, GEMV and GEMV_FAST checkpoints load on the CPU with exact logits."""
    if isinstance(config, qd.AwqGemm) and not config.zero_point:
        pytest.skip("AutoAWQ writes zero points for GEMM; symmetric GEMM is not a format real tools produce")
    model = base_model()
    reference = write_quantized(tmp_path, model, config, awq_quantizer(config))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert loaded.plan.backend.name == "torch-packed"
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)


def test_sharded_checkpoint_and_stray_files(tmp_path: Path) -> None:
    """Shards named by the index load as one model; another .safetensors file beside them is not read."""
    config = qd.GptqV2(bits=4, group_size=32)
    model = base_model()
    reference = write_quantized(tmp_path, model, config, gptq_quantizer(config), shards=3)
    (tmp_path / "consolidated.safetensors").write_bytes(b"garbage, never read")
    loaded = qd.load(str(tmp_path), device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)


def test_tied_embeddings(tmp_path: Path) -> None:
    """A checkpoint with tied input/output embeddings stores one matrix; the head is tied to it."""
    config = qd.Gptq(bits=4, group_size=32)
    model = base_model(tie=True)
    reference = write_quantized(tmp_path, model, config, gptq_quantizer(config))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap().model
    head, embed = loaded.get_submodule("lm_head"), loaded.get_submodule("model.embed_tokens")
    assert isinstance(head, torch.nn.Linear) and isinstance(embed, torch.nn.Embedding)
    assert head.weight.data_ptr() == embed.weight.data_ptr()
    assert torch.allclose(_logits(loaded), _logits(reference), atol=1e-5, rtol=0)


def test_unwrap_raises_with_every_issue(tmp_path: Path) -> None:
    """The raising one-liner: Err.unwrap() raises IssuesError listing the issues."""
    with pytest.raises(qd.IssuesError, match="file.missing"):
        qd.load(tmp_path / "nowhere").unwrap()


# ----------------------------------------------------------------------------- bad checkpoints
@pytest.fixture
def good(tmp_path: Path) -> Path:
    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(tmp_path / "m", base_model(), config, gptq_quantizer(config))
    return tmp_path / "m"


def _tensors(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))


def _save(d: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(d / "model.safetensors"))


def test_missing_tensor(good: Path) -> None:
    t = _tensors(good)
    del t["model.layers.1.mlp.down_proj.scales"]
    _save(good, t)
    r = qd.load(good, device="cpu")
    assert _codes(r) == ["load.tensor.missing"] and isinstance(r, qd.Err) and "down_proj.scales" in r.error[0].message


def test_unexpected_tensor(good: Path) -> None:
    t = _tensors(good)
    t["model.layers.0.extra.weight"] = torch.zeros(2)
    _save(good, t)
    assert _codes(qd.load(good, device="cpu")) == ["load.tensor.unexpected"]


def test_misshaped_tensor(good: Path) -> None:
    t = _tensors(good)
    t["model.norm.weight"] = torch.zeros(7)
    _save(good, t)
    r = qd.load(good, device="cpu")
    assert _codes(r) == ["load.tensor.shape"] and isinstance(r, qd.Err) and "model.safetensors" in r.error[0].message


def test_config_says_8_bits_over_4_bit_tensors(good: Path) -> None:
    """A config that disagrees with the tensors' packing (bits, group size) is a shape issue per layer."""
    doc = json.loads((good / "config.json").read_text())
    doc["quantization_config"]["bits"] = 8
    (good / "config.json").write_text(json.dumps(doc))
    assert set(_codes(qd.load(good, device="cpu"))) == {"load.tensor.shape"}
    doc["quantization_config"]["bits"], doc["quantization_config"]["group_size"] = 4, 64
    (good / "config.json").write_text(json.dumps(doc))
    assert set(_codes(qd.load(good, device="cpu"))) == {"load.tensor.shape"}


def test_truncated_and_hostile_safetensors(good: Path) -> None:
    """A truncated file, a header claiming more than the file, offsets past the end: issues, no model."""
    path = good / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _codes(qd.load(good, device="cpu"))[0] in ("safetensors.tensor.out_of_bounds", "safetensors.tensor.size")
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    assert _codes(qd.load(good, device="cpu")) == ["safetensors.header.size"]
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    assert _codes(qd.load(good, device="cpu")) == ["safetensors.tensor.out_of_bounds"]
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                         "y": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(24))
    assert _codes(qd.load(good, device="cpu")) == ["safetensors.tensor.overlap"]
    path.write_bytes(b"\x01")
    assert _codes(qd.load(good, device="cpu")) == ["safetensors.truncated"]


def test_weights_as_fifo_or_missing(good: Path) -> None:
    (good / "model.safetensors").unlink()
    assert _codes(qd.load(good, device="cpu")) == ["load.weights.missing"]
    os.mkfifo(good / "model.safetensors")
    assert _codes(qd.load(good, device="cpu")) == ["file.not_regular"]


def test_pickled_weights_are_refused(good: Path) -> None:
    (good / "model.safetensors").unlink()
    (good / "pytorch_model.bin").write_bytes(b"not even a pickle")
    r = qd.load(good, device="cpu")
    assert _codes(r) == ["load.pickle.refused"] and isinstance(r, qd.Err) and r.error[0].hint


def test_remote_code_is_refused(good: Path) -> None:
    doc = json.loads((good / "config.json").read_text())
    doc.update(model_type="my_secret_arch", auto_map={"AutoConfig": "modeling.MyConfig"})
    (good / "config.json").write_text(json.dumps(doc))
    assert _codes(qd.load(good, device="cpu")) == ["load.remote_code.refused"]


def test_unquantized_and_hub_ids(tmp_path: Path) -> None:
    """An unquantized checkpoint without a config to apply, and a Hub id not in the offline cache."""
    base_model().save_pretrained(tmp_path / "plain")
    assert _codes(qd.load(tmp_path / "plain")) == ["load.not_quantized"]
    assert _codes(qd.load("nobody/nothing-here-4bit")) == ["load.hub.not_cached"]
    assert _codes(qd.load(tmp_path / "plain", dtype="int8")) == ["load.dtype.invalid"]


def test_device_map_with_cpu_and_disk_offload(tmp_path: Path) -> None:
    """device_map through accelerate: modules on "disk" (packed buffers included) give the same logits."""
    config = qd.GptqV2(bits=4, group_size=32)
    model = base_model()
    reference = write_quantized(tmp_path / "m", model, config, gptq_quantizer(config))
    offload = tmp_path / "offload"
    mapped = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
              "model.rotary_emb": "cpu", "lm_head": "disk"}
    loaded = qd.load(tmp_path / "m", dtype="float32", device_map=mapped, offload_folder=offload, backend="torch-packed").unwrap()
    assert any(p.device.type == "meta" for p in loaded.model.parameters())  # on disk until a forward needs them
    assert any(offload.iterdir())
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)
    auto = qd.load(tmp_path / "m", dtype="float32", device_map="auto", max_memory={"cpu": 300_000, "disk": 10**9}, offload_folder=tmp_path / "o2",
                   backend="torch-packed").unwrap()
    assert torch.allclose(_logits(auto.model), _logits(reference), atol=1e-5, rtol=0)
    assert _codes(qd.load(tmp_path / "m", device_map={"nope": "cpu"})) == ["load.device_map.module"]
    assert _codes(qd.load(tmp_path / "m", device_map={"": "disk"})) == ["load.device_map.offload_folder"]


def test_hub_repository_id_from_a_cache_the_test_populates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id resolves through huggingface_hub's cache layout, offline, without a network."""
    config = qd.Gptq(bits=4, group_size=32)
    model = base_model()
    reference = write_quantized(tmp_path / "src", model, config, gptq_quantizer(config))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-gptq"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in (tmp_path / "src").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = qd.load("someone/tiny-gptq", device="cpu", dtype="float32", backend="torch-packed").unwrap()
    assert loaded.directory == snapshot
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)


def test_dtype_auto_follows_the_checkpoint(tmp_path: Path) -> None:
    """dtype='auto' takes config.json's dtype, as Transformers 5 does, and the plan says so."""
    config = qd.GptqV2(bits=4, group_size=32)
    write_quantized(tmp_path, base_model(), config, gptq_quantizer(config))
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["dtype"] = "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(doc))
    loaded = qd.load(tmp_path, device="cpu").unwrap()
    assert loaded.plan.dtype is qd.DType.BFLOAT16 and any("the checkpoint's" in n for n in loaded.plan.notes)
    assert loaded.model.get_submodule("model.norm").weight.dtype == torch.bfloat16
    forced = qd.load(tmp_path, device="cpu", dtype="float32").unwrap()
    assert forced.plan.dtype is qd.DType.FLOAT32


def test_pickled_weights_load_only_when_allowed(tmp_path: Path) -> None:
    """A .bin checkpoint: refused by default; with allow_pickle, read with weights_only=True and loaded."""
    from safetensors.torch import load_file

    config = qd.Gptq(bits=4, group_size=32)
    model = base_model()
    reference = write_quantized(tmp_path, model, config, gptq_quantizer(config))
    torch.save(load_file(str(tmp_path / "model.safetensors")), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    assert _codes(qd.load(tmp_path, device="cpu")) == ["load.pickle.refused"]
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed", allow_pickle=True).unwrap()
    assert torch.allclose(_logits(loaded.model), _logits(reference), atol=1e-5, rtol=0)
    import pickle

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": object()}))
    assert _codes(qd.load(tmp_path, device="cpu", allow_pickle=True)) == ["load.pickle.invalid"]


def _drop_g_idx(directory: Path) -> int:
    """Rewrite the checkpoint without its ``g_idx`` tensors, as GPTQ-for-LLaMa wrote them before act-order."""
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    kept = {k: v for k, v in tensors.items() if not k.endswith(".g_idx")}
    save_file(kept, str(path))
    return len(tensors) - len(kept)


@pytest.mark.parametrize("backend", ["torch-packed", "cpu-dense"])
def test_gptq_without_g_idx_loads_with_the_trivial_one(tmp_path: Path, backend: str) -> None:
    """A checkpoint without g_idx tensors (desc_act false) loads: each layer computes k // group_size,
    and the logits equal those of the same checkpoint with its g_idx."""
    config = qd.Gptq(bits=8, group_size=32, sym=False)
    write_quantized(tmp_path / "full", base_model(), config, gptq_quantizer(config))
    write_quantized(tmp_path / "bare", base_model(), config, gptq_quantizer(config))
    assert _drop_g_idx(tmp_path / "bare") == 14
    full = qd.load(tmp_path / "full", device="cpu", backend=backend).unwrap()
    bare = qd.load(tmp_path / "bare", device="cpu", backend=backend).unwrap()
    assert torch.equal(_logits(full.model), _logits(bare.model))
    if backend == "torch-packed":
        layer = bare.model.get_submodule("model.layers.1.mlp.down_proj")
        assert isinstance(layer, GptqLinear) and torch.equal(layer.g_idx, torch.arange(256, dtype=torch.int32) // 32)


def test_gptq_act_order_without_g_idx_is_refused(tmp_path: Path) -> None:
    """With desc_act true the permutation cannot be guessed: each missing g_idx is an issue."""
    config = qd.Gptq(bits=4, group_size=32, desc_act=True)
    write_quantized(tmp_path, base_model(), config, gptq_quantizer(config, act_order=True))
    _drop_g_idx(tmp_path)
    found = qd.load(tmp_path, device="cpu", backend="torch-packed")
    assert _codes(found) == ["load.tensor.missing"] * 14
    assert isinstance(found, qd.Err) and all(i.path.endswith(".g_idx']") for i in found.error)
