"""End to end on a ~134M-parameter 4-bit GPTQ llama: fresh process, load, 16-token prompt, 64 greedy steps.

The model: hidden 768, 12 layers, vocab 32000 (the shape of research/cpu-kernels.md's), random
weights, every decoder projection RTN-quantized by ``quantdispatch.testing`` as GPTQ 4-bit g128
symmetric (v1 format), embeddings and head in bf16; written once to ``--dir``. Each case runs in
its own fresh interpreter, one after the other, so imports, loading and page faults all count:

- ``ours (plan)``: ``qd.load(dir)``: the backend and dtype the plan picks for this CPU;
- ``ours cpu-int4`` / ``ours cpu-q4``: each int4 kernel forced;
- ``transformers+gptqmodel``: ``AutoModelForCausalLM.from_pretrained(dir, device_map="cpu")``
  with optimum 2.3.0 + gptqmodel 7.6.0 (skipped when gptqmodel is not installed).

Reported per case: seconds from process start to loaded and to the first token, decode tokens/s
(median step of 64), and the process's peak RSS (``VmHWM``, Linux). Medians over ``--rounds`` rounds, rounds
interleaved across cases.

Run: ``GPTQMODEL_CPU_WORKERS=2 .venv/bin/python benchmarks/bench_end_to_end.py [--dir D] [--rounds N] [--threads T]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
start = time.time()
import torch
torch.set_num_threads(int(sys.argv[3]))
case, directory = sys.argv[1], sys.argv[2]
if case == "hf":
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(directory, device_map="cpu").eval()
else:
    import quantdispatch as qd
    model = qd.load(directory, device="cpu", backend=None if case == "plan" else case).unwrap().model
loaded = time.time()
ids = torch.randint(3, 32000, (1, 16), generator=torch.Generator().manual_seed(0))
steps = []
with torch.inference_mode():
    out = model(ids, use_cache=True)
    key = "cache" if "cache" in out else "past_key_values"
    past, token = out[key], out.logits[:, -1:].argmax(-1)
    first = time.time()
    for _ in range(64):
        t = time.perf_counter()
        out = model(token, use_cache=True, **{key: past})
        steps.append(time.perf_counter() - t)
        past, token = out[key], out.logits[:, -1:].argmax(-1)
steps.sort()
kinds = sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__ and type(m).__name__ != "Linear"})
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"loaded": loaded - start, "first": first - start, "decode": 1 / steps[len(steps) // 2], "kinds": kinds,
                  "rss_mib": peak}))
"""


def _write(directory: Path) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    import quantdispatch as qd
    from quantdispatch.codec import dump
    from quantdispatch.testing import quantize_gptq

    config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=12, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    gptq = qd.Gptq(bits=4, group_size=128, sym=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            tensors.update((f"{module}.{k}", v.contiguous()) for k, v in quantize_gptq(t, gptq).tensors.items())
        else:
            tensors[name] = t.to(torch.bfloat16).contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    document = {**config.to_dict(), "dtype": "bfloat16", "quantization_config": dump(gptq, style="transformers")}
    (directory / "config.json").write_text(json.dumps(document))
    return sum(p.numel() for p in model.parameters())


def _run(case: str, directory: Path, threads: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, case, str(directory), str(threads)], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    record: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/qd-bench-llama134m-gptq4"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.dir / "model.safetensors").exists():
        count = _write(args.dir)
        print(f"wrote {args.dir} ({count / 1e6:.0f}M parameters)")
    size = (args.dir / "model.safetensors").stat().st_size
    cases = ["plan", "cpu-int4", "cpu-q4"]
    if importlib.util.find_spec("gptqmodel") is not None and importlib.util.find_spec("optimum") is not None:
        cases.append("hf")
    results: dict[str, list[dict[str, object]]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for case in cases:
            results[case].append(_run(case, args.dir, args.threads))
            time.sleep(0.5)
    print(f"checkpoint {size / 2**20:.0f} MiB; {args.threads} thread(s); medians of {args.rounds} fresh processes")
    print(f"  {'case':<26} {'loaded s':>9} {'first token s':>14} {'decode tok/s':>13} {'peak RSS MiB':>13}  kernels")
    for case, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"  {case:<26} failed: {runs[0]['error']}")
            continue

        def median(key: str, runs: list[dict[str, object]] = good) -> float:
            return statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]
        print(f"  {case:<26} {median('loaded'):>9.2f} {median('first'):>14.2f} {median('decode'):>13.1f} "
              f"{max(float(r['rss_mib']) for r in good):>13.0f}  {','.join(good[0]['kinds'])}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
