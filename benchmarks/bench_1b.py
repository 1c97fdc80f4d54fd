"""A 1B-class llama (Llama-3.2-1B's shape, random weights), quantized as users get it, decoded
and prefilled by quantdispatch, llama.cpp, Transformers + gptqmodel and Transformers dense, at
each thread count, with the machine's memory bandwidth measured in the same run.

The model is built from a config (``--shape 1b``: hidden 2048, 16 layers, intermediate 8192, 32
heads, 8 KV heads, vocab 128256, tied embeddings; ``--shape 134m``: hidden 768, 12 layers,
intermediate 2048, vocab 32000), never downloaded. Files, made once in ``--workdir``:

- ``f16.gguf`` by our GGUF writer (``tests.gguf_models.write_gguf``), then ``q4_0.gguf``,
  ``q4_k_m.gguf``, ``q8_0.gguf`` by **llama.cpp's own quantizer** (``llama_model_quantize``
  through llama-cpp-python, in the interpreter given as ``--llama-python``);
- ``gptq/``: GPTQ 4-bit g128 symmetric by ``quantdispatch.testing.quantize_gptq`` (embeddings and
  head in bf16). The run checks it against gptqmodel's reload: the logits of one prompt from
  ours and from Transformers + gptqmodel are compared and the difference printed;
- ``dense/``: the same weights in bf16, for Transformers' fp32 and bf16 dense runs.

Each case runs in a fresh process: load, prefill of 32 and 512 random tokens (tokens/s; median
of 3 and of 1 runs after a warm-up), a 16-token prompt then 64 greedy decode steps with the
cache (tokens/s of the median step; llama.cpp: 64 over the time between the first and the 65th
token), the peak RSS (``VmHWM``) and, for the torch cases, the decode step split into the time
inside the weight layers and outside them (``quantdispatch.cli_bench.decode_split``, eager).
The ``compiled`` cases decode on ``quantdispatch.decoding.StaticDecoder`` (static cache, step
compiled by inductor; the compile time is added to the load column, not to decode). The copy bandwidth (STREAM convention: bytes read plus
written) is measured by ``quantdispatch.bandwidth.copy_bandwidth`` at each thread count before
the cases; the limit printed beside each case is that bandwidth over the bytes its decode step
reads (ours: ``bytes_per_token`` of the loaded model; llama.cpp: the file's tensors less the
input embedding table where a separate head exists).

llama-cpp-python (0.3.36, a ~10-minute source build) is a benchmark extra, never CI; without
``--llama-python`` the llama.cpp cases and the GGUF files that need its quantizer are skipped.

``--isa avx2`` runs every case as an AVX2-only CPU would, on an AVX-512 machine: quantdispatch's
kernels through its CPU-feature mask (``QUANTDISPATCH_CPU_FEATURES=avx2,fma``), torch's own kernels
through ``ATEN_CPU_CAPABILITY=avx2`` and oneDNN's through ``ONEDNN_MAX_CPU_ISA=AVX2``, and llama.cpp
as the interpreter given builds it (give one built with ``-DGGML_NATIVE=OFF -DGGML_AVX2=ON
-DGGML_AVX512=OFF``; the header prints what llama.cpp reports). The header says which level ran.

Run: ``GPTQMODEL_CPU_WORKERS=2 .venv/bin/python benchmarks/bench_1b.py --llama-python PATH
[--shape 1b] [--threads 1,2] [--cases ...] [--workdir D] [--isa avx2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SHAPES: dict[str, dict[str, Any]] = {
    "1b": {"hidden": 2048, "intermediate": 8192, "layers": 16, "heads": 32, "kv_heads": 8, "vocab": 128256, "tie": True},
    "tiny": {"hidden": 256, "intermediate": 512, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 1024, "tie": True},  # a smoke run
    "134m": {"hidden": 768, "intermediate": 2048, "layers": 12, "heads": 12, "kv_heads": 12, "vocab": 32000, "tie": False},
}

GGUF_TYPES = {"q4_0": 2, "q8_0": 7, "q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_* values

MEASURE = r"""
import json, statistics, sys, time, torch
def measure(forward, vocab, prefills, tokens):
    gen = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        forward(torch.randint(3, vocab, (1, 8), generator=gen), use_cache=True)  # warm-up
        for n in prefills:
            ids = torch.randint(3, vocab, (1, n), generator=gen)
            times = []
            for _ in range(3 if n <= 64 else 1):
                t = time.perf_counter(); forward(ids, use_cache=True); times.append(time.perf_counter() - t)
            out[f"prefill{n}"] = n / statistics.median(times)
        ids = torch.randint(3, vocab, (1, 16), generator=gen)
        o = forward(ids, use_cache=True)
        key = "cache" if "cache" in o else "past_key_values"
        past, token = o[key], o.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(tokens):
            t = time.perf_counter()
            o = forward(token, use_cache=True, **{key: past})
            steps.append(time.perf_counter() - t)
            past, token = o[key], o.logits[:, -1:].argmax(-1)
        out["decode"] = 1 / statistics.median(steps)
    return out
def peak_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
"""

TORCH_CHILD = MEASURE + r"""
case, path, threads, prefills, tokens, check = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
start = time.perf_counter()
if case.startswith("hf"):
    from transformers import AutoModelForCausalLM
    dtype = {"hf-fp32": torch.float32, "hf-bf16": torch.bfloat16}.get(case, "auto")
    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", dtype=dtype).eval()
    per_token = None
else:
    import quantdispatch as qd
    from quantdispatch.bandwidth import bytes_per_token
    model = qd.load(path, device="cpu").unwrap().model
    per_token = bytes_per_token(model)
loaded = time.perf_counter() - start
if check:
    with torch.inference_mode():
        logits = model(torch.arange(3, 19).unsqueeze(0)).logits.float()
    torch.save(logits, check)
record = measure(model, model.config.vocab_size, prefills, tokens)
if case == "ours-compiled":
    from quantdispatch.cli_bench import compiled_decode
    ids = torch.randint(3, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    record.update(compiled_decode(model, ids, tokens))
if per_token is None:
    from quantdispatch.bandwidth import bytes_per_token
    per_token = bytes_per_token(model)
from quantdispatch.cli_bench import decode_split
split = decode_split(model, steps=16)
print(json.dumps({**record, "load_s": loaded, "rss_mib": peak_mib(), "bytes_per_token": per_token,
                  "linear_ms": split["linear_ms"], "rest_ms": split["rest_ms"]}))
"""

LLAMA_CHILD = r"""
import json, statistics, sys, time, random
from llama_cpp import Llama
path, threads, prefills, tokens = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
loaded = time.perf_counter() - start
rng = random.Random(0)
vocab = llm.n_vocab()
out = {}
llm.reset(); llm.eval([rng.randrange(3, vocab) for _ in range(8)])  # warm-up
for n in prefills:
    ids = [rng.randrange(3, vocab) for _ in range(n)]
    times = []
    for _ in range(3 if n <= 64 else 1):
        llm.reset(); t = time.perf_counter(); llm.eval(ids); times.append(time.perf_counter() - t)
    out[f"prefill{n}"] = n / statistics.median(times)
llm.reset()
stamps = []
for tok in llm.generate([rng.randrange(3, vocab) for _ in range(16)], temp=0.0, top_k=1, reset=True):
    stamps.append(time.perf_counter())
    if len(stamps) == tokens + 1:
        break
out["decode"] = tokens / (stamps[-1] - stamps[0])
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({**out, "load_s": loaded, "rss_mib": peak}))
"""

QUANTIZE = r"""
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = 0
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(rc)
"""


def _model(shape: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SHAPES[shape]
    config = LlamaConfig(hidden_size=s["hidden"], intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], vocab_size=s["vocab"],
                         max_position_embeddings=2048, tie_word_embeddings=s["tie"], bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    torch.manual_seed(0)
    with torch.no_grad():
        model = LlamaForCausalLM(config).eval()
        for p in model.parameters():  # N(0, 0.02) everywhere, norms near 1: a plausible spread for every quantizer
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
    return model


def write_files(shape: str, workdir: Path) -> None:
    """The f16 GGUF, the GPTQ checkpoint and the dense checkpoint in ``workdir`` (once; in this process)."""
    import json as _json

    import torch
    from safetensors.torch import save_file

    import quantdispatch as qd
    from quantdispatch.codec import dump
    from quantdispatch.testing import quantize_gptq

    sys.path.insert(0, str(ROOT))
    from tests.gguf_models import T, write_gguf

    model = _model(shape)
    vocab = SHAPES[shape]["vocab"]
    if not (workdir / "f16.gguf").exists():
        tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
        tokens += [f"▁t{i}" for i in range(vocab - len(tokens))]
        meta = {"add_tokenizer_model": "llama", "add_token_list": tokens, "add_token_scores": [-float(i) for i in range(vocab)],
                "add_token_types": [2, 3, 3, *([6] * 256), *([1] * (vocab - 259))]}
        write_gguf(model, "llama", workdir / "f16.gguf.part", T.F16, tokenizer=meta)
        os.replace(workdir / "f16.gguf.part", workdir / "f16.gguf")
    config = {**model.config.to_dict(), "dtype": "bfloat16"}
    if not (workdir / "dense" / "model.safetensors").exists():
        (workdir / "dense").mkdir(exist_ok=True)
        tensors = {n: t.to(torch.bfloat16).contiguous() for n, t in model.state_dict().items()
                   if not (model.config.tie_word_embeddings and n == "lm_head.weight")}
        save_file(tensors, str(workdir / "dense" / "model.safetensors"), metadata={"format": "pt"})
        (workdir / "dense" / "config.json").write_text(_json.dumps(config))
    if not (workdir / "gptq" / "model.safetensors").exists():
        (workdir / "gptq").mkdir(exist_ok=True)
        gptq = qd.Gptq(bits=4, group_size=128, sym=True)
        packed: dict[str, torch.Tensor] = {}
        for name, t in model.state_dict().items():
            if model.config.tie_word_embeddings and name == "lm_head.weight":
                continue
            module = name.rsplit(".", 1)[0]
            if name.endswith("proj.weight") and ".layers." in name:
                packed.update((f"{module}.{k}", v.contiguous()) for k, v in quantize_gptq(t, gptq).tensors.items())
            else:
                packed[name] = t.to(torch.bfloat16).contiguous()
        save_file(packed, str(workdir / "gptq" / "model.safetensors"), metadata={"format": "pt"})
        (workdir / "gptq" / "config.json").write_text(_json.dumps({**config, "quantization_config": dump(gptq, style="transformers")}))


ISA_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"QUANTDISPATCH_CPU_FEATURES": "avx2,fma", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
"""The environment each case runs under, per ``--isa``."""

_ISA: dict[str, str] = {}


def _child(command: list[str], threads: int) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=str(ROOT), **_ISA)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()
        return {"error": tail[-1][:200] if tail else f"exit {done.returncode}"}
    record: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def _gguf_read_bytes(path: Path) -> int:
    """Bytes of a GGUF file's tensors one decode step reads: all of them, less the input
    embedding table where the file has a separate ``output.weight``."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    if "output.weight" in sizes:
        sizes.pop("token_embd.weight", None)
    return sum(sizes.values())


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())
    level = "AVX-512 (" + ", ".join(sorted(f for f in flags if f in ("avx512_vnni", "avx512_bf16", "amx_bf16"))) + ")" \
        if "avx512f" in flags else ("AVX2+FMA" if {"avx2", "fma"} <= flags else "no AVX2")
    return f"{name}; {level}; {os.cpu_count()} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--workdir", type=Path, default=None, help="default: /tmp/quantdispatch-bench-<shape>")
    parser.add_argument("--llama-python", help="an interpreter with llama-cpp-python installed")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1, 2 and all cores)")
    parser.add_argument("--prefill", default="32,512", help="prompt lengths for prefill (default: 32,512)")
    parser.add_argument("--tokens", type=int, default=64, help="greedy decode steps (default: 64)")
    parser.add_argument("--cases", default="", help="comma-separated subset of cases to run (default: all)")
    parser.add_argument("--files-only", action="store_true", help="make the files, run nothing")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default="native",
                        help="avx2: run every case as an AVX2-only CPU would (see the module docstring)")
    args = parser.parse_args()
    _ISA.update(ISA_ENV[args.isa])
    workdir: Path = args.workdir or Path(f"/tmp/quantdispatch-bench-{args.shape}")
    workdir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    threads = sorted({int(t) for t in args.threads.split(",")}) if args.threads else sorted({1, 2, cores} & set(range(1, cores + 1)))
    prefills = [int(n) for n in args.prefill.split(",") if n]
    print(f"CPU: {_cpu()}")
    if args.isa != "native":
        print(f"emulating {args.isa}: cases run with " + " ".join(f"{k}={v}" for k, v in ISA_ENV[args.isa].items()))
    if args.llama_python:
        info = subprocess.run([args.llama_python, "-c", "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"],
                              capture_output=True, text=True, check=False)
        print("llama.cpp system info: " + (info.stdout.strip() or info.stderr.strip()[-200:]))
    started = time.perf_counter()
    write_files(args.shape, workdir)
    ggufs: dict[str, Path] = {}
    if args.llama_python:
        for kind, ftype in GGUF_TYPES.items():
            target = workdir / f"{kind}.gguf"
            if not target.exists():
                subprocess.run([args.llama_python, "-c", QUANTIZE, str(workdir / "f16.gguf"), str(target) + ".part", str(ftype)],
                               check=True, capture_output=True)
                os.replace(str(target) + ".part", target)
            ggufs[kind] = target
    else:
        print("no --llama-python: the llama.cpp cases and its GGUF files are skipped")
    print(f"files ready in {time.perf_counter() - started:.0f} s ({workdir})")
    if args.files_only:
        return

    cases: dict[str, list[str] | None] = {}
    for kind, path in ggufs.items():
        cases[f"ours {kind}"] = [sys.executable, "-c", TORCH_CHILD, "ours", str(path)]
        cases[f"llama.cpp {kind}"] = [args.llama_python, "-c", LLAMA_CHILD, str(path)]
    cases["ours gptq"] = [sys.executable, "-c", TORCH_CHILD, "ours", str(workdir / "gptq")]
    cases["ours gptq compiled"] = [sys.executable, "-c", TORCH_CHILD, "ours-compiled", str(workdir / "gptq")]
    if "q4_0" in ggufs:
        cases["ours q4_0 compiled"] = [sys.executable, "-c", TORCH_CHILD, "ours-compiled", str(ggufs["q4_0"])]
    cases["transformers+gptqmodel gptq"] = [sys.executable, "-c", TORCH_CHILD, "hf", str(workdir / "gptq")]
    cases["transformers fp32"] = [sys.executable, "-c", TORCH_CHILD, "hf-fp32", str(workdir / "dense")]
    cases["transformers bf16"] = [sys.executable, "-c", TORCH_CHILD, "hf-bf16", str(workdir / "dense")]
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    chosen = {k: v for k, v in cases.items() if not wanted or k in wanted}

    file_bytes = {f"llama.cpp {kind}": _gguf_read_bytes(path) for kind, path in ggufs.items()}
    from quantdispatch.bandwidth import copy_bandwidth

    results: dict[int, dict[str, dict[str, Any]]] = {}
    bandwidth: dict[int, float] = {}
    for n in threads:
        bandwidth[n] = copy_bandwidth(threads=n, mib=512)
        results[n] = {}
        for name, command in chosen.items():
            assert command is not None
            check = ""
            if name in ("ours gptq", "transformers+gptqmodel gptq") and n == threads[0]:
                check = str(workdir / f"logits-{name.split()[0]}.pt")
            if name.startswith("llama.cpp"):
                full = [*command, str(n), json.dumps(prefills), str(args.tokens)]
            else:
                full = [*command, str(n), json.dumps(prefills), str(args.tokens), check]
            record = _child(full, n)
            if name in file_bytes:
                record.setdefault("bytes_per_token", file_bytes[name])
            results[n][name] = record
            print(f"  [{n} thread(s)] {name}: " + (record["error"] if "error" in record else f"decode {record['decode']:.1f} tok/s"),
                  flush=True)
    _report(results, bandwidth, prefills, workdir)
    print(f"total {time.perf_counter() - started:.0f} s")


def _report(results: dict[int, dict[str, dict[str, Any]]], bandwidth: dict[int, float], prefills: list[int], workdir: Path) -> None:
    references = {"ours q4_0": "llama.cpp q4_0", "ours q4_k_m": "llama.cpp q4_k_m", "ours q8_0": "llama.cpp q8_0",
                  "ours gptq": "transformers+gptqmodel gptq", "ours gptq compiled": "transformers+gptqmodel gptq",
                  "ours q4_0 compiled": "llama.cpp q4_0"}
    for n, cases in results.items():
        print(f"\n{n} thread(s); copy bandwidth {bandwidth[n] / 1e9:.1f} GB/s (STREAM copy: read + write bytes)")
        head = f"  {'case':<30} {'decode tok/s':>12} {'MB/token':>9} {'% limit':>8}"
        head += "".join(f" {'prefill' + str(p):>11}" for p in prefills) + f" {'RSS MiB':>8} {'load s':>7} {'linear/rest ms':>15}  vs reference / vs fp32 dense"
        print(head)
        dense = cases.get("transformers fp32", {})
        for name, r in cases.items():
            if "error" in r:
                print(f"  {name:<30} failed: {r['error']}")
                continue
            per_token = int(r.get("bytes_per_token") or 0)
            limit = bandwidth[n] / per_token if per_token else 0.0
            line = f"  {name:<30} {r['decode']:>12.1f} {per_token / 1e6:>9.0f} {100 * r['decode'] / limit if limit else 0:>7.0f}%"
            line += "".join(f" {r.get(f'prefill{p}', 0):>11.1f}" for p in prefills)
            line += f" {r['rss_mib']:>8.0f} {r['load_s'] + r.get('compile_s', 0.0):>7.1f}"
            line += f" {r['linear_ms']:>7.1f}/{r['rest_ms']:<7.1f}" if "linear_ms" in r else f" {'':>15}"
            ref = cases.get(references.get(name, ""), {})
            notes = []
            if "decode" in ref:
                notes.append(f"decode {r['decode'] / ref['decode']:.2f}x " + references[name].split()[0]
                             + "".join(f", prefill{p} {r[f'prefill{p}'] / ref[f'prefill{p}']:.2f}x" for p in prefills
                                       if ref.get(f"prefill{p}")))
            if "decode" in dense and name != "transformers fp32":
                notes.append(f"decode {r['decode'] / dense['decode']:.2f}x fp32"
                             + "".join(f", prefill{p} {r[f'prefill{p}'] / dense[f'prefill{p}']:.2f}x" for p in prefills
                                       if dense.get(f"prefill{p}")))
            print(line + "  " + "; ".join(notes))
    ours, theirs = workdir / "logits-ours.pt", workdir / "logits-transformers+gptqmodel.pt"
    if ours.exists() and theirs.exists():
        import torch

        a, b = torch.load(ours), torch.load(theirs)
        agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        print(f"\nGPTQ checkpoint vs gptqmodel's reload: logits max |diff| {(a - b).abs().max().item():.4f} "
              f"(|logits| max {b.abs().max().item():.2f}), cosine {cosine:.6f}, argmax agreement {100 * agree:.0f} %")
    print(json.dumps({"bandwidth": bandwidth, "results": results}, default=str))


if __name__ == "__main__":
    main()
