"""One 4096x4096 4-bit g128 layer on the CPU: our two int4 kernels against dense layers and the other stacks.

Side by side in one run, interleaved (each round times every case once, so a noisy neighbour hits
all of them alike), medians, at batch 1 (decode) and 32 (prefill), on 1 and 2 threads. Weights
rotate through several copies (at least ~160 MB per case) so that each call reads them from DRAM,
as a model's layers do, not from the 32 MB L3.

- ``fp32 dense`` (the baseline of the ratios), ``bf16 dense``: ``F.linear`` of the dequantized weight;
- ``ours native (cpu-q4)``: ``Q4Linear``, the C kernel (float32 activations);
- ``ours aten (cpu-int4)``: ``Int4Linear``, torch's ``_weight_int4pack_mm_for_cpu`` (bf16 activations);
- ``gptqmodel TorchAtenLinear``: GPTQModel 7.6.0's CPU kernel (the same aten op), bf16 input;
- ``bitsandbytes nf4``: ``Linear4bit`` in eval, bf16 compute (its packed ``gemv_4bit`` fast path on
  AVX512-BF16 CPUs; plain ``matmul_4bit`` elsewhere);
- ``bandwidth limit``: the packed layer's bytes (codes + scales) over a measured copy bandwidth.

Run: ``GPTQMODEL_CPU_WORKERS=2 .venv/bin/python benchmarks/bench_int4_layer.py [--rounds N] [--skip-slow]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from quantdispatch.configs import GptqV2
from quantdispatch.kernels.int4 import Int4Linear, int4_from_gptq
from quantdispatch.kernels.int4_native import Q4Linear, native_int4
from quantdispatch.kernels.modules import GptqLinear
from quantdispatch.probing import cpu_features
from quantdispatch.testing import Quantized, quantize_gptq

SIZE = 4096
CONFIG = GptqV2(bits=4, group_size=128, sym=False)
ROTATE_BYTES = 160 * 2**20

Forward = Callable[[torch.Tensor], torch.Tensor]


def _copies(make: Callable[[], Forward], nbytes: int) -> list[Forward]:
    return [make() for _ in range(max(2, min(12, ROTATE_BYTES // max(1, nbytes))))]


def _portable(q: Quantized) -> GptqLinear:
    layer = GptqLinear(CONFIG, SIZE, SIZE, bias=False, device="meta")
    layer.load_state_dict({k: v.clone() for k, v in q.tensors.items()}, assign=True)
    return layer


def _gptqmodel(q: Quantized) -> Callable[[], Forward] | None:
    try:
        from gptqmodel.nn_modules.qlinear.torch_aten_kernel import TorchAtenLinear
    except ImportError:
        return None

    def make() -> Forward:
        layer = TorchAtenLinear(bits=4, group_size=CONFIG.group_size, sym=False, desc_act=False, in_features=SIZE,
                                out_features=SIZE, bias=False, pack_dtype=torch.int32, register_buffers=True)
        for name in ("qweight", "qzeros", "scales", "g_idx"):
            getattr(layer, name).copy_(q.tensors[name])
        layer.post_init()
        forward: Forward = layer.eval()
        return forward
    return make


def _bnb(weight: torch.Tensor) -> Callable[[], Forward] | None:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None

    def make() -> Forward:
        modules: Any = bnb.nn.modules
        layer = modules.Linear4bit(SIZE, SIZE, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer.weight = modules.Params4bit(weight.to(torch.bfloat16), requires_grad=False, quant_type="nf4")._quantize("cpu")
        forward: Forward = layer.eval()
        return forward
    return make


def _dense(weight: torch.Tensor) -> Forward:
    return lambda x: F.linear(x, weight)


def _bandwidth() -> float:
    """Bytes per second of a large copy (read + write), median of 5."""
    src, dst = torch.empty(64 * 2**20, dtype=torch.uint8), torch.empty(64 * 2**20, dtype=torch.uint8)
    src.fill_(1)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-slow", action="store_true", help="leave out cases slower than 20x fp32 dense")
    args = parser.parse_args()
    torch.manual_seed(0)
    q = quantize_gptq(torch.randn(SIZE, SIZE) * 0.02, CONFIG)
    base = _portable(q)
    weights = int4_from_gptq(base)
    assert not isinstance(weights, str)
    packed_bytes = SIZE * SIZE // 2 + (SIZE // 128) * SIZE * 2 * 2
    makers: list[tuple[str, Callable[[], Forward], int, torch.dtype]] = [
        ("fp32 dense", lambda: _dense(q.weight.clone()), SIZE * SIZE * 4, torch.float32),
        ("bf16 dense", lambda: _dense(q.weight.to(torch.bfloat16)), SIZE * SIZE * 2, torch.bfloat16),
        ("ours aten (cpu-int4), bf16 in", lambda: Int4Linear(weights, None, torch.bfloat16), packed_bytes, torch.bfloat16),
    ]
    if native_int4() is not None:
        makers.append(("ours native (cpu-q4), fp32 in", lambda: Q4Linear(weights, None, torch.float32), packed_bytes, torch.float32))
    gm = _gptqmodel(q)
    if gm is not None:
        makers.append(("gptqmodel TorchAtenLinear, bf16 in", gm, packed_bytes, torch.bfloat16))
    bb = _bnb(q.weight)
    if bb is not None:
        makers.append(("bitsandbytes nf4 Linear4bit, bf16", bb, packed_bytes, torch.bfloat16))
    if not args.skip_slow:
        makers.append(("ours portable (per-call dequant), fp32", lambda: _portable(q), packed_bytes, torch.float32))
    layers = {name: (_copies(make, nbytes), dtype) for name, make, nbytes, dtype in makers}
    features = ", ".join(cpu_features().names()) or "none"
    print(f"4-bit g128 asym {SIZE}x{SIZE}, torch {torch.__version__}, CPU features: {features}; median of {args.rounds} rounds")
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            limit = packed_bytes / _bandwidth()
            for batch in (1, 32):
                x = torch.randn(batch, SIZE)
                exact = F.linear(x.double(), q.weight.double())
                times: dict[str, list[float]] = {name: [] for name in layers}
                outs: dict[str, torch.Tensor] = {}
                for name, (copies, dtype) in layers.items():
                    outs[name] = copies[0](x.to(dtype))  # warm: first-call work (bnb repacks) is not timed
                for r in range(args.rounds):
                    for name, (copies, dtype) in layers.items():
                        xi = x.to(dtype)
                        start = time.perf_counter()
                        copies[r % len(copies)](xi)
                        times[name].append(time.perf_counter() - start)
                base_ms = statistics.median(times["fp32 dense"]) * 1e3
                print(f"\nthreads {threads}, batch {batch}   (bandwidth limit for the packed layer: {limit * 1e3:.3f} ms)")
                print(f"  {'case':<40} {'ms':>9} {'x fp32 dense':>13} {'x limit':>8} {'max rel err':>12}")
                for name in layers:
                    ms = statistics.median(times[name]) * 1e3
                    err = ((outs[name].double() - exact).abs().max() / exact.abs().max()).item()
                    print(f"  {name:<40} {ms:>9.3f} {base_ms / ms:>12.2f}x {ms / (limit * 1e3):>7.1f}x {err:>12.2e}")


if __name__ == "__main__":
    main()
