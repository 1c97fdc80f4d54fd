"""Reading GGUF tensor data: good files, and hostile ones answered with an ``Err`` naming the tensor."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from quantdispatch.gguf import ISSUE_CODES, GgmlType
from quantdispatch.gguf.data import DATA_ISSUE_CODES, TensorData, open_gguf_data
from quantdispatch.result import Err, Issue, Ok
from tests.gguf_files import ALIGNMENT, Tensor, gguf_bytes

Q8 = int(GgmlType.Q8_0)
F32 = int(GgmlType.F32)
Q8_BLOCK = struct.pack("<e", 1.0) + bytes(range(32))  # 34 bytes


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "t.gguf"
    path.write_bytes(data)
    return path


def _issues(path: Path | str) -> tuple[Issue, ...]:
    found = open_gguf_data(path)
    assert isinstance(found, Err), "expected an Err"
    assert all(i.code in ISSUE_CODES or i.code in DATA_ISSUE_CODES for i in found.error)
    return found.error


def _two(truncate: int = 0, second_offset: int | None = None, q8_cols: int = 64) -> bytes:
    blocks = Q8_BLOCK * (2 * q8_cols // 32)
    return gguf_bytes(
        [Tensor("blk.0.w", (q8_cols, 2), Q8, blocks), Tensor("norm", (4,), F32, struct.pack("<4f", 1, 2, 3, 4), second_offset)],
        truncate=truncate,
    )


def test_reads_each_tensor_exactly(tmp_path: Path) -> None:
    """Each tensor is exactly its bytes, at the header's offset; the shape is reversed for torch."""
    found = open_gguf_data(_write(tmp_path, _two()))
    assert isinstance(found, Ok)
    with found.value as data:
        w = data.tensor("blk.0.w")
        norm = data.tensor("norm")
        assert isinstance(w, Ok) and isinstance(norm, Ok)
        assert bytes(w.value.data) == Q8_BLOCK * 4 and w.value.torch_shape == (2, 64)
        assert struct.unpack("<4f", norm.value.data) == (1, 2, 3, 4)
        assert w.value.ggml_type is GgmlType.Q8_0


def test_unknown_name(tmp_path: Path) -> None:
    """A name the file does not have is gguf.tensor.not_found."""
    found = open_gguf_data(_write(tmp_path, _two()))
    assert isinstance(found, Ok)
    with found.value as data:
        missing = data.tensor("nope")
        assert isinstance(missing, Err) and missing.error[0].code == "gguf.tensor.not_found"


def test_truncated_file_names_the_tensor(tmp_path: Path) -> None:
    """A file cut inside the last tensor's data: out_of_bounds, naming that tensor."""
    (issue,) = _issues(_write(tmp_path, _two(truncate=ALIGNMENT - 16 + 1)))
    assert issue.code == "gguf.tensor.out_of_bounds" and "'norm'" in issue.message and issue.path == "$.tensors[1]"


def test_tensor_past_the_end(tmp_path: Path) -> None:
    """An offset far past the end of the file: out_of_bounds, and nothing allocated for it."""
    (issue,) = _issues(_write(tmp_path, _two(second_offset=2**50)))
    assert issue.code == "gguf.tensor.out_of_bounds" and "'norm'" in issue.message


def test_huge_shape_is_refused_without_allocation(tmp_path: Path) -> None:
    """A shape of 2^60 weights is refused from the header's numbers alone."""
    path = _write(tmp_path, gguf_bytes([Tensor("big", (2**30, 2**30), F32, b"")]))
    assert _issues(path)[0].code in {"gguf.tensor.out_of_bounds", "gguf.tensor.shape_invalid"}


def test_overlapping_tensors(tmp_path: Path) -> None:
    """Two tensors sharing bytes: gguf.tensor.overlap, naming both."""
    (issue,) = _issues(_write(tmp_path, _two(second_offset=ALIGNMENT)))
    assert issue.code == "gguf.tensor.overlap" and "'norm'" in issue.message and "'blk.0.w'" in issue.message


def test_rows_not_whole_blocks(tmp_path: Path) -> None:
    """Q8_0 rows of 48 weights are not whole 32-weight blocks: shape_misaligned, naming the tensor."""
    path = _write(tmp_path, gguf_bytes([Tensor("odd", (48, 2), Q8, Q8_BLOCK * 3)]))
    (issue,) = _issues(path)
    assert issue.code == "gguf.tensor.shape_misaligned" and "'odd'" in issue.message


def test_directory_is_unreadable(tmp_path: Path) -> None:
    """A directory is gguf.file.unreadable."""
    assert _issues(tmp_path)[0].code == "gguf.file.unreadable"


def test_dev_zero_is_unreadable() -> None:
    """/dev/zero (endless, not a regular file) is refused before reading it."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    assert _issues("/dev/zero")[0].code == "gguf.file.unreadable"


def test_fifo_is_unreadable_and_does_not_block(tmp_path: Path) -> None:
    """A FIFO with no writer is refused at once instead of blocking the open."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    result: list[tuple[Issue, ...]] = []
    worker = threading.Thread(target=lambda: result.append(_issues(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert result and result[0][0].code == "gguf.file.unreadable"


def test_empty_file_without_tensors(tmp_path: Path) -> None:
    """A header with no tensors (no data section) opens and has nothing to read."""
    found = open_gguf_data(_write(tmp_path, gguf_bytes([])))
    assert isinstance(found, Ok)
    with found.value as data:
        assert data.header.tensors == ()


def test_close_with_a_live_view_does_not_raise(tmp_path: Path) -> None:
    """Closing while a tensor view is alive leaves the unmapping to that view; no BufferError."""
    found = open_gguf_data(_write(tmp_path, _two()))
    assert isinstance(found, Ok)
    with found.value as data:
        kept = data.tensor("norm")
    assert isinstance(kept, Ok) and isinstance(kept.value, TensorData)
    assert struct.unpack("<4f", kept.value.data) == (1, 2, 3, 4)
