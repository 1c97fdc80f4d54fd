"""Fresh-process load of a ~130M-parameter checkpoint: ours vs Transformers, same directory, same run.

For a 4-bit GPTQ (g128) checkpoint, ``qd.load(dir)`` against
``AutoModelForCausalLM.from_pretrained(dir, device_map="cpu")`` (which needs optimum + gptqmodel),
and for a bitsandbytes NF4 checkpoint the same two. Each process is started fresh (imports
included: they dominate) and timed from start to a loaded model; its peak RSS is its own
``VmHWM``. A third process that only imports torch and the model's Transformers modeling code
gives the baseline RSS. Runs alternate between the sides; the figures are medians.

Targets (the load issue): ours at most half Transformers' wall time; our peak RSS above the
baseline at most 1.2x the checkpoint's size on disk.

Run: ``.venv/bin/python benchmarks/bench_load.py [--repeat N] [--workdir DIR]`` (the checkpoints are
made once in DIR with quantdispatch's own packer: round-to-nearest, the same on-disk format
GPTQModel writes; quantizing with GPTQModel takes minutes and does not change what loading does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OURS = "import quantdispatch as qd; m = qd.load({d!r}, device='cpu').unwrap().model"
THEIRS = ("import warnings; warnings.filterwarnings('ignore'); from transformers import AutoModelForCausalLM; "
          "m = AutoModelForCausalLM.from_pretrained({d!r}, device_map='cpu')")
BASELINE = "import torch; import transformers.models.llama.modeling_llama"


def _make(workdir: Path) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import quantdispatch as qd
    from quantdispatch.demo_load import _write

    gptq, bnb = workdir / "gptq-4bit-g128", workdir / "bnb-nf4"
    if (gptq / "config.json").exists() and (bnb / "config.json").exists():
        return gptq, bnb
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=12, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    print(f"making the checkpoints ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters) in {workdir}", flush=True)
    _write(gptq, model, qd.Gptq(bits=4, group_size=128))
    model.save_pretrained(workdir / "fp32")
    made = qd.load(workdir / "fp32", device="cpu", quantization=qd.Bnb4Bit(quant_type="nf4")).unwrap()
    made.model.save_pretrained(bnb)  # type: ignore[operator]
    return gptq, bnb


_HWM = "; print('VmHWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"


def _run(code: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a fresh interpreter running ``code``.

    The peak is the child's own ``VmHWM`` (its address space's high-water mark): ``wait4``'s
    ``ru_maxrss`` would report the larger RSS of this parent at fork time."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error", GPTQMODEL_CPU_WORKERS="2")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + _HWM], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {code}\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("VmHWM"))
    return seconds, int(line.split()[1]) * 1024


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/quantdispatch-bench-load"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    gptq, bnb = _make(args.workdir)
    base = [_run(BASELINE)[1] for _ in range(args.repeat)]
    baseline = statistics.median(base)
    print(f"baseline (import torch + llama modeling) peak RSS: {baseline / 2**20:.0f} MiB")
    rows = []
    for label, d in (("GPTQ 4-bit g128", gptq), ("bnb NF4", bnb)):
        ours, theirs = [], []
        for _ in range(args.repeat):  # alternate, so that load on the machine hits both sides alike
            ours.append(_run(OURS.format(d=str(d))))
            theirs.append(_run(THEIRS.format(d=str(d))))
        t_ours, t_theirs = statistics.median(t for t, _ in ours), statistics.median(t for t, _ in theirs)
        r_ours, r_theirs = statistics.median(r for _, r in ours), statistics.median(r for _, r in theirs)
        disk = _size(d)
        rows.append({"checkpoint": label, "disk_mib": disk / 2**20, "ours_s": t_ours, "theirs_s": t_theirs,
                     "time_ratio": t_ours / t_theirs, "ours_rss_over_base_mib": (r_ours - baseline) / 2**20,
                     "theirs_rss_over_base_mib": (r_theirs - baseline) / 2**20, "ours_rss_over_disk": (r_ours - baseline) / disk})
    print(f"\n{'checkpoint':18} {'disk MiB':>9} {'ours s':>8} {'TF s':>8} {'ratio':>7} {'ours RSS-base MiB':>18} {'TF RSS-base MiB':>16} {'ours/disk':>10}")
    for r in rows:
        print(f"{r['checkpoint']:18} {r['disk_mib']:9.1f} {r['ours_s']:8.2f} {r['theirs_s']:8.2f} {r['time_ratio']:6.2f}x "
              f"{r['ours_rss_over_base_mib']:18.1f} {r['theirs_rss_over_base_mib']:16.1f} {r['ours_rss_over_disk']:9.2f}x")
    print("\ntargets: time ratio <= 0.5x; ours RSS above baseline <= 1.2x the checkpoint on disk")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
