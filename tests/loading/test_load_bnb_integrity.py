"""bitsandbytes loads are all-or-nothing like the others: a checkpoint whose tensors do not match
the model (missing, unexpected, mis-shaped, a broken quantization state) is a coded issue before
Transformers reads anything, never a model with random weights or one that fails at its first
forward. Tied embeddings still load without ``lm_head.weight``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import quantdispatch as qd
from quantdispatch.backends.bnb import _loading_info

from .ckpt import base_model

pytest.importorskip("bitsandbytes")
torch.set_num_threads(1)
IDS = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(7))
Q = "model.layers.0.self_attn.q_proj"

CONFIGS: dict[str, qd.AbstractBnb] = {
    "nf4": qd.Bnb4Bit(quant_type="nf4"),
    "fp4-double": qd.Bnb4Bit(quant_type="fp4", use_double_quant=True),
    "nf4-bf16-storage": qd.Bnb4Bit(quant_type="nf4", quant_storage=qd.DType.BFLOAT16),
    "int8": qd.Bnb8Bit(),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each config's checkpoint, quantized while loading and saved by Transformers, and the
    full-precision ones (untied and tied) it came from: written once, copied per test."""
    root = tmp_path_factory.mktemp("bnb")
    base_model().save_pretrained(root / "fp32")
    base_model(tie=True).save_pretrained(root / "fp32-tied")
    out = {"fp32": root / "fp32", "fp32-tied": root / "fp32-tied"}
    for name, config in CONFIGS.items():
        loaded = qd.load(root / "fp32", device="cpu", dtype="float32", quantization=config).unwrap()
        loaded.model.save_pretrained(root / name)  # type: ignore[operator]
        out[name] = root / name
    return out


def _copy(saved: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[name], tmp_path / name))


def _edit(directory: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _codes(r: object) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


def _load(directory: Path) -> object:
    return qd.load(directory, device="cpu", dtype="float32")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_the_saved_checkpoints_load(saved: dict[str, Path], config: str) -> None:
    """The check accepts every layout Transformers writes (4-bit, double quant, bf16 storage, 8-bit)."""
    loaded = qd.load(saved[config], device="cpu", dtype="float32").unwrap()
    with torch.no_grad():
        assert torch.isfinite(loaded.model(IDS).logits).all()


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("tensor", ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"])
def test_a_missing_dense_tensor_is_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str) -> None:
    """A missing lm_head or embedding used to load with random weights (logits ~1.9 off)."""
    d = _copy(saved, config, tmp_path)
    _edit(d, lambda t: t.pop(tensor))
    found = _load(d)
    assert _codes(found) == ["load.tensor.missing"]
    assert isinstance(found, qd.Err) and found.error[0].path == f"$.tensors['{tensor}']"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_an_unexpected_tensor_is_refused(saved: dict[str, Path], tmp_path: Path, config: str) -> None:
    d = _copy(saved, config, tmp_path)
    _edit(d, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(3)}))
    assert _codes(_load(d)) == ["load.tensor.unexpected"]


@pytest.mark.parametrize("config,tensor,code", [
    ("nf4", f"{Q}.weight.absmax", "load.tensor.shape"),                     # truncated: used to fail at the first forward
    ("nf4", f"{Q}.weight.quant_map", "load.tensor.shape"),
    ("nf4", f"{Q}.weight", "load.tensor.shape"),
    ("nf4-bf16-storage", f"{Q}.weight", "load.tensor.shape"),
    ("fp4-double", f"{Q}.weight.absmax", "load.tensor.shape"),
    ("fp4-double", f"{Q}.weight.nested_absmax", "load.tensor.shape"),
    ("fp4-double", f"{Q}.weight.nested_quant_map", "load.tensor.shape"),
    ("int8", f"{Q}.SCB", "load.tensor.shape"),
    ("int8", f"{Q}.weight", "load.tensor.shape"),
])
def test_a_truncated_quantization_tensor_is_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str,
                                                    code: str) -> None:
    d = _copy(saved, config, tmp_path)
    _edit(d, lambda t: t.update({tensor: t[tensor][:-1]}))  # one row (or entry) short
    found = _load(d)
    assert _codes(found) == [code]
    assert isinstance(found, qd.Err) and found.error[0].path == f"$.tensors['{tensor}']"


@pytest.mark.parametrize("config,tensor", [
    ("nf4", f"{Q}.weight.absmax"), ("nf4", f"{Q}.weight.quant_map"),
    ("fp4-double", f"{Q}.weight.nested_absmax"), ("fp4-double", f"{Q}.weight.nested_quant_map"),
    ("int8", f"{Q}.SCB"),
])
def test_a_missing_quantization_tensor_is_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str) -> None:
    d = _copy(saved, config, tmp_path)
    _edit(d, lambda t: t.pop(tensor))
    assert _codes(_load(d)) == ["load.tensor.missing"]


def test_a_missing_quant_state_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(saved, "nf4", tmp_path)
    _edit(d, lambda t: t.pop(f"{Q}.weight.quant_state.bitsandbytes__nf4"))
    assert _codes(_load(d)) == ["load.bnb.quant_state.missing"]


def _state(d: Path, change: Callable[[dict[str, object]], None], name: str = f"{Q}.weight.quant_state.bitsandbytes__nf4") -> None:
    def edit(t: dict[str, torch.Tensor]) -> None:
        state = json.loads(bytes(t[name].tolist()))
        change(state)
        t[name] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
    _edit(d, edit)


@pytest.mark.parametrize("change,words", [
    (lambda s: s.update(blocksize=63), "blocksize 63"),
    (lambda s: s.update(blocksize=128), "load.tensor.shape"),             # a valid block size the absmax does not match
    (lambda s: s.update(shape=[128, 64]), "shape [128, 64]"),
    (lambda s: s.update(shape=[128, 128.0]), "shape [128, 128.0]"),      # equal in Python, a TypeError in torch.Size
    (lambda s: s.update(dtype="load"), "dtype 'load'"),                   # bitsandbytes would getattr(torch, "load")
    (lambda s: s.update(quant_type="fp4"), "quant_type 'fp4'"),
    (lambda s: s.update(extra=1), "unknown fields"),                      # bitsandbytes asserts (AssertionError) on it
    (lambda s: s.update(nested_blocksize=256), "only some of"),
], ids=["odd-blocksize", "other-blocksize", "shape", "float-shape", "dtype", "quant-type", "extra-field", "half-nested"])
def test_a_quant_state_that_lies_is_refused(saved: dict[str, Path], tmp_path: Path, change: Callable[[dict[str, object]], None],
                                            words: str) -> None:
    d = _copy(saved, "nf4", tmp_path)
    _state(d, change)
    found = _load(d)
    assert isinstance(found, qd.Err)
    if words.startswith("load."):
        assert _codes(found) == [words]
    else:
        assert _codes(found) == ["load.bnb.quant_state.invalid"] and words in found.error[0].message


def test_a_quant_state_that_is_not_json_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(saved, "nf4", tmp_path)
    _edit(d, lambda t: t.update({f"{Q}.weight.quant_state.bitsandbytes__nf4": torch.tensor([123, 0, 255], dtype=torch.uint8)}))
    assert _codes(_load(d)) == ["load.bnb.quant_state.invalid"]


def test_a_quant_state_under_the_wrong_name_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    """The config says nf4; the layer's state is filed as fp4 (and says fp4): refused."""
    d = _copy(saved, "nf4", tmp_path)
    name = f"{Q}.weight.quant_state.bitsandbytes__nf4"

    def rename(t: dict[str, torch.Tensor]) -> None:
        state = json.loads(bytes(t.pop(name).tolist()))
        state["quant_type"] = "fp4"
        t[name.replace("nf4", "fp4")] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
    _edit(d, rename)
    assert _codes(_load(d)) == ["load.bnb.quant_state.invalid"]


def test_double_quant_against_a_single_quant_config_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(saved, "fp4-double", tmp_path)
    doc = json.loads((d / "config.json").read_text())
    doc["quantization_config"]["bnb_4bit_use_double_quant"] = False
    (d / "config.json").write_text(json.dumps(doc))
    found = _load(d)
    assert set(_codes(found)) == {"load.bnb.quant_state.invalid"}
    assert isinstance(found, qd.Err) and "use_double_quant=False" in found.error[0].message


@pytest.mark.parametrize("config,tensor", [("nf4", f"{Q}.weight.absmax"), ("fp4-double", f"{Q}.weight.nested_absmax"),
                                           ("int8", f"{Q}.SCB")])
def test_non_finite_scales_are_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str) -> None:
    d = _copy(saved, config, tmp_path)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[tensor] = t[tensor].clone()
        t[tensor][0] = float("nan")
    _edit(d, poison)
    assert _codes(_load(d)) == ["load.tensor.not_finite"]


@pytest.mark.parametrize("value", [1, 7])
def test_an_8bit_weight_format_other_than_row_is_refused(saved: dict[str, Path], tmp_path: Path, value: int) -> None:
    d = _copy(saved, "int8", tmp_path)
    _edit(d, lambda t: t.update({f"{Q}.weight_format": torch.tensor(value, dtype=torch.uint8)}))
    assert _codes(_load(d)) == ["load.bnb.weight_format"]


def test_a_layer_stored_dense_where_the_config_quantizes_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    """One layer's quantization tensors replaced by a dense weight: the tensors fit the dense
    skeleton, but Transformers builds that layer 4-bit from the config and would read float
    weights as packed codes. The modules Transformers built must be the ones stored quantized."""
    d = _copy(saved, "nf4", tmp_path)

    def densify(t: dict[str, torch.Tensor]) -> None:
        for name in [n for n in t if n.startswith(f"{Q}.weight")]:
            del t[name]
        t[f"{Q}.weight"] = torch.zeros(128, 128)
    _edit(d, densify)
    found = _load(d)
    assert _codes(found) == ["load.bnb.layout"]
    assert isinstance(found, qd.Err) and found.error[0].path == f"$.modules['{Q}']"


def test_tied_embeddings_load_without_lm_head(saved: dict[str, Path], tmp_path: Path) -> None:
    """A tied model's checkpoint has no lm_head.weight, quantized on load and saved pre-quantized alike."""
    made = qd.load(saved["fp32-tied"], device="cpu", dtype="float32", quantization=qd.Bnb4Bit(quant_type="nf4")).unwrap()
    made.model.save_pretrained(tmp_path / "q")  # type: ignore[operator]
    assert "lm_head.weight" not in load_file(str(tmp_path / "q" / "model.safetensors"))
    again = qd.load(tmp_path / "q", device="cpu", dtype="float32").unwrap()
    head, embed = again.model.get_submodule("lm_head"), again.model.get_submodule("model.embed_tokens")
    assert isinstance(head, torch.nn.Linear) and isinstance(embed, torch.nn.Embedding)
    assert head.weight.data_ptr() == embed.weight.data_ptr()


@pytest.mark.parametrize("change,code", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "load.tensor.missing"),
    (lambda t: t.update({"stray": torch.zeros(2)}), "load.tensor.unexpected"),
    (lambda t: t.update({"model.norm.weight": torch.zeros(64)}), "load.tensor.shape"),
], ids=["missing", "unexpected", "shape"])
def test_quantize_on_load_checks_the_dense_tensors(saved: dict[str, Path], tmp_path: Path,
                                                   change: Callable[[dict[str, torch.Tensor]], object], code: str) -> None:
    """A full-precision checkpoint plus a bnb config: its tensors are checked like every other path's."""
    d = _copy(saved, "fp32", tmp_path)
    _edit(d, change)
    assert _codes(qd.load(d, device="cpu", dtype="float32", quantization=qd.Bnb8Bit())) == [code]


def test_transformers_loading_report_becomes_issues() -> None:
    """Defence in depth: whatever Transformers reports as unmatched is an issue, by tensor."""
    info = {"missing_keys": {"lm_head.weight"}, "unexpected_keys": {"x"}, "mismatched_keys": [("a", (1,), (2,))], "error_msgs": []}
    found = _loading_info(info)
    assert sorted(i.code for i in found) == ["load.tensor.missing", "load.tensor.shape", "load.tensor.unexpected"]
    assert "$.tensors['lm_head.weight']" in {i.path for i in found}
    assert _loading_info({"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": [], "error_msgs": []}) == ()


@pytest.mark.parametrize("config,tensor", [("int8", f"{Q}.SCB"), ("nf4", f"{Q}.weight.absmax"), ("nf4", f"{Q}.weight.quant_map"),
                                           ("fp4-double", f"{Q}.weight.nested_absmax")])
def test_statistics_in_another_float_dtype_are_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str) -> None:
    """bitsandbytes writes its statistics as float32; an fp16 SCB loaded Ok and raised at the first
    forward ("col_stats must be float32"). Any other float dtype is load.tensor.dtype."""
    d = _copy(saved, config, tmp_path)
    _edit(d, lambda t: t.update({tensor: t[tensor].to(torch.float16)}))
    found = _load(d)
    assert _codes(found) == ["load.tensor.dtype"]
    assert isinstance(found, qd.Err) and found.error[0].path == f"$.tensors['{tensor}']"


def test_oversized_state_tensors_are_refused_unread(saved: dict[str, Path], tmp_path: Path) -> None:
    """A quantization state is a few hundred bytes of JSON; one of 64 KiB (or an 8-bit
    weight_format that is not a scalar) is refused from its header, before anything is read."""
    d = _copy(saved, "nf4", tmp_path)
    _edit(d, lambda t: t.update({f"{Q}.weight.quant_state.bitsandbytes__nf4": torch.full((65536,), 32, dtype=torch.uint8)}))
    found = _load(d)
    assert _codes(found) == ["load.bnb.quant_state.invalid"]
    assert isinstance(found, qd.Err) and "at most" in found.error[0].message
    d = _copy(saved, "int8", tmp_path / "8")
    _edit(d, lambda t: t.update({f"{Q}.weight_format": torch.zeros(1000, dtype=torch.uint8)}))
    assert _codes(_load(d)) == ["load.tensor.shape"]


@pytest.mark.parametrize("config,tensor", [("nf4", f"{Q}.weight.quant_map"), ("fp4-double", f"{Q}.weight.nested_quant_map")])
def test_non_finite_code_maps_are_refused(saved: dict[str, Path], tmp_path: Path, config: str, tensor: str) -> None:
    d = _copy(saved, config, tmp_path)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[tensor] = t[tensor].clone()
        t[tensor][3] = float("inf")
    _edit(d, poison)
    assert _codes(_load(d)) == ["load.tensor.not_finite"]


@pytest.mark.parametrize("stored,claimed", [("nf4", {"load_in_4bit": False, "load_in_8bit": True, "_load_in_4bit": False,
                                                     "_load_in_8bit": True}),
                                            ("int8", {"load_in_4bit": True, "load_in_8bit": False, "_load_in_4bit": True,
                                                      "_load_in_8bit": False})], ids=["4bit-as-8bit", "8bit-as-4bit"])
def test_a_config_that_lies_about_the_bits_is_refused(saved: dict[str, Path], tmp_path: Path, stored: str,
                                                      claimed: dict[str, object]) -> None:
    """config.json says 8-bit over 4-bit tensors, or the reverse: coded tensor issues, no model."""
    d = _copy(saved, stored, tmp_path)
    doc = json.loads((d / "config.json").read_text())
    doc["quantization_config"].update(claimed)
    (d / "config.json").write_text(json.dumps(doc))
    codes = _codes(_load(d))
    assert codes and set(codes) <= {"load.tensor.shape", "load.tensor.missing", "load.tensor.unexpected", "load.tensor.dtype",
                                    "load.bnb.quant_state.missing"}


@pytest.mark.parametrize("config", [qd.Bnb4Bit(quant_type="nf4"), qd.Bnb8Bit()], ids=["4bit", "8bit"])
def test_conv1d_models_are_checked_as_transposed_linears(tmp_path: Path, config: qd.AbstractBnb) -> None:
    """GPT-2's Conv1D layers store [in, out] dense weights and are quantized as [out, in]: its
    checkpoints load (as before the check existed), and a lie in one of them is still refused."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=128, n_positions=64)).save_pretrained(tmp_path / "fp32")
    made = qd.load(tmp_path / "fp32", device="cpu", dtype="float32", quantization=config).unwrap()
    made.model.save_pretrained(tmp_path / "q")  # type: ignore[operator]
    again = qd.load(tmp_path / "q", device="cpu", dtype="float32").unwrap()
    with torch.no_grad():
        assert torch.equal(again.model(IDS % 128).logits, made.model(IDS % 128).logits)
    name = "transformer.h.0.mlp.c_fc." + ("weight.absmax" if isinstance(config, qd.Bnb4Bit) else "SCB")
    _edit(tmp_path / "q", lambda t: t.update({name: t[name][:-1]}))
    assert _codes(_load(tmp_path / "q")) == ["load.tensor.shape"]


def test_tensors_the_architecture_says_to_drop_are_not_unexpected(tmp_path: Path) -> None:
    """Old GPT-2 checkpoints hold attention-mask buffers (``attn.bias``) that the architecture lists
    in ``_keys_to_ignore_on_load_unexpected``: Transformers drops them, and so does the check;
    any other stray tensor is still refused."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=128, n_positions=64)).save_pretrained(tmp_path)
    _edit(tmp_path, lambda t: t.update({"transformer.h.0.attn.bias": torch.ones(1, 1, 64, 64)}))
    qd.load(tmp_path, device="cpu", dtype="float32", quantization=qd.Bnb8Bit()).unwrap()
    _edit(tmp_path, lambda t: t.update({"transformer.h.0.attn.stray": torch.ones(2)}))
    assert _codes(qd.load(tmp_path, device="cpu", dtype="float32", quantization=qd.Bnb8Bit())) == ["load.tensor.unexpected"]


def test_tensors_transformers_renames_are_checked_by_its_own_report(tmp_path: Path) -> None:
    """Mixtral's checkpoints store experts one by one (``experts.0.w1.weight``) and Transformers
    fuses them at load: the names cannot be compared one for one, so Transformers' own loading
    report is the check. The checkpoint loads; with an expert's weight removed it does not."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    MixtralForCausalLM(MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=1, vocab_size=128, num_local_experts=2,
                                     max_position_embeddings=64)).save_pretrained(tmp_path)
    assert any(".experts.0.w1." in n for n in load_file(str(tmp_path / "model.safetensors")))
    qd.load(tmp_path, device="cpu", dtype="float32", quantization=qd.Bnb4Bit(quant_type="nf4")).unwrap()
    _edit(tmp_path, lambda t: t.pop("model.layers.0.block_sparse_moe.experts.1.w2.weight"))
    found = qd.load(tmp_path, device="cpu", dtype="float32", quantization=qd.Bnb4Bit(quant_type="nf4"))
    assert isinstance(found, qd.Err) and found.error[0].code in ("load.tensor.missing", "load.bnb.failed")
