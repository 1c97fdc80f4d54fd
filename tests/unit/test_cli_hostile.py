"""The command line against a hostile user: odd numbers, odd paths, odd streams.

Every case ends in status 1 with a coded issue, or status 2 with a message on stderr: never a
traceback, never a question on stdin, and with ``--json`` never a line of stdout that is not JSON.
Device nodes and FIFOs are made inside ``tmp_path``; no test names a real device (tests run as root).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import quantdispatch
from quantdispatch.cli import main
from quantdispatch.gguf import GgmlType
from tests.gguf_files import Tensor, gguf_bytes

_BAD_COUNTS = ["-1", "0", "nan", "inf", "-inf", "1e3", "0x10", "1_000", "", " 5", "5 ", "\u0663", "3.0", "ten",
               "99999999999999999999", "9" * 5000, "1\n2", "\x1b[2J"]
_NUMERIC = [(["generate", "ckpt", "--prompt", "x"], "--max-new-tokens", "100001"),
            (["bench", "ckpt"], "--threads", "1025"),
            (["bench", "ckpt"], "--prompt-tokens", "8193"),
            (["bench", "ckpt"], "--new-tokens", "4097"),
            (["bench", "ckpt"], "--repeat", "101")]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == "", argv
    return captured.err


@pytest.mark.parametrize(("prefix", "option", "too_big"), _NUMERIC)
def test_numeric_options_are_range_checked(prefix: list[str], option: str, too_big: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Negative, zero, past the limit, NaN, inf, floats, hex, underscores, non-ASCII digits and
    thousands of digits: status 2, the option named on stderr, nothing on stdout (with --json too)."""
    for value in [*_BAD_COUNTS, too_big]:
        err = _usage_error([*prefix, "--json", f"{option}={value}"], capsys)
        assert option in err and ("is not an integer" in err or "out of range" in err), (option, value)
        assert "\x1b" not in err and "\n2" not in err.split("error:", 1)[1]


def test_numeric_options_accept_their_range(capsys: pytest.CaptureFixture[str]) -> None:
    """The ends of each range parse (the command then fails on the missing checkpoint, status 1)."""
    assert main(["generate", "/nonexistent/ckpt", "--prompt", "x", "--max-new-tokens", "100000"]) == 1
    assert main(["bench", "/nonexistent/ckpt", "--threads", "1", "--prompt-tokens", "8192", "--new-tokens", "+1", "--repeat", "100"]) == 1
    capsys.readouterr()


@pytest.mark.parametrize("value", ["0.0", "-1.0", "8", "8.", ".0", "8.0.0", "100.0", "8.100", "nan", "inf", "1e1",
                                   "\u0668.0", "", "8,0", "x" * 10_000])
def test_capability_is_range_checked(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """engine-args --capability takes MAJOR.MINOR (1-99 . 0-99), nothing else: status 2."""
    err = _usage_error(["engine-args", "ckpt", f"--capability={value}"], capsys)
    assert "--capability" in err and "compute capability" in err and len(err) < 2000


@pytest.mark.parametrize("command", [["inspect"], ["load"], ["generate", "--prompt", "x"], ["bench"]], ids=lambda c: c[0])
def test_backend_names_are_bounded(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--backend, quoted back in every rejected backend's reason: a megabyte, a terminal escape,
    a space or nothing is a usage error (the longest name allowed passes argparse)."""
    for name in ["b" * 101, "b" * 100_000, "evil\x1b[2J", "two words", "", "a\nb"]:
        err = _usage_error([*command, "ckpt", f"--backend={name}"], capsys)
        assert "--backend" in err and "is not a backend name" in err and "\x1b" not in err and len(err) < 2000
    assert main([*command, "/nonexistent/ckpt", "--backend", "b" * 100]) == 1
    capsys.readouterr()


def test_usage_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse quotes what was typed (``unrecognized arguments: …``): a terminal escape or a
    line break in it is escaped, so it cannot forge a line on stderr."""
    err = _usage_error(["schema", "gptq", "extra\x1b[31m\nquantdispatch: all good"], capsys)
    assert "\x1b" not in err and "extra\\x1b[31m\\nquantdispatch: all good" in err


def _gguf(path: Path) -> Path:
    path.write_bytes(gguf_bytes([Tensor("norm", (3,), int(GgmlType.F32), struct.pack("<3f", 1, -2, 3))]))
    return path


def _hostile(tmp_path: Path) -> dict[str, str]:
    """Paths that fail in every way a lookup can, each with the errno or the kind it meets."""
    (tmp_path / "file").write_text("{}")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    return {"ENOTDIR": f"{tmp_path}/file/child", "ELOOP": str(tmp_path / "loop"), "ENAMETOOLONG": f"{tmp_path}/{'n' * 300}",
            "EISDIR": str(tmp_path / "dir"), "FIFO": str(tmp_path / "fifo"), "dangling": str(tmp_path / "dangling"),
            "ENOENT": str(tmp_path / "missing"), "control": f"{tmp_path}/a\x1b[2J\nb", "deep": f"{tmp_path}/{'d/' * 3000}x"}


_COMMANDS = [["check"], ["inspect", "--no-devices"], ["inspect", "--tensors"], ["load"], ["generate", "--prompt", "x"],
             ["bench"], ["where"], ["engine-args"], ["dequant", "--out", "OUT"]]


@pytest.mark.parametrize("command", _COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_os_errors_on_paths_are_issues(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ENOTDIR, ELOOP, ENAMETOOLONG, a directory, a FIFO, a dangling link, a missing file, control
    characters: status 1 and a coded issue on stdout, escaped; never an exception or a hang."""
    for kind, path in _hostile(tmp_path).items():
        argv = [str(tmp_path / "o.safetensors") if a == "OUT" else a for a in command]
        assert main([*argv, path]) == 1, kind
        out = capsys.readouterr().out
        assert "\x1b" not in out and (" at $" in out or '"code": "' in out), (kind, out)
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("command", [c for c in _COMMANDS if c[0] in ("check", "load", "generate", "bench")], ids=lambda c: c[0])
def test_json_failures_are_one_json_record(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json, each hostile path gives status 1 and stdout that json.loads reads, issues coded."""
    for kind, path in _hostile(tmp_path).items():
        assert main([*command, "--json", path]) == 1, kind
        record = json.loads(capsys.readouterr().out)
        first = record[0] if isinstance(record, list) else record
        assert first["ok"] is False and first["issues"][0]["code"], kind


def test_engine_args_and_schema_fail_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The two commands that print JSON print JSON when they fail too (the person reads stderr)."""
    assert main(["engine-args", str(tmp_path / "missing")]) == 1
    assert json.loads(capsys.readouterr().out)["refused"] == "file.missing"
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert main(["engine-args", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["refused"] == "engine.source.not_quantized"
    assert main(["schema", "no\x1bpe"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["issues"][0]["code"] == "schema.method.unknown" and "\x1b" not in captured.err


def test_an_os_error_while_loading_is_an_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that vanishes after the checks (here: load raises ENOENT) is cli.os_error, status 1,
    as a line on stderr or as the JSON record; a bug is cli.internal_error in the JSON record."""
    import quantdispatch.loading as loading

    def vanished(*args: object, **kwargs: object) -> object:
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "model.safetensors"))

    monkeypatch.setattr(loading, "load", vanished)
    assert main(["load", str(tmp_path)]) == 1
    assert "cli.os_error" in capsys.readouterr().err
    assert main(["load", "--json", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["issues"][0]["code"] == "cli.os_error"

    def bug(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(loading, "load", bug)
    assert main(["bench", "--json", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["issues"][0]["code"] == "cli.internal_error" and "RuntimeError: boom" in captured.err


def test_json_stdout_holds_only_the_record(tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What a library writes to stdout while a --json command runs (print or the descriptor
    itself) goes to stderr; stdout holds the record alone."""
    import quantdispatch.loading as loading
    from quantdispatch.result import Err, Issue

    def chatty(*args: object, **kwargs: object) -> object:
        print("banner from a library")
        os.write(1, b"printf from C\n")
        return Err((Issue("load.test", "$", "refused"),))

    monkeypatch.setattr(loading, "load", chatty)
    assert main(["load", "--json", str(tmp_path)]) == 1
    captured = capfd.readouterr()
    assert json.loads(captured.out)["issues"][0]["code"] == "load.test"
    assert "banner from a library" in captured.err and "printf from C" in captured.err


def test_an_output_directory_that_vanishes_while_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """dequant whose output directory is removed mid-write: gguf.output.unwritable, status 1."""
    import shutil

    import quantdispatch.kernels.gguf.export as export

    (tmp_path / "out").mkdir()

    def write_then_vanish(tensors: object, name: str, dtype: str = "float32") -> None:
        Path(name).write_bytes(b"x")
        shutil.rmtree(tmp_path / "out")

    monkeypatch.setattr(export, "write_safetensors", write_then_vanish)
    assert main(["dequant", str(_gguf(tmp_path / "m.gguf")), "--out", str(tmp_path / "out" / "x.safetensors")]) == 1
    assert "gguf.output.unwritable" in capsys.readouterr().out


def _cli(args: list[str], redirect: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m quantdispatch ARGS REDIRECT`` through bash, as a user's shell would."""
    env = {**os.environ, "PYTHONPATH": str(Path(quantdispatch.__file__).parents[1]), "PYTHONWARNINGS": "error"}
    command = " ".join(["exec", sys.executable, "-m", "quantdispatch", *(f"'{a}'" for a in args), redirect])
    return subprocess.run(["bash", "-c", command], capture_output=True, env=env, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["check"], ["check", "--json"], ["schema"]], ids=" ".join)
def test_broken_pipe_is_quiet(args: list[str], tmp_path: Path) -> None:
    """`quantdispatch check … | head -c 1` ends without a traceback, text or JSON."""
    many = [str(tmp_path / f"missing-{i:04d}.json") for i in range(1500)]  # far more than a pipe holds
    paths = many if args[0] == "check" else []
    env = {**os.environ, "PYTHONPATH": str(Path(quantdispatch.__file__).parents[1]), "PYTHONWARNINGS": "error"}
    with subprocess.Popen([sys.executable, "-m", "quantdispatch", *args, *paths], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(1)) == 1
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert err == "" and code == 1, err


@pytest.mark.slow
def test_a_closed_stdout(tmp_path: Path) -> None:
    """`>&-`: check ends quietly; dequant's output file never receives what was meant for stdout."""
    for closed in (">&-", "2>&-", "<&- >&- 2>&-"):
        done = _cli(["check", str(tmp_path / "missing.json")], closed)
        assert done.returncode == 1 and b"Traceback" not in done.stderr, closed
    out = tmp_path / "x.safetensors"
    done = _cli(["dequant", str(_gguf(tmp_path / "m.gguf")), "--out", str(out)], ">&-")
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    from safetensors.torch import load_file

    assert load_file(str(out))["norm"].tolist() == [1, -2, 3]


@pytest.mark.slow
def test_stdout_on_a_full_device(tmp_path: Path) -> None:
    """stdout on a device that is always full (a /dev/full node made in tmp_path): status 1 and
    one line on stderr, no traceback."""
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(1, 7))
    except OSError as e:
        pytest.skip(f"cannot make a device node here: {e}")
    (tmp_path / "config.json").write_text('{"quantization_config": {"quant_method": "gptq", "bits": 4}}')
    for args in (["check", str(tmp_path)], ["check", "--json", str(tmp_path)], ["schema"]):
        done = _cli(args, f"> '{full}'")
        assert done.returncode == 1 and b"Traceback" not in done.stderr and b"cannot write the output" in done.stderr, args


def test_a_device_named_as_config_is_never_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A model directory whose config.json is a link to a device node, or the node itself: refused
    ("it is a device") without opening it (opening a device can act on it)."""
    node = tmp_path / "node"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers, inside tmp_path
    except OSError as e:
        pytest.skip(f"cannot make a device node here: {e}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").symlink_to(node)
    opened: list[str] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    for argv in (["check", str(model)], ["check", str(node)], ["inspect", "--tensors", str(node)]):
        assert main(argv) == 1
        assert "it is a device" in capsys.readouterr().out, argv
    assert not any(Path(p).resolve() == node for p in opened), opened


def test_json_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN or infinite number in a record (a speed over a zero time) is printed as null, never
    as the NaN / Infinity that strict JSON parsers refuse."""
    from quantdispatch.cli_support import emit_json

    emit_json({"a": [float("nan"), float("inf"), 1.5], "b": {"c": -float("inf")}})
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [None, None, 1.5], "b": {"c": None}}


def test_ctrl_c_is_status_130_and_removes_the_partial_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while dequant writes: status 130, one line on stderr, no temporary file left."""
    import quantdispatch.kernels.gguf.export as export

    def interrupted(tensors: object, name: str, dtype: str = "float32") -> None:
        Path(name).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_safetensors", interrupted)
    out = tmp_path / "out" / "x.safetensors"
    out.parent.mkdir()
    assert main(["dequant", str(_gguf(tmp_path / "m.gguf")), "--out", str(out)]) == 130
    assert capsys.readouterr().err == "quantdispatch: interrupted\n" and list(out.parent.iterdir()) == []
