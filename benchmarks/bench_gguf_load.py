"""Fresh-process load of a ~134M-parameter GGUF with K-quant tensors: ours vs Transformers' ``gguf_file=``.

The file is a Q4_K_M-style mix (Q4_K, with Q6_K for ``attn_v``, ``ffn_down`` and ``output``; norms
F32) of a random llama (hidden 768, 12 layers, vocabulary 32000), written once with gguf-py's
writer and the round-to-nearest K-quant encoders of ``tests/gguf_models.py``. Each side runs in a
fresh interpreter (imports included) timed from start to a loaded model; peak RSS comes from
``wait4``. Sides alternate; figures are medians. Our two modes are measured: kept packed (the
default) and dequantized at load (float32, as Transformers).

Targets: ours at most 0.3x Transformers' wall time; kept-packed peak RSS at most half
of Transformers'.

Then, in this process, decode tokens/s of our loaded model (greedy, one thread unless
``--threads``), both modes: the figure to compare with llama.cpp (not run here; see the report).

Run: ``.venv/bin/python benchmarks/bench_gguf_load.py [--repeat N] [--workdir DIR] [--threads N]``
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
from typing import Any

OURS = "import quantdispatch as qd; m = qd.load({p!r}, device='cpu', dequantize_at_load={deq}).unwrap().model"
THEIRS = ("import warnings; warnings.filterwarnings('ignore'); from transformers import AutoModelForCausalLM; "
          "m = AutoModelForCausalLM.from_pretrained({d!r}, gguf_file={f!r})")
BASELINE = "import torch; import transformers.models.llama.modeling_llama"


def _make(workdir: Path) -> Path:
    path = workdir / "llama-134m-q4_k_m.gguf"
    if path.exists():
        return path
    # In a child process, so that this one stays small.
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); import benchmarks.bench_gguf_load as b; b.write_model({str(path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def write_model(dest: str) -> None:
    """Write the benchmark's model to ``dest``."""
    from tests.gguf_models import T, tiny_model, write_gguf

    path = Path(dest)
    workdir = path.parent
    model = tiny_model("llama", hidden=768, intermediate=2048, layers=12, vocab=32000, heads=12, kv_heads=12)
    print(f"making {path.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters) in {workdir}", flush=True)
    six = {f"blk.{i}.{n}.weight": T.Q6_K for i in range(12) for n in ("attn_v", "ffn_down")} | {"output.weight": T.Q6_K}
    write_gguf(model, "llama", path.with_suffix(".tmp"), T.Q4_K, types=six)
    path.with_suffix(".tmp").rename(path)


_PEAK = "\nimport re; print('VmHWM', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def _run(code: str, threads: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a fresh interpreter running ``code``.

    The peak is the child's own ``VmHWM`` (reset by ``exec``): ``wait4``'s ``ru_maxrss`` would
    also count the pages the child shared with this process between fork and exec.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error")
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code + _PEAK], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    seconds = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"failed: {code}\n{err.decode(errors='replace')[-2000:]}")
    peak = [line for line in out.decode().splitlines() if line.startswith("VmHWM ")]
    return seconds, int(peak[-1].split()[1]) * 1024


def _decode_rate(path: Path, dequantize: bool, tokens: int) -> float:
    """Greedy decode tokens/s of our load of ``path`` after a 16-token prompt (KV cache on)."""
    import torch

    import quantdispatch as qd

    model = qd.load(path, device="cpu", dequantize_at_load=dequantize).unwrap().model
    ids = torch.arange(1, 17).unsqueeze(0)
    generate: Any = model.generate
    with torch.no_grad():
        generate(ids, max_new_tokens=2, do_sample=False, min_new_tokens=2)  # warm-up
        start = time.perf_counter()
        generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        seconds = time.perf_counter() - start
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/quantdispatch-bench-gguf"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decode-tokens", type=int, default=32)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = _make(args.workdir)
    disk = path.stat().st_size
    runs: dict[str, list[tuple[float, int]]] = {"ours packed": [], "ours dequantized": [], "transformers": []}
    base: list[tuple[float, int]] = []
    for _ in range(args.repeat):  # alternate, so that load on the machine (and the file cache) hits every side alike
        base.append(_run(BASELINE, args.threads))
        runs["ours packed"].append(_run(OURS.format(p=str(path), deq=False), args.threads))
        runs["ours dequantized"].append(_run(OURS.format(p=str(path), deq=True), args.threads))
        runs["transformers"].append(_run(THEIRS.format(d=str(path.parent), f=path.name), args.threads))
    floor, baseline = statistics.median(t for t, _ in base), statistics.median(r for _, r in base)
    med = {k: (statistics.median(t for t, _ in v), statistics.median(r for _, r in v)) for k, v in runs.items()}
    t_tf, r_tf = med["transformers"]
    print(f"file: {path.name}, {disk / 2**20:.1f} MiB; baseline process (import torch + llama modeling): "
          f"{floor:.2f} s, {baseline / 2**20:.0f} MiB")
    print(f"{'side':18} {'wall s':>8} {'x TF':>6} {'s - base':>9} {'x TF':>6} {'peak RSS MiB':>13} {'x TF':>6} {'RSS-base MiB':>13}")
    rows = []
    for k, (t, r) in med.items():
        print(f"{k:18} {t:8.2f} {t / t_tf:5.2f}x {t - floor:9.2f} {(t - floor) / (t_tf - floor):5.2f}x {r / 2**20:13.0f} "
              f"{r / r_tf:5.2f}x {(r - baseline) / 2**20:13.0f}")
        rows.append({"side": k, "wall_s": t, "time_ratio": t / t_tf, "above_base_ratio": (t - floor) / (t_tf - floor),
                     "peak_rss_mib": r / 2**20, "rss_ratio": r / r_tf})
    print("targets: wall time <= 0.3x Transformers'; kept-packed peak RSS <= 0.5x Transformers'")
    import torch

    torch.set_num_threads(args.threads)
    for deq in (False, True):
        rate = _decode_rate(path, deq, args.decode_tokens)
        label = "dequantized" if deq else "packed"
        print(f"decode ({label}, {args.threads} thread{'s' if args.threads > 1 else ''}): {rate:.1f} tokens/s")
        rows.append({"side": f"decode {label}", "tokens_per_s": rate, "threads": args.threads})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
