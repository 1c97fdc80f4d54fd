"""One linear layer on each CPU kernel: decode time and bandwidth, prefill against float32 dense.

For each shape (out × in: 4096×4096 and 2048×8192) and thread count (1, 2), in one run:

- ``copy GB/s``: a STREAM-like copy of 256 MiB (``dst.copy_(src)``), bytes read plus bytes written
  over the time, median of 5, measured at that thread count just before the layers;
- decode (one input row): median and best time per call (the best is the kernel without its
  neighbours, on a shared machine), the layer's packed bytes (codes and scales, what a
  call must read) over that time in GB/s, and that as a percent of the copy bandwidth;
  the decode speed-ups over torch's int4 kernel (``x aten``) and the float32 dense layer (``x fp32``), medians of the same run;
- prefill (32 and 512 rows): the float32 dense layer's median time over the kernel's (× fp32 dense).

Kernels: ``cpu-q4-q8dot`` (``Q4Q8Linear``, ours: int8 activations and integer dot products at decode;
float32 and bf16 activations), ``cpu-q4`` (``Q4Linear``, ours, float32 activations, and bf16 ones, whose prefill runs a
bf16 GEMM where the CPU has native bf16), ``cpu-int4`` (``Int4Linear``: torch's
``_weight_int4pack_mm_for_cpu`` on bf16), ``cpu-e4m3`` (``Fp8Linear``, 128×128 blocks),
``cpu-fp4`` (``Fp4Linear``, NVFP4), ``fp32 dense`` and ``bf16 dense`` (``F.linear``), ``bf16 GemvLinear`` (the native
bf16 matrix-vector kernel that CPU loads put under large dense bf16 layers). 4-bit weights
have groups of 128. Decode weights rotate through copies (at least ~160 MB per kernel) so that each
call reads them from DRAM, as a model's layers do; each round times every kernel once, so a noisy
neighbour hits all of them alike. The machine this was written on is shared: compare ratios within
one run.

Run from the repository root as a module, so that this checkout's ``quantdispatch`` is the one
imported (the header prints its path): ``.venv/bin/python -m benchmarks.bench_layer_kernels
[--isa avx2|avx512|avx512-vnni] [--rounds N]`` (``--isa`` masks the CPU's features with ``QUANTDISPATCH_CPU_FEATURES`` before anything is built).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = ((4096, 4096), (2048, 8192))
GROUP = 128
ROTATE_BYTES = 160 * 2**20
MASKS = {"avx2": "avx2,fma", "avx512": "avx2,fma,avx512f,avx512_bf16", "avx512-vnni": "avx2,fma,avx512f,avx512_bf16,avx512_vnni"}

Forward = Callable[[torch.Tensor], torch.Tensor]


class Case(NamedTuple):
    """One kernel on one shape: its name, a maker of one copy of the layer, the bytes a call reads, its input dtype."""

    name: str
    make: Callable[[], Forward]
    nbytes: int
    dtype: torch.dtype


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def copy_bandwidth() -> float:
    """Bytes per second of a 256 MiB copy (read + write), median of 5."""
    src, dst = torch.ones(256 * 2**20, dtype=torch.uint8), torch.empty(256 * 2**20, dtype=torch.uint8)
    dst.copy_(src)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def cases(n: int, k: int) -> list[Case]:
    """Every kernel that runs here, on an ``n`` × ``k`` layer with random weights."""
    from quantdispatch.kernels.fp4_native import Fp4Linear, Nvfp4Blocks, native_fp4
    from quantdispatch.kernels.fp8_native import Fp8Blocks, Fp8Linear, native_fp8
    from quantdispatch.kernels.int4 import Int4Linear, Int4Weights
    from quantdispatch.kernels.int4_native import Q4Linear, native_int4
    from quantdispatch.kernels.int4_q8dot import Q4Q8Linear, native_q4q8

    g = torch.Generator().manual_seed(n + k)
    groups = k // GROUP
    scale = torch.rand(groups, n, generator=g) * 0.002 + 0.001
    zero = (8 - torch.randint(0, 16, (groups, n), generator=g).float()) * scale

    def int4_weights() -> Int4Weights:
        return Int4Weights(torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g), scale, zero, GROUP)

    found = [Case("fp32 dense", lambda: _dense(torch.randn(n, k, generator=g) * 0.02), 4 * n * k, torch.float32),
             Case("bf16 dense", lambda: _dense((torch.randn(n, k, generator=g) * 0.02).to(torch.bfloat16)), 2 * n * k, torch.bfloat16),
             Case("bf16 GemvLinear (ours)", lambda: _gemv((torch.randn(n, k, generator=g) * 0.02).to(torch.bfloat16)), 2 * n * k,
                  torch.bfloat16),
             Case("cpu-int4 (aten, bf16 in)", lambda: Int4Linear(int4_weights(), None, torch.bfloat16), n * k // 2 + 4 * n * groups,
                  torch.bfloat16)]
    if native_q4q8() is not None:
        found += [Case("cpu-q4-q8dot (ours, fp32 in)", lambda: Q4Q8Linear(int4_weights(), None, torch.float32),
                       n * k // 2 + 8 * n * groups, torch.float32),
                  Case("cpu-q4-q8dot (ours, bf16 in)", lambda: Q4Q8Linear(int4_weights(), None, torch.bfloat16),
                       n * k // 2 + 8 * n * groups, torch.bfloat16)]
    if native_int4() is not None:
        found += [Case("cpu-q4 (ours, fp32 in)", lambda: Q4Linear(int4_weights(), None, torch.float32), n * k // 2 + 8 * n * groups,
                       torch.float32),
                  Case("cpu-q4 (ours, bf16 in)", lambda: Q4Linear(int4_weights(), None, torch.bfloat16), n * k // 2 + 8 * n * groups,
                       torch.bfloat16)]
    if native_fp8() is not None:
        def fp8() -> Forward:
            weight = torch.randint(0, 0x7E, (n, k), dtype=torch.uint8, generator=g)
            return Fp8Linear(Fp8Blocks(weight, torch.rand(-(-n // 128), -(-k // 128), generator=g) * 0.01, 128, 128), None)
        found.append(Case("cpu-e4m3 (ours, fp32 in)", fp8, n * k + 4 * (n // 128) * (k // 128), torch.float32))
    if native_fp4() is not None:
        def fp4() -> Forward:
            packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
            scale8 = torch.randint(0x20, 0x40, (n, k // 16), dtype=torch.uint8, generator=g)  # E4M3 block scales as stored
            return Fp4Linear(Nvfp4Blocks(packed, scale8, torch.tensor([0.01]), False), None, torch.float32)
        found.append(Case("cpu-fp4 (ours, fp32 in)", fp4, n * k // 2 + n * k // 16, torch.float32))
    return found


def _dense(weight: torch.Tensor) -> Forward:
    return lambda x: F.linear(x, weight)


def _gemv(weight: torch.Tensor) -> Forward:
    """``GemvLinear`` on ``weight``: the native bf16 kernel up to 8 rows, ``F.linear`` above."""
    from quantdispatch.kernels.dense_native import GemvLinear

    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    return GemvLinear(layer)


def _times_ms(layers: dict[str, tuple[list[Forward], torch.dtype]], x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call of each layer on ``x`` (cast to its dtype), interleaved by rounds."""
    inputs = {name: x.to(dtype) for name, (_, dtype) in layers.items()}
    for name, (copies, _) in layers.items():
        copies[0](inputs[name])  # first-call work (builds, packing) is not timed
    times: dict[str, list[float]] = {name: [] for name in layers}
    for r in range(rounds):
        for name, (copies, _) in layers.items():
            start = time.perf_counter()
            copies[r % len(copies)](inputs[name])
            times[name].append(time.perf_counter() - start)
    return {name: [t * 1e3 for t in found] for name, found in times.items()}


def run_shape(n: int, k: int, threads: int, rounds: int, prefill_rows: tuple[int, ...], prefill_rounds: int) -> None:
    """Time every kernel on one shape at one thread count and print its table."""
    torch.set_num_threads(threads)
    bandwidth = copy_bandwidth()
    found = cases(n, k)
    decode = {c.name: ([c.make() for _ in range(max(2, min(12, ROTATE_BYTES // c.nbytes)))], c.dtype) for c in found}
    nbytes = {c.name: c.nbytes for c in found}
    g = torch.Generator().manual_seed(threads)
    with torch.inference_mode():
        times = _times_ms(decode, torch.randn(1, k, generator=g), rounds)
        ms = {name: statistics.median(t) for name, t in times.items()}
        best = {name: min(t) for name, t in times.items()}
        single = {name: ([copies[0]], dtype) for name, (copies, dtype) in decode.items()}
        prefill = {m: {name: statistics.median(t) for name, t in _times_ms(single, torch.randn(m, k, generator=g), prefill_rounds).items()}
                   for m in prefill_rows}
    print(f"\n{n}x{k} (out x in), {threads} thread(s), copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    head = "".join(f"{f'M={m} x fp32':>13}" for m in prefill_rows)
    aten = ms.get("cpu-int4 (aten, bf16 in)", float("nan"))
    print(f"  {'kernel':<29} {'decode us':>10} {'best us':>8} {'MB read':>8} {'GB/s':>7} {'% copy':>7} {'x aten':>7} {'x fp32':>7}{head}")
    for name in decode:
        rate = nbytes[name] / (ms[name] * 1e-3)
        ratios = "".join(f"{prefill[m]['fp32 dense'] / prefill[m][name]:>12.2f}x" for m in prefill_rows)
        print(f"  {name:<29} {ms[name] * 1e3:>10.0f} {best[name] * 1e3:>8.0f} {nbytes[name] / 1e6:>8.1f} {rate / 1e9:>7.1f} "
              f"{100 * rate / bandwidth:>6.0f}% {aten / ms[name]:>6.2f}x {ms['fp32 dense'] / ms[name]:>6.2f}x{ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--isa", choices=sorted(MASKS), help="mask the CPU down to this SIMD level (QUANTDISPATCH_CPU_FEATURES)")
    parser.add_argument("--rounds", type=int, default=15, help="decode rounds (median)")
    parser.add_argument("--prefill-rounds", type=int, default=3)
    parser.add_argument("--prefill-rows", type=int, nargs="*", default=[32, 512])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    if args.isa is not None:
        os.environ["QUANTDISPATCH_CPU_FEATURES"] = MASKS[args.isa]
    import quantdispatch
    from quantdispatch.kernels._native import isa_level
    from quantdispatch.probing import cpu_features

    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; features: {', '.join(cpu_features().names()) or 'none'}; "
          f"kernels' SIMD level: {isa_level()}; torch {torch.__version__}; quantdispatch from {os.path.dirname(quantdispatch.__file__)}")
    print(f"decode: median of {args.rounds} rounds; prefill: median of {args.prefill_rounds}; 4-bit groups of {GROUP}")
    for n, k in SHAPES:
        for threads in args.threads:
            run_shape(n, k, threads, args.rounds, tuple(args.prefill_rows), args.prefill_rounds)


if __name__ == "__main__":
    main()
