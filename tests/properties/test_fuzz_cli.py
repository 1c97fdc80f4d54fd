"""Fuzzing the shell: config files on disk and command lines never produce a traceback.

Bounded for CI (the ``ci`` hypothesis profile is derandomized): whatever bytes a config file holds
and whatever arguments are given, the CLI exits 0, 1 or 2, and every command that prints JSON
(``check``, ``load``, ``generate``, ``bench`` with ``--json``; ``engine-args``) prints only JSON.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantdispatch.cli import main

from .strategies import json_values

_NAMES = st.sampled_from(["config.json", "quantize_config.json", "quant_config.json", "x.json", "m.gguf"])
_KEYS = st.sampled_from(["quant_method", "bits", "group_size", "load_in_4bit", "version", "w_bit", "meta", "backend",
                         "quantization_config", "tensors", "dequantize", "\ud800", "a\nb", ""])
_SHAPED = st.dictionaries(_KEYS, st.sampled_from(["gptq", "awq", "bitsandbytes", "gguf", "GEMM", True, 4, -1, 10**400]) | json_values,
                          max_size=6)
_TEXT = st.one_of(
    _SHAPED.map(lambda d: json.dumps(d)),
    _SHAPED.map(lambda d: json.dumps({"quantization_config": d})),
    st.text(max_size=60),
    st.sampled_from(["null", "[]", '{"bits": NaN}', '{"a": 1, "a": 2}', "{" * 50, '{"bits": ' + "9" * 500 + "}"]),
)
_CONTENT = _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=80).map(lambda b: b"GGUF" + b)
_ARGS = st.lists(st.sampled_from(["--json", "--device", "cpu", "cuda:0", "banana", "--dtype", "float16", "int3", "--backend",
                                  "torch-packed", "--no-devices", "", "-"]), max_size=4)


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES, content=_CONTENT, command=st.sampled_from(["check", "inspect"]), extra=_ARGS, as_dir=st.booleans())
def test_cli_never_raises_on_files(name: str, content: bytes, command: str, extra: list[str], as_dir: bool) -> None:
    """Any file content, any flags: exit status 0, 1 or 2, and --json output parses."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        target = tmp if as_dir else str(path)
        argv = [command, *extra, target] if command == "inspect" else [command, *[a for a in extra if a == "--json"], target]
        if command == "inspect":
            argv.insert(1, "--no-devices")
        code, out = _run(argv)
    assert code in (0, 1, 2)
    if command == "check" and "--json" in argv and code != 2:
        records = json.loads(out)
        assert isinstance(records, list) and all("ok" in r for r in records)


_JSON_COMMANDS = st.sampled_from([["check", "--json"], ["load", "--json"], ["generate", "--json", "--prompt", "x"],
                                  ["bench", "--json"], ["engine-args"]])
_HOSTILE = st.sampled_from(["missing", "directory", "fifo", "truncated", "garbage", "config", "control"])
_JSON_EXTRA = st.lists(st.sampled_from(["--device", "cpu", "cuda:99999", "--dtype", "float32", "int3", "--backend", "nope",
                                        "--max-new-tokens", "--threads", "--repeat", "0", "-1", "nan", "1e9", "--capability",
                                        "8.0", "0.0", "--trust-remote-code"]), max_size=3)


def _hostile_path(tmp: Path, kind: str, content: bytes) -> str:
    """A path of one hostile kind; ``content`` fills the files that have some."""
    if kind == "missing":
        return str(tmp / "missing")
    if kind == "fifo":
        os.mkfifo(tmp / "fifo")
        return str(tmp / "fifo")
    if kind == "control":
        return str(tmp / "a\x1b[2J\nb")
    if kind == "directory":
        (tmp / "config.json").write_bytes(content)
        return str(tmp)
    name = {"truncated": "config.json", "garbage": "m.gguf", "config": "config.json"}[kind]
    data = content[: len(content) // 2] if kind == "truncated" else content
    (tmp / name).write_bytes(data)
    return str(tmp / name) if kind != "config" else str(tmp)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=_JSON_COMMANDS, kind=_HOSTILE, content=_CONTENT, extra=_JSON_EXTRA)
def test_json_commands_print_only_json(command: list[str], kind: str, content: bytes, extra: list[str]) -> None:
    """Every command that prints JSON, on every hostile input and flag: stdout is one JSON
    document (status 0 or 1), or empty (status 2, a usage error on stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _hostile_path(Path(tmp), kind, content)
        code, out = _run([*command, *extra, path])
    assert code in (0, 1, 2)
    if code == 2:
        assert out == ""
    else:
        json.loads(out)
