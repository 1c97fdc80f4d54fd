"""Checkpoints whose architecture numbers lie: refused with coded issues before any module is
built (a constructor that records its calls proves it), never a crash from Transformers."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import quantdispatch as qd
from quantdispatch.result import Err, Issues
from tests.gguf_models import T, tiny_model, write_gguf


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call of ``AutoModelForCausalLM.from_config`` (the skeleton's constructor), recorded."""
    from transformers import AutoModelForCausalLM

    calls: list[object] = []
    original: Any = AutoModelForCausalLM.from_config

    def recording(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        return original(*args, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", recording)
    return calls


def _patch(path: Path, key: str, fmt: str, value: float) -> None:
    """Overwrite the scalar value of metadata ``key`` in place (same type and width: ``fmt`` is ``<I`` or ``<f``)."""
    raw = bytearray(path.read_bytes())
    stored = struct.pack("<Q", len(key)) + key.encode()  # with its length, so that a key is not taken for a longer one
    at = raw.index(stored) + len(stored) + 4  # the key, then its uint32 value type
    raw[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(raw))


def _errors(path: Path, **kw: Any) -> Issues:
    found = qd.load(path, device="cpu", dtype="float32", **kw)
    assert isinstance(found, Err), found
    return found.error


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    return write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "m.gguf", T.Q8_0)


def test_gguf_with_100000_layers_is_refused_before_building(gguf_file: Path, built: list[object]) -> None:
    """A small file claiming 100,000 layers: a limit and a block-count issue, and no constructor call."""
    _patch(gguf_file, "llama.block_count", "<I", 100_000)
    codes = {(i.code, i.path) for i in _errors(gguf_file)}
    assert ("load.architecture.limit", '$.metadata["llama.block_count"]') in codes
    assert ("load.architecture.layers", '$.metadata["llama.block_count"]') in codes
    assert built == []


def test_gguf_too_small_for_its_numbers(gguf_file: Path, built: list[object]) -> None:
    """A vocabulary of 10⁸ tokens of 64 numbers each cannot fit the file: a size issue."""
    _patch(gguf_file, "llama.vocab_size", "<I", 100_000_000)
    assert [i.code for i in _errors(gguf_file)] == ["load.architecture.size"]
    assert built == []


@pytest.mark.parametrize(("key", "fmt", "value"), [("llama.attention.head_count", "<I", 0), ("llama.attention.head_count_kv", "<I", 3),
                                                   ("llama.rope.freq_base", "<f", float("nan")),
                                                   ("llama.attention.layer_norm_rms_epsilon", "<f", 0.0),
                                                   ("llama.embedding_length", "<I", 0)])
def test_gguf_bad_numbers_are_issues_at_their_keys(gguf_file: Path, built: list[object], key: str, fmt: str, value: float) -> None:
    """Each number Transformers would divide by, or build nonsense from, is an issue naming its key."""
    _patch(gguf_file, key, fmt, value)
    errors = _errors(gguf_file)
    assert f'$.metadata["{key}"]' in {i.path for i in errors}, errors
    assert {i.code for i in errors} <= {"load.architecture.value", "load.architecture.relation"}
    assert built == []


def test_gguf_construction_errors_are_caught_behind_the_checks(gguf_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the checks switched off, Transformers' ZeroDivisionError is still an issue, not a crash."""
    import quantdispatch.backends.gguf as backend

    monkeypatch.setattr(backend, "_architecture_issues", lambda *a: ())
    _patch(gguf_file, "llama.attention.head_count", "<I", 0)
    errors = _errors(gguf_file)
    assert [i.code for i in errors] == ["load.architecture.unsupported"] and "ZeroDivisionError" in errors[0].message


def test_gguf_shards_that_disagree() -> None:
    """A shard whose architecture or tokenizer metadata differs from the first shard's is an issue
    naming the key (gguf-py writes them into the first shard only; a hostile split need not)."""
    from quantdispatch.backends.gguf import _shard_conflicts
    from quantdispatch.gguf.arch import ARCHITECTURES
    from quantdispatch.gguf.data import GgufData
    from quantdispatch.gguf.header import GgufHeader, GgufValue

    def shard(*metadata: tuple[str, GgufValue]) -> GgufData:
        header = GgufHeader(version=3, byte_order="little", metadata=metadata, value_types=(), tensors=(), alignment=32,
                            data_offset=0, file_size=0)
        return cast(GgufData, SimpleNamespace(header=header))

    first = shard(("general.architecture", "llama"), ("llama.block_count", 2), ("split.no", 0), ("tokenizer.ggml.bos_token_id", 1))
    same = shard(("llama.block_count", 2), ("split.no", 1))
    other = shard(("llama.block_count", 7), ("split.no", 2), ("tokenizer.ggml.bos_token_id", 5), ("general.architecture", "qwen2"))
    assert _shard_conflicts(ARCHITECTURES["llama"], [first, same]) == ()
    found = _shard_conflicts(ARCHITECTURES["llama"], [first, same, other])
    assert [(i.code, i.path) for i in found] == [("load.gguf.metadata.conflict", '$.metadata["llama.block_count"]'),
                                                 ("load.gguf.metadata.conflict", '$.metadata["tokenizer.ggml.bos_token_id"]'),
                                                 ("load.gguf.metadata.conflict", '$.metadata["general.architecture"]')]


# ----------------------------------------------------------------------------- safetensors checkpoints (config.json)
@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    from tests.loading.ckpt import base_model, gptq_quantizer, write_quantized

    config = qd.Gptq(bits=4, group_size=32)
    write_quantized(tmp_path / "m", base_model(), config, gptq_quantizer(config))
    return tmp_path / "m"


def _edit(directory: Path, **changes: object) -> None:
    doc = json.loads((directory / "config.json").read_text())
    doc.update(changes)
    (directory / "config.json").write_text(json.dumps(doc))


def test_config_json_too_many_layers_for_the_files(checkpoint: Path, built: list[object]) -> None:
    """config.json claiming 1,000 layers over a two-layer checkpoint: a size issue, nothing built."""
    _edit(checkpoint, num_hidden_layers=1000)
    assert [i.code for i in _errors(checkpoint)] == ["load.architecture.size"]
    assert built == []


def test_config_json_every_bad_number_at_once(checkpoint: Path, built: list[object]) -> None:
    """Zero heads, a float layer count and an infinite-to-JSON rope base: three issues at their keys."""
    _edit(checkpoint, num_attention_heads=0, num_hidden_layers=2.0, rope_theta=-1)
    assert sorted((i.code, i.path) for i in _errors(checkpoint)) == [
        ("load.architecture.value", "$.num_attention_heads"), ("load.architecture.value", "$.num_hidden_layers"),
        ("load.architecture.value", "$.rope_theta")]
    assert built == []


def test_config_json_nested_text_config(checkpoint: Path, built: list[object]) -> None:
    """A ``text_config`` with hostile numbers is checked too (a llama ignores it; the check does not)."""
    _edit(checkpoint, text_config={"num_attention_heads": -4, "rope_scaling": {"rope_type": "warp", "factor": 0}})
    paths = sorted(i.path for i in _errors(checkpoint))
    assert paths == ["$.text_config.num_attention_heads", "$.text_config.rope_scaling.factor", "$.text_config.rope_scaling.rope_type"]
    assert built == []


def test_config_json_construction_errors_are_caught_behind_the_checks(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the checks switched off, a padding id outside the vocabulary (torch's AssertionError) is an issue."""
    import quantdispatch.loading.stream as stream

    monkeypatch.setattr(stream, "check_architecture", lambda *a, **k: ())
    _edit(checkpoint, pad_token_id=10_000)
    errors = _errors(checkpoint)
    assert [i.code for i in errors] == ["load.architecture.unsupported"] and "AssertionError" in errors[0].message


# ----------------------------------------------------------------------------- GGUF rope scaling
def test_gguf_linear_rope_scaling_is_applied(tmp_path: Path) -> None:
    """A file with llama.cpp's linear rope scaling computes what the Transformers model with that
    scaling computes (without it, other positions: the logits differ)."""
    import gguf
    import torch
    from transformers import LlamaForCausalLM

    base = tiny_model("llama", layers=1)
    config = base.config
    config.rope_parameters = {**config.rope_parameters, "rope_type": "linear", "factor": 4.0}
    scaled = LlamaForCausalLM(config).eval()
    scaled.load_state_dict(base.state_dict())
    extra = {"add_rope_scaling_type": gguf.RopeScalingType.LINEAR, "add_rope_scaling_factor": 4.0}
    path = write_gguf(scaled, "llama", tmp_path / "m.gguf", T.F32, tokenizer=extra)
    found = qd.load(path, device="cpu", dtype="float32")
    assert not isinstance(found, Err), found
    ids = torch.tensor([[3, 17, 42, 5, 9, 77, 1, 30, 8, 64, 2, 11]])
    with torch.no_grad():
        ours, want, unscaled = (m(ids).logits for m in (found.value.model, scaled, base))
    assert torch.allclose(ours, want, atol=1e-4, rtol=0)
    assert not torch.allclose(unscaled, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_yarn_rope_scaling_is_applied(tmp_path: Path, arch: str) -> None:
    """A file with YaRN (llama.cpp's converter writes type, factor and the pre-training context,
    as Qwen's long-context checkpoints carry them) computes what the Transformers model with that
    YaRN configuration computes; without the scaling the logits differ."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    base = tiny_model(arch, layers=1)
    config = base.config
    config.rope_parameters = {**config.rope_parameters, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                              "beta_fast": 16.0}
    scaled = AutoModelForCausalLM.from_config(config).eval()
    scaled.load_state_dict(base.state_dict())
    extra = {"add_rope_scaling_type": gguf.RopeScalingType.YARN, "add_rope_scaling_factor": 4.0, "add_rope_scaling_orig_ctx_len": 32,
             "add_rope_scaling_yarn_beta_fast": 16.0}
    path = write_gguf(scaled, arch, tmp_path / "m.gguf", T.F32, tokenizer=extra)
    found = qd.load(path, device="cpu", dtype="float32")
    assert not isinstance(found, Err), found
    ids = torch.tensor([[3, 17, 42, 5, 9, 77, 1, 30, 8, 64, 2, 11] * 5])
    with torch.no_grad():
        ours, want, unscaled = (m(ids).logits for m in (found.value.model, scaled, base))
    assert torch.allclose(ours, want, atol=1e-4, rtol=0)
    assert not torch.allclose(unscaled, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("extra_keys,why", [
    ({}, "original_context_length"),
    ({"add_rope_scaling_orig_ctx_len": 32, "add_rope_scaling_yarn_ext_factor": 0.5}, "yarn_ext_factor"),
    ({"add_rope_scaling_orig_ctx_len": 32, "add_rope_scaling_yarn_log_mul": 0.1}, "yarn_log_multiplier"),
])
def test_gguf_yarn_that_cannot_be_applied_exactly_is_refused(tmp_path: Path, extra_keys: dict[str, object], why: str) -> None:
    """YaRN without its pre-training context, or with llama.cpp parameters Transformers has no
    exact counterpart for, is an issue, not a model with other positions."""
    import gguf

    extra = {"add_rope_scaling_type": gguf.RopeScalingType.YARN, "add_rope_scaling_factor": 4.0, **extra_keys}
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "y.gguf", T.Q8_0, tokenizer=extra)
    errors = _errors(path)
    assert [(i.code, i.path) for i in errors] == [("load.gguf.rope_scaling.unsupported", '$.metadata["llama.rope.scaling.type"]')]
    assert why in errors[0].message


def test_gguf_longrope_is_refused(tmp_path: Path) -> None:
    """LongRoPE (per-dimension factors) is not applied by this version: refused."""
    import gguf

    extra = {"add_rope_scaling_type": gguf.RopeScalingType.LONGROPE, "add_rope_scaling_factor": 4.0}
    path = write_gguf(tiny_model("llama", layers=1), "llama", tmp_path / "y.gguf", T.Q8_0, tokenizer=extra)
    assert [i.code for i in _errors(path)] == ["load.gguf.rope_scaling.unsupported"]


def test_gguf_gemma3_linear_rope_scaling_applies_to_global_layers(tmp_path: Path) -> None:
    """Gemma 3's files carry linear scaling for its global layers only (llama.cpp leaves the
    sliding-window layers unscaled, as Transformers' ``full_attention`` parameters do)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    base = tiny_model("gemma3", layers=6)  # the sixth is global
    config = base.config
    config.rope_parameters = {**config.rope_parameters,
                              "full_attention": {**config.rope_parameters["full_attention"], "rope_type": "linear", "factor": 8.0}}
    scaled = AutoModelForCausalLM.from_config(config).eval()
    scaled.load_state_dict(base.state_dict())
    extra = {"add_rope_scaling_type": gguf.RopeScalingType.LINEAR, "add_rope_scaling_factor": 8.0}
    path = write_gguf(scaled, "gemma3", tmp_path / "m.gguf", T.F32, tokenizer=extra)
    found = qd.load(path, device="cpu", dtype="float32")
    assert not isinstance(found, Err), found
    ids = torch.tensor([[3, 17, 42, 5, 9, 77, 1, 30, 8, 64, 2, 11] * 4])
    with torch.no_grad():
        ours, want, unscaled = (m(ids).logits for m in (found.value.model, scaled, base))
    assert torch.allclose(ours, want, atol=1e-4, rtol=0)
    assert not torch.allclose(unscaled, want, atol=1e-4, rtol=0)
