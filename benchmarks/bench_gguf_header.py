"""Time reading GGUF headers: ``read_gguf_header`` against gguf-py's ``GGUFReader``, same run.

Both read the metadata and the tensor infos and no tensor data (gguf-py memory-maps the file and
builds a numpy view per value and per tensor). The files are the valid real-world files (from
``../shared/realworld/gguf`` when present) and one generated file with many tensors and a
32k-entry vocabulary, like a real LLM header.

Run: ``.venv/bin/python benchmarks/bench_gguf_header.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from quantdispatch.gguf import read_gguf_header
from quantdispatch.result import Ok

REALWORLD = Path(__file__).resolve().parents[1].parent / "shared" / "realworld" / "gguf"
N_TENSORS = 2000
N_VOCAB = 32_000


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm the page cache and the imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _ggufpy(path: Path) -> Callable[[], object]:
    return lambda: gguf.GGUFReader(path)


def _ours(path: Path) -> Callable[[], object]:
    def run() -> object:
        result = read_gguf_header(path)
        assert isinstance(result, Ok), result.error
        return result.value

    return run


def _generate(path: Path) -> None:
    """Write a header shaped like a small LLM's: a 32k vocabulary and thousands of tensors."""
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_name("bench")
    writer.add_block_count(N_TENSORS // 10)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"▁tok{i}" for i in range(N_VOCAB)])
    writer.add_token_scores([float(-i) for i in range(N_VOCAB)])
    writer.add_token_types([1] * N_VOCAB)
    for i in range(N_TENSORS):
        writer.add_tensor(f"blk.{i // 10}.t{i % 10}.weight", np.zeros(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _files(scratch: Path) -> list[Path]:
    generated = scratch / f"generated-{N_TENSORS}-tensors-{N_VOCAB}-vocab.gguf"
    _generate(generated)
    real = sorted(REALWORLD.glob("*.gguf")) if REALWORLD.is_dir() else []
    return [p for p in real if isinstance(read_gguf_header(p), Ok)] + [generated]


def _row(path: Path, repeat: int) -> tuple[str, float, float | None]:
    ours = _median_ms(_ours(path), repeat)
    try:
        theirs: float | None = _median_ms(_ggufpy(path), repeat)
    except Exception:
        theirs = None
    return path.name, ours, theirs


def main() -> None:
    """Time both readers on each file and print medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per reader and file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_row(path, args.repeat) for path in _files(Path(tmp))]
    print(f"median of {args.repeat} runs, ms; ratio = gguf-py / ours (higher: we are faster)")
    print(f"{'file':60} {'ours':>9} {'gguf-py':>9} {'ratio':>7}")
    for name, ours, theirs in rows:
        their_text = f"{theirs:9.2f}" if theirs is not None else f"{'refuses':>9}"
        ratio = f"{theirs / ours:7.1f}" if theirs is not None else f"{'-':>7}"
        print(f"{name[:60]:60} {ours:9.2f} {their_text} {ratio}")


if __name__ == "__main__":
    main()
