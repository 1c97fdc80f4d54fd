"""How fast decoding could be here: the machine's memory bandwidth, measured, and the bytes a
decode step reads.

A decode step of a model too large for the caches reads every weight once, so its speed is
bounded by ``bandwidth / bytes per token``. ``quantdispatch bench`` and the benchmarks print that
limit beside the measured tokens/s, so a figure says how far from the memory it is, not only how
it compares with another stack.

- ``copy_bandwidth`` measures a STREAM-style copy with torch (one large ``copy_`` between two
  buffers, on torch's threads): bytes read plus bytes written per second, as STREAM's "Copy"
  counts them, median of the repeats.
- ``bytes_per_token`` sums what a model holds that one decode step reads: every parameter and
  buffer, less the input embedding table (a step reads one row of it), unless the output head
  shares that table (tied embeddings, which the head reads whole).

torch is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["copy_bandwidth", "bytes_per_token", "limit_tokens_per_s"]

_MIB = 1 << 20


def copy_bandwidth(*, mib: int = 256, repeat: int = 7, threads: int | None = None) -> float:
    """Bytes per second of a STREAM-style copy (read + write) of ``mib`` MiB, median of ``repeat``.

    ``threads`` sets torch's intra-op threads for the measurement (and restores them); ``None``
    keeps the current count. The buffers are touched first, so page faults are not measured.
    """
    import torch

    if mib < 1 or repeat < 1:
        raise ValueError(f"copy_bandwidth needs mib >= 1 and repeat >= 1, got {mib} and {repeat}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        source = torch.ones(mib * _MIB // 4, dtype=torch.float32)
        target = torch.zeros_like(source)
        target.copy_(source)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            target.copy_(source)
            times.append(time.perf_counter() - start)
        return 2 * source.numel() * 4 / statistics.median(times)
    finally:
        torch.set_num_threads(before)


def bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decode step of ``model`` reads: its parameters and buffers (each
    storage once), less the input embedding table unless the output head reads the same storage.

    A module that keeps two forms of a weight (a packed one and a kernel's repacked one) counts
    both; the loaders drop the form their kernel does not read.
    """
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    total = sum(seen.values())
    get_input = getattr(model, "get_input_embeddings", None)
    get_output = getattr(model, "get_output_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    head = get_output() if callable(get_output) else None
    if embedding is None:
        return total
    head_storages = {t.untyped_storage().data_ptr() for t in [*head.parameters(), *head.buffers()]} if head is not None else set()
    for tensor in [*embedding.parameters(), *embedding.buffers()]:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in head_storages and pointer in seen:
            total -= seen.pop(pointer)
    return total


def limit_tokens_per_s(bandwidth: float, per_token: int) -> float:
    """The decode speed a step reading ``per_token`` bytes reaches at ``bandwidth`` bytes/s (the
    STREAM copy figure: reads and writes together, which a read-only stream matches or exceeds on
    the machines measured, so the limit is not generous).

    >>> limit_tokens_per_s(40e9, 1_000_000_000)
    40.0
    """
    return bandwidth / per_token if per_token > 0 else float("inf")
