"""The GGUF kernels against the memory's speed: decode (M=1) GB/s as a share of a measured copy
bandwidth, and prefill (M=32, 512) against fp32 dense ``torch.mm``.

In one run, for each layer shape (4096x4096 and 2048x8192, ``[out, in]``), GGUF type (Q4_0,
Q4_K, Q6_K, Q8_0), kernel (``matvec``: ``cpu-gguf-matvec``, float32 activations; ``q8dot``:
``cpu-gguf-q8dot``, activations quantized to 8 bits per block of 32 as llama.cpp does, on the rows
the module repacked at construction; ``q8dot-rows``: the same arithmetic on the file's layout, one
row at a time, the kernel before repacking, kept for this comparison) and thread count (1, 2):

- decode: the median (over rounds) of the mean time of 4 back-to-back ``GgufMatvecLinear``
  forwards of one row, after one untimed call (as a decode step's layers follow each other); GB/s of the packed
  weight's bytes (what a decode step must read); that as a % of the copy bandwidth measured at
  the same thread count in the same run;
- prefill: the median time of the module's forward on 32 and 512 rows (q8dot: the int8 GEMM
  where the CPU has AVX-512 VNNI; matvec and below VNNI: dequantize + ``F.linear``) as a ratio
  to ``torch.mm`` on the dense fp32 weight (> 1: faster than dense).

Copy bandwidth is STREAM's "copy" convention: (bytes read + bytes written) / time for
``dst.copy_(src)`` of a 256 MiB tensor, median. Cases are interleaved (each round times every case
once per thread count, so a noisy neighbour hits them alike), and decode weights rotate through copies totalling
>= 96 MiB so that each call reads from DRAM, not the 32 MB L3. The machine is shared: compare
ratios within a run.

``--isa avx2|avx512|avx512-vnni`` forces a SIMD level through ``QUANTDISPATCH_CPU_FEATURES``.

On a machine with more runnable threads than cores (shared), run with ``OMP_WAIT_POLICY=passive``:
libgomp's default spin-waiting then makes each 2-thread region cost milliseconds (measured here:
a 4096x4096 Q4_0 decode call 12 ms with 2 threads spinning, 0.66 ms passive, 0.57 ms on 1 thread).
The policy in effect is printed.

``--stat best`` reports the best round of each case (and of the copy) instead of the median: on a
machine other jobs load, what the kernel reaches when it has the memory to itself.

Run: ``.venv/bin/python benchmarks/bench_kernels_bandwidth.py [--isa LEVEL] [--rounds N] [--no-prefill] [--stat best]
[--kernels matvec,q8dot,q8dot-rows]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

MASKS: Final = {"avx2": "avx2,fma", "avx512": "avx2,fma,avx512f,avx512_bf16", "avx512-vnni": "native"}
SHAPES: Final = ((4096, 4096), (2048, 8192))
ROTATE_BYTES: Final = 96 * 2**20
COPY_BYTES: Final = 256 * 2**20
PREFILL_ROWS: Final = (32, 512)

Case = tuple[str, int, Callable[[], object]]
"""(key, threads, call)"""


def _bind(fn: Callable[..., object], *args: object) -> Callable[[], object]:
    def call() -> object:
        return fn(*args)

    return call


def _bind_rows(op: Callable[..., object], blocks: object, ggml_type: int, rows: int) -> Callable[..., object]:
    def call(x: object) -> object:
        return op(x, blocks, ggml_type, rows, "int8", False)

    return call


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--isa", choices=sorted(MASKS), help="force a SIMD level (through QUANTDISPATCH_CPU_FEATURES)")
    parser.add_argument("--rounds", type=int, default=7, help="decode rounds (medians); prefill takes half")
    parser.add_argument("--no-prefill", action="store_true", help="decode only")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--stat", choices=("median", "best"), default="median",
                        help="per case and for the copy: the median time over rounds, or the best (on a loaded machine)")
    parser.add_argument("--kernels", default="matvec,q8dot,q8dot-rows", help="kernels, comma-separated")
    args = parser.parse_args(argv)
    if args.isa is not None:
        os.environ["QUANTDISPATCH_CPU_FEATURES"] = MASKS[args.isa]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's quantdispatch, not an installed one

    import torch

    from quantdispatch.gguf.types import BLOCK, GgmlType
    from quantdispatch.kernels.gguf.matvec import GGUF_MATVEC, Activations, GgufMatvecLinear, current_level, has_gemm, matvec_kernels

    if matvec_kernels() is None:
        print("the GGUF kernels cannot be built here", file=sys.stderr)
        return 1
    thread_counts = [int(t) for t in args.threads.split(",")]
    types = (GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0)
    known: dict[str, Activations] = {"matvec": "float32", "q8dot": "int8", "q8dot-rows": "int8"}
    kernels = {name: known[name] for name in args.kernels.split(",")}
    scale_at = {GgmlType.Q4_0: 0, GgmlType.Q4_K: 0, GgmlType.Q6_K: 208, GgmlType.Q8_0: 0}
    print(f"CPU: {_cpu_model()}; ISA level: {current_level()} (QUANTDISPATCH_CPU_FEATURES="
          f"{os.environ.get('QUANTDISPATCH_CPU_FEATURES', 'unset')}); torch {torch.__version__}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"copy bandwidth convention: (bytes read + bytes written) / time of dst.copy_(src), 256 MiB; times: {args.stat} over rounds")

    def blocks(t: GgmlType, n: int, k: int, seed: int) -> torch.Tensor:
        per, size = BLOCK[t]
        g = torch.Generator().manual_seed(seed)
        b = torch.randint(0, 256, (n * k // per, size), dtype=torch.uint8, generator=g)
        b[:, scale_at[t]:scale_at[t] + 2] = torch.tensor([0x1F, 0x20], dtype=torch.uint8)  # float16 ~0.008, finite
        if t is GgmlType.Q4_K:
            b[:, 2:4] = torch.tensor([0x1F, 0x18], dtype=torch.uint8)
        return b.reshape(-1)

    cases: list[Case] = []
    copy_src = torch.randn(COPY_BYTES // 4)
    copy_dst = torch.empty_like(copy_src)
    for nt in thread_counts:
        cases.append((f"copy/{nt}", nt, lambda: copy_dst.copy_(copy_src)))
    packed: dict[tuple[int, int, GgmlType], int] = {}
    prefill: list[Case] = []
    for n, k in SHAPES:
        dense = torch.randn(n, k)
        xs = {m: torch.randn(m, k) for m in (1, *PREFILL_ROWS)}
        for nt in thread_counts:
            for m in PREFILL_ROWS:
                prefill.append((f"dense/{n}x{k}/{m}/{nt}", nt, _bind(torch.mm, xs[m], dense.T)))
        for t in types:
            first = blocks(t, n, k, 0)
            packed[(n, k, t)] = first.numel()
            copies = [first, *(blocks(t, n, k, s) for s in range(1, max(2, ROTATE_BYTES // first.numel())))]
            for name, activations in kernels.items():
                if name == "q8dot-rows":  # the file's layout: the op on the blocks as they are
                    modules: list[Callable[[torch.Tensor], object]] = [_bind_rows(GGUF_MATVEC, c, int(t), n) for c in copies]
                else:
                    modules = [GgufMatvecLinear(c, t, n, k, None, activations) for c in copies]
                turn = [0]

                def decode(ms: list[Callable[[torch.Tensor], object]] = modules, x: torch.Tensor = xs[1], i: list[int] = turn) -> object:
                    i[0] += 1
                    return ms[i[0] % len(ms)](x)

                for nt in thread_counts:
                    cases.append((f"{name}/{n}x{k}/{t.name}/1/{nt}", nt, decode))
                    for m in PREFILL_ROWS:
                        prefill.append((f"{name}/{n}x{k}/{t.name}/{m}/{nt}", nt, _bind(modules[0], xs[m])))

    times: dict[str, list[float]] = {}

    def run(todo: list[Case], rounds: int, burst: int) -> None:
        # By thread count, then each case: one untimed call (the OpenMP workers awake, as between
        # a decode step's back-to-back layers; a worker left asleep while other cases ran costs a
        # scheduler wake-up, milliseconds on a loaded machine), then the mean of `burst` calls.
        with torch.no_grad():
            for _ in range(rounds):
                for nt in thread_counts:
                    torch.set_num_threads(nt)
                    for key, _nt, call in (case for case in todo if case[1] == nt):
                        call()
                        start = time.perf_counter()
                        for _ in range(burst):
                            call()
                        times.setdefault(key, []).append((time.perf_counter() - start) / burst)

    run(cases, 1, 1)  # warm-up: builds, page faults
    times.clear()
    run(cases, args.rounds, 4)
    if not args.no_prefill:
        run(prefill, max(1, args.rounds // 2), 1)

    stat = _median if args.stat == "median" else min
    copy_gbs = {nt: 2 * COPY_BYTES / stat(times[f"copy/{nt}"]) / 1e9 for nt in thread_counts}
    print("copy GB/s: " + ", ".join(f"{nt} thr {v:.1f}" for nt, v in copy_gbs.items()))
    print()
    head = "| layer [out,in] | type | kernel | thr | decode us | GB/s | % copy | prefill M=32 × fp32 mm | prefill M=512 × fp32 mm |"
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    for n, k in SHAPES:
        for t in types:
            for name in kernels:
                for nt in thread_counts:
                    s = stat(times[f"{name}/{n}x{k}/{t.name}/1/{nt}"])
                    gbs = packed[(n, k, t)] / s / 1e9
                    ratios = []
                    for m in PREFILL_ROWS:
                        mine, dense_t = times.get(f"{name}/{n}x{k}/{t.name}/{m}/{nt}"), times.get(f"dense/{n}x{k}/{m}/{nt}")
                        ratios.append(f"{_median(dense_t) / _median(mine):.2f}" if mine and dense_t else "—")
                    print(f"| {n}x{k} | {t.name} | {name} | {nt} | {s * 1e6:.0f} | {gbs:.1f} | {100 * gbs / copy_gbs[nt]:.0f} % | "
                          f"{ratios[0]} | {ratios[1]} |")
    gemm = ", ".join(t.name for t in types if has_gemm(t)) or "none"
    print(f"\nq8dot prefill runs the int8 GEMM for: {gemm}; the rest dequantize + F.linear")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
