"""Checkpoints that lie, through qd.load on the streamed (GPTQ, AWQ) path: each is a coded issue
and no model, never an exception out of ``load`` and never a model that fails at its first forward.

Index tensors out of range, non-finite scales, shard files that disagree with their index, layer
shapes the packing cannot hold, a file rewritten between its header check and its read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import quantdispatch as qd
from quantdispatch.codec import dump
from quantdispatch.kernels.modules import GptqLinear

from .ckpt import awq_quantizer, base_model, gptq_quantizer, write_quantized

torch.set_num_threads(1)
IDS = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(5))
LAYER = "model.layers.1.mlp.down_proj"


def _codes(r: object) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


def _edit(directory: Path, change: dict[str, torch.Tensor | None], file: str = "model.safetensors") -> None:
    """Rewrite one weight file with some tensors replaced (``None``: removed)."""
    tensors = load_file(str(directory / file))
    for name, value in change.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, str(directory / file))


def _config(directory: Path, **changes: object) -> None:
    doc = json.loads((directory / "config.json").read_text())
    doc.update(changes)
    (directory / "config.json").write_text(json.dumps(doc))


@pytest.fixture
def gptq(tmp_path: Path) -> Path:
    config = qd.Gptq(bits=4, group_size=32, desc_act=True)
    write_quantized(tmp_path / "g", base_model(), config, gptq_quantizer(config, act_order=True))
    return tmp_path / "g"


# ----------------------------------------------------------------------------- index tensors
GPTQ_BACKENDS = ["torch-packed", "cpu-int4", "cpu-q4", "gptqmodel-torch"]


def _dtype(backend: str) -> str:
    """float32 where the backend runs it (no numbers are compared across backends here)."""
    return "bfloat16" if backend == "gptqmodel-torch" else "float32"


@pytest.mark.parametrize("backend", GPTQ_BACKENDS)
@pytest.mark.parametrize("bad", [1000, 8, -1])
def test_g_idx_out_of_range_is_refused_before_any_repack(gptq: Path, backend: str, bad: int) -> None:
    """down_proj has in_features 256 and group size 32: 8 groups. A g_idx of 1000 used to load and
    raise IndexError at the first forward; -1 loaded and silently used the last group. Both, and 8
    (one past the end), are a coded issue naming the tensor, its position and its file, whatever
    backend repacks the layers afterwards."""
    g_idx = load_file(str(gptq / "model.safetensors"))[f"{LAYER}.g_idx"].clone()
    g_idx[7] = bad
    _edit(gptq, {f"{LAYER}.g_idx": g_idx})
    found = qd.load(gptq, device="cpu", dtype=_dtype(backend), backend=backend)
    if isinstance(found, qd.Err) and found.error[0].code in ("load.loader.unavailable", "load.gptqmodel.import"):
        pytest.skip(found.error[0].message)
    assert _codes(found) == ["load.tensor.range"]
    assert isinstance(found, qd.Err)
    issue = found.error[0]
    assert issue.path == f"$.tensors['{LAYER}.g_idx']"
    assert f"'{LAYER}.g_idx'[7]" in issue.message and "model.safetensors" in issue.message and "[0, 7]" in issue.message


def test_g_idx_in_range_still_loads_and_group_minus_one_has_one_group(tmp_path: Path) -> None:
    """The check is exact at the bounds: group -1 means one group, so g_idx must be all zeros;
    the written checkpoint (all zeros) loads, a single 1 does not."""
    config = qd.GptqV2(bits=8, group_size=-1)
    write_quantized(tmp_path, base_model(), config, gptq_quantizer(config))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap()
    layer = loaded.model.get_submodule(LAYER)
    assert isinstance(layer, GptqLinear) and layer.indexes == {"g_idx": ("scales", 1)}
    g_idx = torch.zeros(256, dtype=torch.int32)
    g_idx[255] = 1
    _edit(tmp_path, {f"{LAYER}.g_idx": g_idx})
    assert _codes(qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed")) == ["load.tensor.range"]


def _phi3_split(directory: Path, change: dict[str, torch.Tensor]) -> None:
    """A Phi-3 checkpoint whose fused gate_up_proj is stored as GPTQ gate_proj + up_proj parts
    (as GPTQModel writes it), with some tensors replaced."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    phi = Phi3ForCausalLM(Phi3Config(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                                     num_key_value_heads=4, vocab_size=256, max_position_embeddings=128, pad_token_id=0)).eval()
    config = qd.Gptq(bits=4, group_size=32)
    quantize = gptq_quantizer(config)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in phi.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("gate_up_proj.weight"):
            prefix = module.rsplit(".", 1)[0]
            for part, rows in (("gate_proj", t[:256]), ("up_proj", t[256:])):
                tensors.update((f"{prefix}.{part}.{k}", v.contiguous()) for k, v in quantize(part, rows).tensors.items())
        elif name.endswith("proj.weight") and ".layers." in name:
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in quantize(module, t).tensors.items())
        else:
            tensors[name] = t.contiguous()
    tensors.update(change)
    directory.mkdir(exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    doc = phi.config.to_dict()
    doc["quantization_config"] = dump(config, style="transformers")
    (directory / "config.json").write_text(json.dumps(doc))


def test_g_idx_of_a_split_projection_names_the_stored_tensor(tmp_path: Path) -> None:
    """A fused projection stored as parts: the split layout loads, and a bad g_idx in a part is
    named as the checkpoint spells it."""
    _phi3_split(tmp_path / "ok", {})
    qd.load(tmp_path / "ok", device="cpu", dtype="float32", backend="torch-packed").unwrap()
    _phi3_split(tmp_path / "bad", {"model.layers.0.mlp.up_proj.g_idx": torch.full((128,), 9, dtype=torch.int32)})
    found = qd.load(tmp_path / "bad", device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.range"]
    assert isinstance(found, qd.Err) and found.error[0].path == "$.tensors['model.layers.0.mlp.up_proj.g_idx']"


@pytest.mark.parametrize("scales", [torch.tensor(1.0, dtype=torch.float16), torch.zeros(4, 0, dtype=torch.float16)],
                         ids=["scalar", "zero-width"])
def test_split_parts_with_scales_of_the_wrong_shape_do_not_crash(tmp_path: Path, scales: torch.Tensor) -> None:
    """A part whose scales are a scalar used to raise IndexError while the modules were built
    (``shape[-1]`` of a 0-d tensor); one of width 0 built a zero-width module. Now neither is taken
    as a split and the tensors are coded issues."""
    _phi3_split(tmp_path, {"model.layers.0.mlp.up_proj.scales": scales})
    codes = _codes(qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed"))
    assert "load.tensor.unexpected" in codes and "load.tensor.missing" in codes


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_scales_are_refused(gptq: Path, value: float) -> None:
    """One NaN or infinite scale made every output of its layer NaN; now it is a coded issue."""
    scales = load_file(str(gptq / "model.safetensors"))[f"{LAYER}.scales"].clone()
    scales[3, 5] = value
    _edit(gptq, {f"{LAYER}.scales": scales})
    found = qd.load(gptq, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.not_finite"]
    assert isinstance(found, qd.Err) and f"'{LAYER}.scales'[3][5]" in found.error[0].message


def test_awq_scales_are_checked_too(tmp_path: Path) -> None:
    config = qd.AwqGemm(group_size=32)
    write_quantized(tmp_path, base_model(), config, awq_quantizer(config))
    scales = load_file(str(tmp_path / "model.safetensors"))[f"{LAYER}.scales"].clone()
    scales[0, 0] = float("-inf")
    _edit(tmp_path, {f"{LAYER}.scales": scales})
    assert _codes(qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed")) == ["load.tensor.not_finite"]


# ----------------------------------------------------------------------------- shards and their index
@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    config = qd.GptqV2(bits=4, group_size=32)
    write_quantized(tmp_path / "s", base_model(), config, gptq_quantizer(config), shards=2)
    return tmp_path / "s"


SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def test_a_shard_tensor_the_index_does_not_list_is_unexpected(sharded: Path) -> None:
    """As in a single file: a stray tensor is load.tensor.unexpected (it used to be ignored)."""
    _edit(sharded, {"model.layers.0.extra.weight": torch.zeros(4)}, SHARD1)
    found = qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.unexpected"]
    assert isinstance(found, qd.Err) and SHARD1 in found.error[0].message


def test_a_shard_may_still_hold_a_buffer_the_model_recomputes(sharded: Path) -> None:
    """The single-file rule applies unchanged: an old rotary inv_freq buffer is ignored."""
    _edit(sharded, {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(16)}, SHARD2)
    qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed").unwrap()


def test_a_tensor_in_two_shards_is_refused(sharded: Path) -> None:
    """The index puts a tensor in one shard; another shard holds it too (with other values): which
    copy Transformers or we would read is not the checkpoint's to leave open."""
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    name = next(n for n, f in index.items() if f == SHARD1)
    _edit(sharded, {name: torch.zeros_like(load_file(str(sharded / SHARD1))[name])}, SHARD2)
    found = qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.duplicate"]


def test_an_unlisted_tensor_in_two_shards_is_refused(sharded: Path) -> None:
    for shard in (SHARD1, SHARD2):
        _edit(sharded, {"stray": torch.zeros(2)}, shard)
    assert "load.tensor.duplicate" in _codes(qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed"))


def test_an_index_naming_a_tensor_twice_is_refused(sharded: Path) -> None:
    """Duplicate JSON keys (the last would silently win in Python's json) are refused."""
    path = sharded / "model.safetensors.index.json"
    text = path.read_text()
    first = next(iter(json.loads(text)["weight_map"]))
    path.write_text(text.replace('"weight_map": {', f'"weight_map": {{"{first}": "{SHARD2}", ', 1))
    assert _codes(qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed"))[0].startswith("json.")


def test_a_shard_rewritten_between_check_and_read(sharded: Path) -> None:
    """The second shard changes after the headers were checked (here: from the progress callback
    after the first file): a changed header is load.file.changed or the header check's own issue,
    never "changed or vanished" for a file that is there, and never a model."""
    saved = {f: load_file(str(sharded / f)) for f in (SHARD1, SHARD2)}

    def reshaped(done: int, total: int) -> None:
        if done == 1:  # both shards (one is read already): a scale with the same bytes and another shape
            for file, tensors in saved.items():
                name = sorted(n for n in tensors if n.endswith(".scales"))[0]
                save_file({**tensors, name: tensors[name].reshape(-1)}, str(sharded / file))

    found = qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed", progress=reshaped)
    assert _codes(found) == ["load.file.changed"]
    assert isinstance(found, qd.Err) and "was checked as F16[" in found.error[0].message

    for file, tensors in saved.items():
        save_file(tensors, str(sharded / file))

    def truncated(done: int, total: int) -> None:
        if done == 1:
            for file in saved:
                data = (sharded / file).read_bytes()
                (sharded / file).write_bytes(data[: len(data) - 100])

    found = qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed", progress=truncated)
    codes = _codes(found)
    assert codes and all(c.startswith("safetensors.") for c in codes)
    assert isinstance(found, qd.Err) and all(i.hint == "the file changed after its header was checked" for i in found.error)


# ----------------------------------------------------------------------------- shapes the packing cannot hold
@pytest.mark.parametrize("config,backend,intermediate", [
    (qd.Gptq(bits=4, group_size=32), "torch-packed", 252),        # 4-bit packs 8 values a word: 252 % 8
    (qd.Gptq(bits=3, group_size=32), "torch-packed", 240),        # 3-bit packs 32 values in 3 words: 240 % 32
    (qd.Gptq(bits=4, group_size=32), "cpu-int4", 252),
    (qd.Gptq(bits=4, group_size=32), "gptqmodel-torch", 252),
    (qd.AwqGemm(group_size=32), "torch-packed", 252),             # out_features % 8, in_features % group size
    (qd.AwqGemvFast(group_size=32), "torch-packed", 224),         # GEMV_FAST packs runs of 64 input columns
    (qd.AwqGemv(group_size=32), "cpu-int4", 244),
], ids=lambda v: repr(v)[:30])
def test_layer_shapes_the_packing_cannot_hold_are_issues(tmp_path: Path, config: qd.AbstractQuantConfig, backend: str,
                                                         intermediate: int) -> None:
    """config.json's intermediate size says the MLP layers are a shape the packing cannot store:
    building the quantized modules used to raise ValueError out of load; now each layer is a
    load.layer.shape issue naming it."""
    quantize = gptq_quantizer(config) if isinstance(config, qd.AbstractGptq) else awq_quantizer(config)  # type: ignore[arg-type]
    write_quantized(tmp_path, base_model(), config, quantize)
    _config(tmp_path, intermediate_size=intermediate)
    found = qd.load(tmp_path, device="cpu", dtype=_dtype(backend), backend=backend)
    if isinstance(found, qd.Err) and found.error[0].code in ("load.loader.unavailable", "load.gptqmodel.import"):
        pytest.skip(found.error[0].message)
    codes = _codes(found)
    assert set(codes) == {"load.layer.shape"}
    assert isinstance(found, qd.Err) and any("'model.layers.0.mlp.down_proj'" in i.message for i in found.error)


@pytest.mark.parametrize("backend", ["cpu-int4", "cpu-q4"])
def test_layers_the_cpu_kernels_cannot_take_keep_the_portable_module(tmp_path: Path, backend: str) -> None:
    """An intermediate size of 248 (a multiple of 8, so 4-bit GPTQ packs it, but not of 16 or 32):
    the MLP layers are shapes the int4 kernels cannot take, and keep the portable module, as the
    plan says; the load succeeds and the logits are the dequantized model's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .ckpt import CONFIG

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**CONFIG.to_dict(), "intermediate_size": 248})).eval()
    config = qd.Gptq(bits=4, group_size=32)
    reference = write_quantized(tmp_path, model, config, gptq_quantizer(config))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend=backend).unwrap()
    assert isinstance(loaded.model.get_submodule(LAYER), GptqLinear)
    assert not isinstance(loaded.model.get_submodule("model.layers.1.self_attn.q_proj"), GptqLinear)
    with torch.no_grad():
        assert torch.allclose(loaded.model(IDS).logits, reference(IDS).logits, atol=0.05)


def test_a_repack_that_raises_is_an_issue(gptq: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: whatever a kernel's prepare raises (shape rules it should have checked
    first) comes back as load.repack.failed, not out of load."""
    from quantdispatch.backends import cpu_int4

    def broken(module: torch.nn.Module, layout: object, dtype: torch.dtype) -> torch.nn.Module | None:
        raise ValueError("Int4Linear cannot take this layer")

    monkeypatch.setattr(cpu_int4, "prepare_int4", broken)
    assert _codes(qd.load(gptq, device="cpu", dtype="float32", backend="cpu-int4")) == ["load.repack.failed"]


def test_a_shard_named_twice_under_two_names_is_refused(sharded: Path) -> None:
    """The index splits the tensors between two names that are one file (a hard link): each name
    holds the other's tensors too, so every tensor is in two shards."""
    import os

    (sharded / SHARD2).unlink()
    os.link(sharded / SHARD1, sharded / SHARD2)
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    names = sorted(load_file(str(sharded / SHARD1)))
    index["weight_map"] = {n: (SHARD1 if i % 2 else SHARD2) for i, n in enumerate(names)}
    index_path.write_text(json.dumps(index))
    codes = _codes(qd.load(sharded, device="cpu", dtype="float32", backend="torch-packed"))
    assert "load.tensor.duplicate" in codes


@pytest.mark.parametrize("tensor,value", [
    ("qweight", lambda t: t.to(torch.float32)),      # same shape, float bits read as packed codes
    ("g_idx", lambda t: t.to(torch.int64)),          # same values, twice the bytes
    ("qzeros", lambda t: t.view(torch.float32)),     # same bytes, another dtype
    ("scales", lambda t: t.to(torch.int16)),         # integer scales
], ids=["qweight-f32", "g_idx-i64", "qzeros-f32", "scales-i16"])
def test_dtype_lies_are_refused(gptq: Path, tensor: str, value: object) -> None:
    """A tensor of the right shape in a dtype the layout does not read: load.tensor.dtype."""
    assert callable(value)
    t = load_file(str(gptq / "model.safetensors"))[f"{LAYER}.{tensor}"]
    _edit(gptq, {f"{LAYER}.{tensor}": value(t)})
    found = qd.load(gptq, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.dtype"]


# ----------------------------------------------------------------------------- the safetensors files themselves
def test_a_weight_file_with_trailing_bytes_is_refused_at_the_header(gptq: Path) -> None:
    """A file the safetensors library would refuse (bytes after the last tensor) is refused by the
    header check with the reason, not later as "the file changed or vanished"."""
    with (gptq / "model.safetensors").open("ab") as f:
        f.write(bytes(8))
    assert _codes(qd.load(gptq, device="cpu", dtype="float32", backend="torch-packed")) == ["safetensors.data.trailing"]


def test_a_file_the_library_refuses_after_our_check_accepted_it(gptq: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the two readers ever to disagree, the library's refusal is load.file.refused quoting
    it (the header, checked again, is unchanged), not "the file changed or vanished"."""
    import safetensors

    def refuse(path: str, framework: str) -> object:
        raise safetensors.SafetensorError("Error while deserializing header: invented for the test")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    found = qd.load(gptq, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.file.refused"]
    assert isinstance(found, qd.Err) and "invented for the test" in found.error[0].message


def test_a_weight_file_that_vanishes_during_the_read(gptq: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real OS error while reading keeps its own code and hint."""
    import safetensors

    def vanish(path: str, framework: str) -> object:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(safetensors, "safe_open", vanish)
    found = qd.load(gptq, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.file.unreadable"]
    assert isinstance(found, qd.Err) and found.error[0].hint == "the file changed or vanished while it was read"


def test_awq_gemv_fast_scaled_zeros_are_checked(tmp_path: Path) -> None:
    """GEMV_FAST stores scaled zero points as floats (added to every weight of the group): a NaN
    there is as bad as one in the scales."""
    config = qd.AwqGemvFast(group_size=32)
    write_quantized(tmp_path, base_model(), config, awq_quantizer(config))
    qzeros = load_file(str(tmp_path / "model.safetensors"))[f"{LAYER}.qzeros"].clone()
    qzeros[1, 2] = float("nan")
    _edit(tmp_path, {f"{LAYER}.qzeros": qzeros})
    found = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed")
    assert _codes(found) == ["load.tensor.not_finite"]
    assert isinstance(found, qd.Err) and f"'{LAYER}.qzeros'[1][2]" in found.error[0].message


@pytest.mark.parametrize("config", [qd.AwqGemm(group_size=32), qd.AwqGemv(group_size=64), qd.AwqGemvFast(group_size=32),
                                    qd.Gptq(bits=3, group_size=32, desc_act=True), qd.GptqV2(bits=8, group_size=-1)],
                         ids=lambda c: repr(c)[:24])
def test_the_checks_pass_what_the_writers_write(tmp_path: Path, config: qd.AbstractQuantConfig) -> None:
    """The new checks (index ranges, finite scales and GEMV_FAST zeros, shard coverage) accept
    every layout the writers produce, padding included, with float32 logits equal to the
    dequantized model's."""
    quantize = gptq_quantizer(config, act_order=True) if isinstance(config, qd.AbstractGptq) else awq_quantizer(config)  # type: ignore[arg-type]
    reference = write_quantized(tmp_path, base_model(), config, quantize, shards=2)
    backend = "torch-packed" if isinstance(config, qd.AbstractGptq) else "torch-packed"
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend=backend).unwrap()
    with torch.no_grad():
        assert torch.allclose(loaded.model(IDS).logits, reference(IDS).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["torch-packed", "cpu-int4", "gptqmodel-torch"])
def test_a_quantized_head_in_a_tied_model_never_raises(tmp_path: Path, backend: str) -> None:
    """The config ties the embeddings but the checkpoint stores lm_head quantized: every backend
    uses the stored head (with GPTQModel's TorchLinear, Transformers' tying used to raise KeyError
    out of load: there is no dense weight to tie, so none is tied)."""
    from quantdispatch.testing import quantize_gptq

    config = qd.Gptq(bits=4, group_size=32)
    model = base_model(tie=True)
    write_quantized(tmp_path, model, config, gptq_quantizer(config))
    head = quantize_gptq(model.lm_head.weight.detach(), config)
    _edit(tmp_path, {f"lm_head.{k}": v.contiguous() for k, v in head.tensors.items()})
    found = qd.load(tmp_path, device="cpu", dtype=_dtype(backend), backend=backend)
    if isinstance(found, qd.Err) and found.error[0].code in ("load.loader.unavailable", "load.gptqmodel.import"):
        pytest.skip(found.error[0].message)
    assert isinstance(found, qd.Ok)
    assert "lm_head.weight" not in dict(found.value.model.named_parameters())
    with torch.no_grad():
        logits = found.value.model(IDS).logits
    assert logits.shape == (1, 8, 256) and bool(torch.isfinite(logits).all())


def test_tied_embeddings_are_still_tied(tmp_path: Path) -> None:
    """The usual case is unchanged: no lm_head in the checkpoint, the head shares the embedding."""
    config = qd.Gptq(bits=4, group_size=32)
    reference = write_quantized(tmp_path, base_model(tie=True), config, gptq_quantizer(config))
    loaded = qd.load(tmp_path, device="cpu", dtype="float32", backend="torch-packed").unwrap().model
    head, embed = loaded.get_submodule("lm_head"), loaded.get_submodule("model.embed_tokens")
    assert isinstance(head, torch.nn.Linear) and isinstance(embed, torch.nn.Embedding)
    assert head.weight.data_ptr() == embed.weight.data_ptr()
    with torch.no_grad():
        assert torch.allclose(loaded(IDS).logits, reference(IDS).logits, atol=1e-5, rtol=0)


def test_what_the_architecture_drops_is_transformers_rule() -> None:
    """``ignored_unexpected``: the architecture's own patterns, and ``position_ids`` where the model
    computes that buffer (both as Transformers drops them); nothing for a plain module."""
    from quantdispatch.loading.stream import ignored_unexpected

    class WithIds(torch.nn.Module):
        _keys_to_ignore_on_load_unexpected = [r"attn\.bias"]

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("position_ids", torch.arange(4), persistent=False)

    found = ignored_unexpected(WithIds())
    assert found is not None
    assert found.search("h.0.attn.bias") and found.search("embeddings.position_ids") and not found.search("h.0.attn.weight")
    assert ignored_unexpected(torch.nn.Linear(2, 2)) is None


@pytest.fixture(autouse=True)
def _skip_kernels_the_masked_cpu_lacks(request: pytest.FixtureRequest) -> None:
    """A case that forces a CPU kernel skips, visibly, where the (masked) CPU features rule it out."""
    from tests.cpu import FEATURES

    callspec = getattr(request.node, "callspec", None)
    named = [v for v in (callspec.params.values() if callspec is not None else ()) if isinstance(v, str)]
    if request.node.name.startswith("test_a_repack_that_raises"):
        named.append("cpu-int4")
    for backend in named:
        if backend.startswith("cpu-int4") and not FEATURES.vector_int4:
            pytest.skip("torch's int4 kernel needs AVX2 or AVX-512, which this (masked) CPU does not report")
        if backend.startswith("cpu-q4") and not (FEATURES.avx2 and FEATURES.fma):
            pytest.skip("the native int4 kernel needs AVX2 and FMA, which this (masked) CPU does not report")
