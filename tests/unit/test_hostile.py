"""Hostile and careless input: each case was a traceback, a hang or unbounded work once.

The core promises to never raise on bad data and to bound its work; the CLI promises exit status
0, 1 or 2 and lines nobody can forge. Every test here fails on the code before the hardening.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import attrs
import pytest

import quantdispatch as qd
from quantdispatch.cli import main
from quantdispatch.jsonvalue import JsonObject, freeze
from quantdispatch.text import MAX_QUOTE


def _codes(r: object) -> list[str]:
    assert isinstance(r, qd.Err), r
    return [i.code for i in r.error]


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- value semantics
def test_loading_attributes_are_part_of_the_value() -> None:
    """Two configs that differ in a loading attribute are unequal, and reconcile differently."""
    plain = qd.parse({"quant_method": "gptq", "bits": 4}).value  # type: ignore[union-attr]
    marlin = qd.parse({"quant_method": "gptq", "bits": 4, "backend": "marlin", "max_input_length": 4096}).value  # type: ignore[union-attr]
    assert plain != marlin and hash(plain) != hash(marlin)
    assert marlin == qd.Gptq(bits=4, backend="marlin", max_input_length=4096)  # expressible in code
    r1, r2 = qd.reconcile(plain, plain), qd.reconcile(plain, marlin)
    assert isinstance(r1, qd.Ok) and isinstance(r2, qd.Ok) and r1.value.overrides == () and r2.value.overrides


def test_the_source_spelling_is_not_part_of_the_value() -> None:
    """AutoAWQ's spelling and Transformers' are the same value and dump back as each was written."""
    native = {"w_bit": 4, "q_group_size": 128, "zero_point": True, "version": "GEMM"}
    tf = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
    a, b = qd.parse(native, default_method="awq").value, qd.parse(tf).value  # type: ignore[union-attr]
    assert a == b and hash(a) == hash(b)
    assert qd.dump(a) == native and qd.dump(b) == tf


def test_an_evolved_config_dumps_canonically() -> None:
    """A parsed config changed in code is written in its canonical form, which parses back to it."""
    parsed = qd.parse({"quant_method": "awq", "version": "GEMM", "w_bit": 4}).value  # type: ignore[union-attr]
    changed = attrs.evolve(parsed, group_size=64)
    out = qd.dump(changed)
    assert out["group_size"] == 64 and "w_bit" not in out
    assert qd.parse(out) == qd.Ok(changed)


def test_extras_may_not_shadow_modelled_keys() -> None:
    """An extra that repeats a field or a discriminator key is refused, and never wins in dump."""
    shadow = qd.Gptq(bits=4, extras=JsonObject((("bits", 8),)))
    assert _codes(qd.validate(shadow)) == ["config.extras.shadowed"]
    assert qd.dump(shadow)["bits"] == 4
    method = qd.Gptq(bits=4, extras=JsonObject((("quant_method", "awq"),)))
    assert _codes(qd.validate(method)) == ["config.extras.shadowed"]
    assert qd.parse(qd.dump(method)).value == attrs.evolve(method, extras=JsonObject())  # type: ignore[union-attr]


def test_inert_keys_in_extras_are_checked() -> None:
    """A calibration key kept in extras is validated with the decoder parsing uses."""
    bad = qd.Gptq(bits=4, extras=JsonObject((("dataset", "nonsense"),)))
    assert _codes(qd.validate(bad)) == ["gptq.dataset.not_allowed"]


@pytest.mark.parametrize("text,code", [
    ("{}", "read.not_awq"),
    ('{"wbits": 4}', "read.not_awq"),
])
def test_a_file_that_names_no_method_is_not_a_method(tmp_path: Path, text: str, code: str) -> None:
    """quant_config.json with nothing AWQ in it is refused, saying what it looks like."""
    (tmp_path / "quant_config.json").write_text(text)
    r = qd.read_config(tmp_path)
    assert _codes(r) == [code]
    if "wbits" in text:
        assert "SqueezeLLM" in r.error[0].message  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["config.json", "quantize_config.json", "quant_config.json"])
def test_null_is_not_unquantized(tmp_path: Path, name: str) -> None:
    """A config file holding null (or an array) is a type error, not 'not quantized'."""
    (tmp_path / name).write_text("null")
    assert _codes(qd.read_config(tmp_path / name)) == ["json.type"]
    (tmp_path / name).write_text("[1]")
    assert _codes(qd.read_config(tmp_path / name)) == ["json.type"]


def test_disagreeing_config_and_quantize_config(tmp_path: Path) -> None:
    """config.json and quantize_config.json that disagree on the layout: said, not picked silently."""
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}}))
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 8}))
    r = qd.read_config(tmp_path)
    assert _codes(r) == ["read.configs.disagree"] and "bits" in r.error[0].message  # type: ignore[union-attr]
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 4, "damp_percent": 0.01}))
    assert qd.read_config(tmp_path) == qd.Ok(qd.Gptq(bits=4))


# ----------------------------------------------------------------------------- numbers and depth
def test_numbers_beyond_float_range() -> None:
    """An integer too large for a float is a range issue, in parse and in validate."""
    huge = 10**309
    assert _codes(qd.parse({"quant_method": "gptq", "bits": 4, "damp_percent": huge})) == ["gptq.damp_percent.range"]
    assert _codes(qd.parse({"load_in_8bit": True, "llm_int8_threshold": huge})) == ["bnb.llm_int8_threshold.range"]
    assert _codes(qd.parse(huge)) == ["json.type"]
    assert _codes(qd.validate(qd.Gptq(bits=4, damp_percent=huge))) == ["gptq.damp_percent.range"]


def test_over_long_and_non_finite_numbers_in_files(tmp_path: Path) -> None:
    """A 310-digit integer and 1e999 in a file are located by line and column."""
    path = _write(tmp_path / "a.json", '{"quant_method": "gptq", "bits": 4,\n "damp_percent": ' + "1" * 310 + "}")
    r = qd.read(path)
    assert _codes(r) == ["json.number.too_long"] and r.error[0].path == "$[line 2, column 18]"  # type: ignore[union-attr]
    assert _codes(qd.read(_write(tmp_path / "b.json", '{"x": 1e999}'))) == ["json.value.not_finite"]
    assert _codes(qd.read(_write(tmp_path / "c.json", '{"x": -Infinity}'))) == ["json.value.not_finite"]


@pytest.mark.parametrize("depth", [70, 250, 400, 495, 2000])
def test_deep_nesting_is_refused_before_any_walk(depth: int) -> None:
    """Nesting under meta at any depth: parse refuses it, validate refuses a value built so in code."""
    inner: object = 1
    for _ in range(depth):
        inner = {"a": inner}
    assert _codes(qd.parse({"quant_method": "gptq", "bits": 4, "meta": inner})) == ["json.too_deep"]
    frozen = JsonObject((("x", 1),))
    for _ in range(depth):
        frozen = JsonObject((("a", frozen),))
    assert _codes(qd.validate(qd.Gptq(bits=4, meta=frozen))) == ["json.too_deep"]
    assert _codes(qd.validate(qd.Gptq(bits=4, extras=JsonObject((("deep", frozen),))))) == ["json.too_deep"]


def test_deep_json_file(tmp_path: Path) -> None:
    """A file nested 100,000 deep is an issue, not a RecursionError."""
    path = _write(tmp_path / "a.json", "[" * 100_000 + "]" * 100_000)
    assert _codes(qd.read(path)) == ["json.too_deep"]


# ----------------------------------------------------------------------------- paths that are not files
def test_fifo_device_and_directory_paths(tmp_path: Path) -> None:
    """A FIFO, a character device and a FIFO named config.json are refused at once, not read."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert _codes(qd.read(fifo)) == ["file.not_regular"]
    for device in ("/dev/zero", "/dev/urandom", "/dev/null"):
        if os.path.exists(device):
            assert _codes(qd.read(device)) == ["file.not_regular"]
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    assert _codes(qd.read(model)) == ["file.not_regular"]
    gguf = tmp_path / "x.gguf"
    os.mkfifo(gguf)
    assert _codes(qd.read(gguf)) == ["gguf.file.unreadable"]


def test_odd_paths() -> None:
    """An empty path, a name too long for the OS and a NUL byte are issues, not reads of '.'."""
    assert _codes(qd.read("")) == ["file.path_empty"]
    assert _codes(qd.read("x" * 5000)) == ["file.unreadable"]
    assert _codes(qd.read("a\0b")) == ["file.unreadable"]
    assert _codes(qd.read(42)) == ["file.path_type"]  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_unreadable_directory(tmp_path: Path) -> None:
    """A directory that cannot be listed is an issue."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0)
    try:
        assert _codes(qd.read(d)) == ["file.unreadable"]
    finally:
        d.chmod(0o700)


# ----------------------------------------------------------------------------- text that lies
def test_messages_quote_a_bounded_prefix() -> None:
    """A megabyte-long value is quoted in at most a bounded prefix."""
    r = qd.parse({"quant_method": "gptq", "bits": "x" * 10_000_000})
    assert isinstance(r, qd.Err) and len(r.error[0].message) < 3 * MAX_QUOTE
    u = qd.parse({"quant_method": "q" * 5_000_000})
    assert isinstance(u, qd.Err) and len(u.error[0].render()) < 1000


def test_cli_escapes_what_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Newlines, escapes and lone surrogates in keys and module names cannot forge or break lines."""
    doc = {"quant_method": "gptq", "bits": 5, "modules_in_block_to_quantize": [["a\nfake: ok"]],
           "\x1b[31mred": 1, "sur\ud800": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\ud800" not in out
    assert all(line.startswith((str(path), "  ")) for line in out.splitlines())
    assert main(["inspect", "--no-devices", str(path)]) == 1
    assert "\x1b" not in capsys.readouterr().out
    good = dict(doc, bits=4)
    path.write_text(json.dumps(good))
    assert main(["inspect", "--no-devices", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\nfake: ok" not in out and "\x1b" not in out


def test_cli_json_output_is_valid_with_surrogates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json output stays valid JSON whatever the keys hold."""
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"quant_method": "gptq\ud800", "bits": 4}))
    assert main(["check", "--json", str(path)]) == 1
    records = json.loads(capsys.readouterr().out)
    assert records[0]["issues"][0]["code"] == "method.unknown"


@pytest.mark.parametrize("argv", [["inspect", "--device", "banana", "x"], ["inspect", "--device", "cuda:", "x"],
                                  ["inspect", "--device", "cudaX", "x"], ["check"], ["nonsense"]])
def test_usage_errors_are_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A bad device string or missing argument is a usage error (2), not an invalid input (1)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    capsys.readouterr()


def test_broken_pipe_and_full_disk(tmp_path: Path) -> None:
    """Output to a closed pipe ends quietly; output to a full disk is status 1 with a message."""
    import subprocess

    path = _write(tmp_path / "config.json", json.dumps({"quant_method": "gptq", "bits": 4}))
    argv = [sys.executable, "-m", "quantdispatch", "check", *([path] * 2000)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.read(10)
        p.stdout.close()
        err = p.stderr.read()
        assert p.wait(timeout=60) == 1 and b"Traceback" not in err
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            done = subprocess.run(argv[:5], stdout=full, stderr=subprocess.PIPE, timeout=60)
        assert done.returncode == 1 and b"Traceback" not in done.stderr and b"cannot write" in done.stderr


# ----------------------------------------------------------------------------- plan with wrong types
@pytest.mark.parametrize("options,code", [
    (qd.LoadOptions(dtype="float16"), "plan.dtype.type"),  # type: ignore[arg-type]
    (qd.LoadOptions(device=None), "plan.device.type"),  # type: ignore[arg-type]
    (qd.LoadOptions(device="cudaX"), "plan.device.unknown"),
    (qd.LoadOptions(device="cuda:"), "plan.device.unknown"),
    (qd.LoadOptions(device="cuda:01"), "plan.device.unknown"),
    (qd.LoadOptions(backend=3), "plan.backend.type"),  # type: ignore[arg-type]
])
def test_plan_refuses_wrong_options(options: qd.LoadOptions, code: str) -> None:
    """Wrong-typed or malformed options are coded issues."""
    env = qd.Environment(packages=(qd.Package("torch", qd.Version.parse("2.13.0")),), devices=(qd.Cpu(), qd.Cuda()))
    assert _codes(qd.plan(qd.Gptq(bits=4), env, options)) == [code]


def test_plan_refuses_wrong_environments_and_configs() -> None:
    """A malformed Cuda device, a huge group size on CUDA and a non-config: issues, not IndexError."""
    torch = qd.Package("torch", qd.Version.parse("2.13.0"))
    bad_cuda = qd.Environment(packages=(torch,), devices=(qd.Cpu(), qd.Cuda(capability=(7,))))  # type: ignore[arg-type]
    assert _codes(qd.plan(qd.Gptq(bits=4), bad_cuda)) == ["plan.environment.device"]
    env = qd.Environment(packages=(torch,), devices=(qd.Cpu(), qd.Cuda()))
    assert _codes(qd.plan(qd.Gptq(bits=4, group_size=10**5000), env)) == ["gptq.group_size.range"]
    assert _codes(qd.plan("gptq", env)) == ["config.type"]  # type: ignore[arg-type]
    assert _codes(qd.plan(qd.Gptq(bits=4), "env")) == ["plan.environment.type"]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- linear work
def test_duplicate_tensor_check_is_linear() -> None:
    """80,000 tensors validate in linear time."""
    tensors = tuple(qd.GgufTensor(f"blk.{i}.weight", qd.GgmlType.F32, (32,)) for i in range(80_000))
    # Quadratic, this took ~200 s; no timing is asserted (CI is noisy): a regression shows as a slow suite.
    assert isinstance(qd.validate(qd.Gguf(tensors=tensors)), qd.Ok)
    dup = qd.Gguf(tensors=(*tensors, tensors[5]))
    assert _codes(qd.validate(dup)) == ["gguf.tensor.duplicate_name"]


def test_dump_with_many_unknown_keys_is_linear() -> None:
    """40,000 unknown keys dump and look up in linear time."""
    doc: dict[str, object] = {"quant_method": "gptq", "bits": 4}
    doc.update((f"k{i}", i) for i in range(40_000))
    parsed = qd.parse(doc)
    assert isinstance(parsed, qd.Ok) and isinstance(parsed.value, qd.Gptq)
    # Quadratic, this took ~40 s; no timing is asserted (CI is noisy): a regression shows as a slow suite.
    assert qd.dump(parsed.value) == doc
    assert qd.dump(attrs.evolve(parsed.value, group_size=64))["k39999"] == 39_999


def test_frozen_json_lookups_use_an_index() -> None:
    """JsonObject.get and `in` are dictionary lookups, built once."""
    obj = freeze({f"k{i}": i for i in range(1000)})
    assert isinstance(obj, JsonObject) and obj.get("k999") == 999 and "k5" in obj and "zz" not in obj
    assert obj == freeze({f"k{i}": i for i in range(1000)})


def test_awq_backend_llm_awq_belongs_to_the_llm_awq_type() -> None:
    """backend 'llm-awq' selects the llm-awq packing when parsed, so another AWQ type holding it
    could never be parsed back: validate refuses it (found by the value-semantics property)."""
    assert _codes(qd.validate(qd.AwqGemm(backend="LLM-AWQ"))) == ["awq.backend.conflict"]
    assert isinstance(qd.validate(qd.AwqLlm(backend="llm-awq")), qd.Ok)


def test_gguf_tensor_count_is_bounded_before_any_work(tmp_path: Path) -> None:
    """A header claiming ten million tensors over a sparse 16 GiB file is refused at once."""
    import struct

    path = tmp_path / "sparse.gguf"
    with path.open("wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 10_000_000, 0))
        f.truncate(1 << 34)
    assert _codes(qd.read(path)) == ["gguf.tensors.too_many"]


def test_gguf_string_arrays_use_memory_proportional_to_the_file(tmp_path: Path) -> None:
    """200,000 empty strings (1.6 MB of file) cost a small multiple of that, not 14x."""
    import struct
    import tracemalloc

    from quantdispatch.gguf.reader import read_gguf_header

    n, key = 200_000, b"tokenizer.ggml.tokens"
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, n)
    data += struct.pack("<Q", 0) * n
    path = tmp_path / "strings.gguf"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        header = read_gguf_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(header, qd.Ok) and len(header.value.metadata[0][1]) == n  # type: ignore[arg-type]
    assert peak < 4 * len(data)
