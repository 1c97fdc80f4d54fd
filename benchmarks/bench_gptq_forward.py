"""Time one GPTQ linear forward: our portable module against GPTQModel's CPU kernels and dense layers.

A 4096x4096 layer (``--size``), 2/3/4/8-bit (``--bits``), group size 128, symmetric (GPTQ v2
layout: what GPTQModel holds in memory after loading), quantized by our RTN writer. Same run,
same input, medians:

- ``fp32 dense``: ``F.linear`` with the dequantized weight in float32 (the baseline of the ratios);
- ``bf16 dense``: the same in bfloat16;
- ``ours per-call``: ``GptqLinear`` dequantizing on every call (float32 and bfloat16 input);
- ``ours at-load``: ``GptqLinear(dequantize_at_load=True)``: dense weight kept after the first call;
- ``gptqmodel TorchLinear``: GPTQModel 7.6.0's own torch module as the ``gptqmodel-torch`` backend
  runs it (eager; our loader's ``to_torch_linear``), in the dtypes it declares (bfloat16, float16);
  the ``x ours`` column divides by our per-call module in the same dtype;
- ``gptqmodel TorchAtenLinear`` (4-bit only): the kernel GPTQModel 7.6.0 selects on a CPU (int4
  weights repacked for ``aten._weight_int4pack_mm_for_cpu``; it casts activations and scales to bf16).

The gptqmodel rows need it installed. Each row also gives the largest relative error against the
exact float64 product, so that a faster but rounder kernel shows as such.

Run: ``GPTQMODEL_CPU_WORKERS=2 .venv/bin/python benchmarks/bench_gptq_forward.py [--bits 2 3 4 8] [--size N]
[--repeat N] [--threads T]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from quantdispatch.configs import GptqV2
from quantdispatch.configs.gptq import GPTQ_BITS
from quantdispatch.kernels.modules import GptqLinear
from quantdispatch.testing import Quantized, quantize_gptq

GROUP = 128


def _median_ms(run: Callable[[], torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    out = run()  # warm: first-call work (repacking, caches) is not what we time
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out


Forward = Callable[[torch.Tensor], torch.Tensor]


def _gptqmodel_aten(q: Quantized, size: int) -> Forward | None:
    try:
        from gptqmodel.nn_modules.qlinear.torch_aten_kernel import TorchAtenLinear
    except ImportError:
        return None
    layer = TorchAtenLinear(bits=4, group_size=GROUP, sym=True, desc_act=False, in_features=size,
                            out_features=size, bias=False, pack_dtype=torch.int32, register_buffers=True)
    for name in ("qweight", "qzeros", "scales", "g_idx"):
        getattr(layer, name).copy_(q.tensors[name])
    layer.post_init()
    layer.eval()
    forward: Forward = layer
    return forward


def _gptqmodel_torch(ours: GptqLinear, config: GptqV2) -> Forward | None:
    """GPTQModel's TorchLinear built as the gptqmodel-torch loader builds it (contained import, eager)."""
    from quantdispatch.backends.gptqmodel import TORCH_LINEAR_MODULE, import_contained, to_torch_linear

    module = import_contained(TORCH_LINEAR_MODULE)
    if not hasattr(module, "TorchLinear"):
        return None
    layer = to_torch_linear(module.TorchLinear, ours, config, torch.bfloat16)
    assert layer is not None
    layer.eval()
    forward: Forward = layer
    return forward


def _bench_width(bits: Literal[2, 3, 4, 8], size: int, repeat: int) -> None:
    config = GptqV2(bits=bits, group_size=GROUP, sym=True)
    q = quantize_gptq(torch.randn(size, size) * 0.02, config)
    dense32, dense16 = q.weight, q.weight.to(torch.bfloat16)
    per_call = GptqLinear(config, size, size, bias=False, device="meta")
    per_call.load_state_dict(q.tensors, assign=True)
    at_load = GptqLinear(config, size, size, bias=False, device="meta", dequantize_at_load=True)
    at_load.load_state_dict(q.tensors, assign=True)
    theirs = _gptqmodel_torch(per_call, config)
    aten = _gptqmodel_aten(q, size) if bits == 4 else None

    print(f"\nGPTQ {bits}-bit g{GROUP} {size}x{size}")
    print(f"{'batch':>5}  {'case':<36} {'ms':>9} {'x fp32 dense':>13} {'x ours':>7} {'max rel err':>12}")
    for batch in (1, 32):
        _bench_batch(batch, size, repeat, dense32, dense16, per_call, at_load, theirs, aten)


def _bench_batch(batch: int, size: int, repeat: int, dense32: torch.Tensor, dense16: torch.Tensor, per_call: Forward,
                 at_load: Forward, theirs: Forward | None, aten: Forward | None) -> None:
    with torch.inference_mode():
        x = torch.randn(batch, size)
        xb, xh = x.to(torch.bfloat16), x.to(torch.float16)
        exact = F.linear(x.double(), dense32.double())
        cases: list[tuple[str, Forward, torch.Tensor, str | None]] = [
            ("fp32 dense F.linear", lambda t: F.linear(t, dense32), x, None),
            ("bf16 dense F.linear", lambda t: F.linear(t, dense16), xb, None),
            ("ours per-call, fp32", per_call, x, None),
            ("ours per-call, bf16", per_call, xb, None),
            ("ours per-call, fp16", per_call, xh, None),
            ("ours dequantize-at-load, fp32", at_load, x, None),
            ("ours dequantize-at-load, bf16", at_load, xb, None),
        ]
        if theirs is not None:
            cases += [("gptqmodel TorchLinear, bf16", theirs, xb, "ours per-call, bf16"),
                      ("gptqmodel TorchLinear, fp16", theirs, xh, "ours per-call, fp16")]
        if aten is not None:
            cases += [("gptqmodel TorchAtenLinear, fp32 in", aten, x, "ours per-call, fp32"),
                      ("gptqmodel TorchAtenLinear, bf16 in", aten, xb, "ours per-call, bf16")]
        times: dict[str, float] = {}
        for name, forward, given, versus in cases:
            ms, out = _median_ms(lambda: forward(given), repeat)
            times[name] = ms
            err = ((out.double() - exact).abs().max() / exact.abs().max()).item()
            ratio = f"{ms / times[versus]:>7.2f}" if versus else f"{'':>7}"
            print(f"{batch:>5}  {name:<36} {ms:>9.2f} {ms / times['fp32 dense F.linear']:>13.2f} {ratio} {err:>12.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", choices=GPTQ_BITS, default=list(GPTQ_BITS))
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeat}")
    for bits in GPTQ_BITS:
        if bits in args.bits:
            _bench_width(bits, args.size, args.repeat)


if __name__ == "__main__":
    main()
