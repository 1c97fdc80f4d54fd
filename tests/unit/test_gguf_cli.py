"""The GGUF commands: ``inspect FILE.gguf --tensors`` and ``dequant``; statuses 0 / 1 / 2."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quantdispatch.cli import main
from quantdispatch.gguf import GgmlType
from tests.gguf_files import Tensor, gguf_bytes

Q8_BLOCK = struct.pack("<e", 0.5) + bytes(range(32))
Q8_VALUES = [0.5 * v for v in range(32)]


def _file(tmp_path: Path, *extra: Tensor) -> str:
    tensors = [
        Tensor("blk.0.w", (32, 2), int(GgmlType.Q8_0), Q8_BLOCK * 2),
        Tensor("norm", (3,), int(GgmlType.F32), struct.pack("<3f", 1, -2, 3)),
        *extra,
    ]
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(tensors))
    return str(path)


def test_inspect_tensors_lists_each_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line per tensor: name, type, PyTorch shape, bytes, bits per weight."""
    assert main(["inspect", _file(tmp_path), "--tensors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2 tensors" in lines[0]
    assert lines[2].split("\t") == ["blk.0.w", "Q8_0", "[2, 32]", "68", "8.5"]
    assert lines[3].split("\t") == ["norm", "F32", "[3]", "12", "32"]


def test_inspect_tensors_escapes_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name with control characters is printed escaped, never raw."""
    weird = Tensor("evil\x1b[2J\nname", (1,), int(GgmlType.F32), bytes(4))
    assert main(["inspect", _file(tmp_path, weird), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2J\\nname\tF32" in out


def test_inspect_tensors_of_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read is status 1 with its issues."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML")
    assert main(["inspect", str(bad), "--tensors"]) == 1
    assert "gguf.magic.mismatch" in capsys.readouterr().out


def test_dequant_writes_all_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without names every tensor is written, dequantized, in [out, in] order."""
    from safetensors.torch import load_file

    out = tmp_path / "x.safetensors"
    assert main(["dequant", _file(tmp_path), "--out", str(out)]) == 0
    assert "wrote 2 tensors" in capsys.readouterr().out
    got = load_file(str(out))
    assert got["blk.0.w"].tolist() == [Q8_VALUES, Q8_VALUES] and got["norm"].tolist() == [1, -2, 3]


def test_dequant_named_tensor_as_bfloat16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A named tensor alone, in the requested dtype."""
    from safetensors.torch import load_file

    out = tmp_path / "x.safetensors"
    assert main(["dequant", _file(tmp_path), "norm", "--out", str(out), "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    got = load_file(str(out))
    assert list(got) == ["norm"] and got["norm"].dtype is torch.bfloat16


def test_dequant_refuses_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown name or a type we cannot dequantize is status 1, and no file is written."""
    q8k = Tensor("act", (256,), int(GgmlType.Q8_K), bytes(292))
    out = tmp_path / "x.safetensors"
    assert main(["dequant", _file(tmp_path, q8k), "--out", str(out)]) == 1
    assert "gguf.tensor.type_unsupported" in capsys.readouterr().out and not out.exists()
    assert main(["dequant", _file(tmp_path), "ghost", "--out", str(out)]) == 1
    assert "gguf.tensor.not_found" in capsys.readouterr().out and not out.exists()


def test_dequant_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output path that cannot be written is status 1, not a traceback."""
    assert main(["dequant", _file(tmp_path), "--out", str(tmp_path / "no" / "dir" / "x.safetensors")]) == 1
    assert "gguf.output.unwritable" in capsys.readouterr().out


def test_dequant_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --out or an unknown dtype is status 2."""
    for argv in (["dequant", "f.gguf"], ["dequant", "f.gguf", "--out", "x", "--dtype", "int8"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    capsys.readouterr()


@pytest.mark.slow
def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    """`inspect --tensors | head -1` ends without a traceback."""
    many = [Tensor(f"t{i}", (1,), int(GgmlType.F32), bytes(4)) for i in range(5000)]
    path = _file(tmp_path, *many)
    cmd = [sys.executable, "-m", "quantdispatch", "inspect", path, "--tensors"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "error"}) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert "Traceback" not in err and code == 0
