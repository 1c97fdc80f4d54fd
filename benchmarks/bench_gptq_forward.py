"""Time one GPTQ linear forward: our portable module against GPTQModel's CPU kernel and dense layers.

A 4096x4096 layer, 4-bit, group size 128, symmetric (GPTQ v2 layout: what GPTQModel holds in
memory after loading), quantized by our RTN writer. Same run, same input, medians:

- ``fp32 dense``: ``F.linear`` with the dequantized weight in float32 (the baseline of the ratios);
- ``bf16 dense``: the same in bfloat16;
- ``ours per-call``: ``GptqLinear`` dequantizing on every call (float32 and bfloat16 input);
- ``ours at-load``: ``GptqLinear(dequantize_at_load=True)``: dense weight kept after the first call;
- ``gptqmodel TorchAtenLinear``: the kernel GPTQModel 7.6.0 selects on a CPU (int4 weights repacked
  for ``aten._weight_int4pack_mm_for_cpu``; it casts activations and scales to bf16), if installed.

Each row also gives the largest relative error against the exact float64 product, so that a
faster but rounder kernel shows as such.

Run: ``GPTQMODEL_CPU_WORKERS=2 .venv/bin/python benchmarks/bench_gptq_forward.py [--repeat N] [--threads T]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from quantdispatch.configs import GptqV2
from quantdispatch.kernels.modules import GptqLinear
from quantdispatch.testing import Quantized, quantize_gptq

SIZE = 4096
CONFIG = GptqV2(bits=4, group_size=128, sym=True)


def _median_ms(run: Callable[[], torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    out = run()  # warm: first-call work (repacking, caches) is not what we time
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out


def _gptqmodel_aten(q: Quantized) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from gptqmodel.nn_modules.qlinear.torch_aten_kernel import TorchAtenLinear
    except ImportError:
        return None
    layer = TorchAtenLinear(bits=4, group_size=CONFIG.group_size, sym=True, desc_act=False, in_features=SIZE,
                            out_features=SIZE, bias=False, pack_dtype=torch.int32, register_buffers=True)
    for name in ("qweight", "qzeros", "scales", "g_idx"):
        getattr(layer, name).copy_(q.tensors[name])
    layer.post_init()
    layer.eval()
    forward: Callable[[torch.Tensor], torch.Tensor] = layer
    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    q = quantize_gptq(torch.randn(SIZE, SIZE) * 0.02, CONFIG)
    dense32, dense16 = q.weight, q.weight.to(torch.bfloat16)
    per_call = GptqLinear(CONFIG, SIZE, SIZE, bias=False, device="meta")
    per_call.load_state_dict(q.tensors, assign=True)
    at_load = GptqLinear(CONFIG, SIZE, SIZE, bias=False, device="meta", dequantize_at_load=True)
    at_load.load_state_dict(q.tensors, assign=True)
    aten = _gptqmodel_aten(q)

    print(f"GPTQ 4-bit g{CONFIG.group_size} {SIZE}x{SIZE}, torch {torch.__version__}, {args.threads} thread(s), "
          f"median of {args.repeat}")
    print(f"{'batch':>5}  {'case':<34} {'ms':>9} {'x fp32 dense':>13} {'max rel err':>12}")
    with torch.inference_mode():
        for batch in (1, 32):
            x = torch.randn(batch, SIZE)
            xb = x.to(torch.bfloat16)
            exact = F.linear(x.double(), dense32.double())
            cases: list[tuple[str, Callable[[], torch.Tensor]]] = [
                ("fp32 dense F.linear", lambda: F.linear(x, dense32)),
                ("bf16 dense F.linear", lambda: F.linear(xb, dense16)),
                ("ours per-call, fp32", lambda: per_call(x)),
                ("ours per-call, bf16", lambda: per_call(xb)),
                ("ours dequantize-at-load, fp32", lambda: at_load(x)),
                ("ours dequantize-at-load, bf16", lambda: at_load(xb)),
            ]
            if aten is not None:
                cases += [("gptqmodel TorchAtenLinear, fp32 in", lambda: aten(x)),
                          ("gptqmodel TorchAtenLinear, bf16 in", lambda: aten(xb))]
            baseline = None
            for name, run in cases:
                ms, out = _median_ms(run, args.repeat)
                baseline = baseline or ms
                err = ((out.double() - exact).abs().max() / exact.abs().max()).item()
                print(f"{batch:>5}  {name:<34} {ms:>9.2f} {ms / baseline:>13.2f} {err:>12.2e}")


if __name__ == "__main__":
    main()
