"""``dequant --out``: only a regular file that is not the input is ever replaced, atomically.

These tests run as root in CI, so they never name a real device: device nodes and FIFOs are made
inside ``tmp_path``.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest

from quantdispatch.cli import main
from quantdispatch.fileio import check_output, write_replacing
from quantdispatch.gguf import GgmlType
from tests.gguf_files import Tensor, gguf_bytes


def _gguf(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes([Tensor("norm", (3,), int(GgmlType.F32), struct.pack("<3f", 1, -2, 3))]))
    return path


def _dequant(gguf: Path, out: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["dequant", str(gguf), "--out", str(out)])
    return code, capsys.readouterr().out


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".quantdispatch-")]


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers, inside tmp_path
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")


def test_a_device_node_is_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a character device (what /dev/full is) is refused; the node stays a device."""
    node = tmp_path / "full"
    _device(node)
    code, out = _dequant(_gguf(tmp_path), node, capsys)
    assert code == 1 and "file.out.not_regular" in out and "a device" in out
    assert stat.S_ISCHR(os.lstat(node).st_mode) and not _leftovers(tmp_path)


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a FIFO is refused before it is opened (opening it would block)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, out = _dequant(_gguf(tmp_path), fifo, capsys)
    assert code == 1 and "file.out.not_regular" in out and "a FIFO" in out
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("target", ["regular", "dangling"])
def test_a_symlink_is_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    """--out naming a symbolic link (to a file, or dangling) is refused; link and file unchanged."""
    victim = tmp_path / "victim.txt"
    if target == "regular":
        victim.write_text("keep me")
    link = tmp_path / "link.safetensors"
    link.symlink_to(victim)
    code, out = _dequant(_gguf(tmp_path), link, capsys)
    assert code == 1 and "file.out.not_regular" in out and "a symbolic link" in out
    assert link.is_symlink() and (victim.read_text() == "keep me" if target == "regular" else not victim.exists())


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a directory is refused (also with a trailing slash)."""
    (tmp_path / "d").mkdir()
    for spelled in (tmp_path / "d", f"{tmp_path / 'd'}/"):
        code, out = _dequant(_gguf(tmp_path), spelled, capsys)
        assert code == 1 and "file.out.not_regular" in out and "a directory" in out


def test_the_input_is_never_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The input under its own name, another spelling or a hard link is refused; it is unchanged."""
    gguf = _gguf(tmp_path)
    before = gguf.read_bytes()
    (tmp_path / "sub").mkdir()
    os.link(gguf, tmp_path / "hard.gguf")
    monkeypatch.chdir(tmp_path / "sub")
    for spelled in (gguf, "../m.gguf", f"{tmp_path}/sub/../m.gguf", f"{tmp_path}//m.gguf", tmp_path / "hard.gguf"):
        code, out = _dequant(gguf, spelled, capsys)
        assert code == 1 and "file.out.is_input" in out, spelled
    assert gguf.read_bytes() == before and not _leftovers(tmp_path)
    (tmp_path / "link.gguf").symlink_to(gguf)  # the input named through a link, the output directly
    code, out = _dequant(tmp_path / "link.gguf", gguf, capsys)
    assert code == 1 and "file.out.is_input" in out and gguf.read_bytes() == before


def test_the_file_follows_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new output gets the mode open(path, "w") would give it (0o666 & ~umask), not 0o600."""
    out = tmp_path / "x.safetensors"
    old = os.umask(0o027)
    try:
        code, _ = _dequant(_gguf(tmp_path), out, capsys)
    finally:
        os.umask(old)
    assert code == 0 and stat.S_IMODE(os.stat(out).st_mode) == 0o640
    os.umask(0o002)
    try:
        code, _ = _dequant(_gguf(tmp_path), out, capsys)  # replacing an existing regular file
    finally:
        os.umask(old)
    assert code == 0 and stat.S_IMODE(os.stat(out).st_mode) == 0o664 and not _leftovers(tmp_path)


def test_a_full_disk_leaves_nothing_half_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing: a coded issue, status 1, the old file intact and no temporary left."""
    import quantdispatch.kernels.gguf.export as export

    def full(tensors: object, name: str, dtype: str = "float32") -> None:
        Path(name).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "write_safetensors", full)
    out = tmp_path / "x.safetensors"
    code, text = _dequant(_gguf(tmp_path), out, capsys)
    assert code == 1 and "gguf.output.unwritable" in text and "no space left" in text and not out.exists()
    out.write_bytes(b"old")
    code, text = _dequant(_gguf(tmp_path), out, capsys)
    assert code == 1 and out.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_a_name_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """A FIFO created at the target while the output is written is left alone."""
    target = tmp_path / "x.bin"

    def write(name: str) -> None:
        Path(name).write_bytes(b"data")
        os.mkfifo(target)

    issue = write_replacing(target, write)
    assert issue is not None and issue.code == "file.out.changed"
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and not _leftovers(tmp_path)


def test_path_errors_are_issues(tmp_path: Path) -> None:
    """A name that cannot be looked up is a coded issue, never an exception."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {"file/child": "file.out.unwritable", "loop": "file.out.not_regular", "n" * 300: "file.out.unwritable",
             "nul\0byte": "file.out.unwritable"}
    for name, code in cases.items():
        issue = check_output(f"{tmp_path}/{name}")
        assert issue is not None and issue.code == code, name
    assert write_replacing(tmp_path / "no" / "dir" / "x", lambda name: None) is not None
