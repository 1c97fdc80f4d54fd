"""Time GGUF dequantization: ours (torch) against ``gguf.quants.dequantize`` (numpy), same run.

A 4096 x 4096 tensor of each benchmarked type, random blocks with finite scales. gguf-py always
returns float32 in a new array; its bfloat16 time adds the one torch cast a caller needs. Ours is
timed on the default path (the fused C kernels where they are built, see
``quantdispatch/kernels/gguf/native.py``) writing a new tensor (``fresh``: what a caller gets) and
into a preallocated one (``into``: what a loader reusing a buffer gets; the difference is mostly
page faults), and on the eager torch path (the fallback without a C compiler), fresh.
Medians; 1 and 2 torch threads (numpy is single-threaded either way). Every result is checked
bit-exact against gguf-py before timing.

Run: ``.venv/bin/python benchmarks/bench_gguf_dequant.py [--repeat N] [--types Q4_K,Q8_0]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gguf
import numpy as np
import torch
from numpy.typing import NDArray

from quantdispatch.gguf import BLOCK, GgmlType
from quantdispatch.kernels.gguf import dequantize
from quantdispatch.kernels.gguf.native import native_kernels

TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XS")
F16_SCALES = {"Q4_0": (0,), "Q8_0": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,), "IQ2_XS": (0,)}
N = 4096


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm up: imports, tables, allocator
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _tensor(name: str) -> NDArray[Any]:
    per_block, size = BLOCK[GgmlType[name]]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (N, N // per_block * size), dtype=np.uint8)
    blocks = raw.reshape(-1, size)
    scales = (rng.standard_normal(blocks.shape[0]) * 0.01).astype(np.float16).view(np.uint8).reshape(-1, 2)
    for at in F16_SCALES[name]:
        blocks[:, at : at + 2] = scales
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ref-repeat", type=int, default=3)
    parser.add_argument("--types", default=",".join(TYPES))
    args = parser.parse_args()
    print(f"{N}x{N} tensor, medians in ms; ratio = gguf-py time / ours (higher is better)")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (others' work skews 2-thread runs most)")
    print(f"native kernels built: {native_kernels() is not None}")
    print(f"{'type':7} {'dtype':9} {'thr':>3} {'gguf-py':>8} {'fresh':>7} {'into':>7} {'eager':>7} {'ratio fresh':>11} {'ratio into':>10} {'ratio eager':>11}")
    for name in args.types.split(","):
        t = GgmlType[name]
        qtype = gguf.GGMLQuantizationType(int(t))
        raw = _tensor(name)
        source = torch.from_numpy(raw).reshape(-1)
        expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype))
        ref32 = _median_ms(lambda: gguf.quants.dequantize(raw, qtype), args.ref_repeat)
        ref16 = _median_ms(lambda: torch.from_numpy(gguf.quants.dequantize(raw, qtype)).to(torch.bfloat16), args.ref_repeat)
        for dtype, ref in ((torch.float32, ref32), (torch.bfloat16, ref16)):
            for path in ("eager", "auto"):
                assert torch.equal(dequantize(source, t, (N, N), dtype, path=path).view(torch.int16 if dtype is torch.bfloat16 else torch.int32),
                                   expected.to(dtype).view(torch.int16 if dtype is torch.bfloat16 else torch.int32)), (name, path)
            out = torch.empty((N, N), dtype=dtype)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                fresh = _median_ms(lambda: dequantize(source, t, (N, N), dtype), args.repeat)
                into = _median_ms(lambda: dequantize(source, t, (N, N), dtype, out=out), args.repeat)
                eager = _median_ms(lambda: dequantize(source, t, (N, N), dtype, path="eager"), args.repeat)
                label = str(dtype).removeprefix("torch.")
                print(f"{name:7} {label:9} {threads:>3} {ref:8.1f} {fresh:7.1f} {into:7.1f} {eager:7.1f} {ref / fresh:10.1f}x {ref / into:9.1f}x {ref / eager:10.1f}x", flush=True)
        torch.set_num_threads(1)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
