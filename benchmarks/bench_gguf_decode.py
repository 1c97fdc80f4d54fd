"""Decode tokens/s of a ~134M-parameter llama as Q4_0 and as Q4_K_M: ours (kept packed with
llama.cpp's 8-bit-activation arithmetic, the default; kept packed on the fused float32 kernels; and dequantized
at load) vs llama.cpp through llama-cpp-python, same threads, fresh processes.

llama-cpp-python (0.3.36) is a benchmark extra, never CI: it builds llama.cpp from source (several
minutes). Install it in any interpreter and pass that interpreter as ``--llama-python``; without
it only our side runs. Each side prefills the same 16 tokens, then decodes greedily; tokens/s is
``N`` over the time between the first and the ``N+1``-th new token (our side: ``generate`` of
``N+1`` tokens minus ``generate`` of 1). The files carry a SentencePiece-style vocabulary
(llama.cpp needs one to load) of synthetic tokens; weights are random, which does not change the
work per token.

Target: ours kept packed at least half of llama.cpp's tokens/s on the same threads.

Run: ``.venv/bin/python benchmarks/bench_gguf_decode.py [--llama-python PATH] [--threads N] [--tokens N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

OURS = """
import time, torch
torch.set_num_threads({threads})
import quantdispatch as qd
m = qd.load({path!r}, device='cpu', backend={backend!r}).unwrap().model
ids = torch.arange(1, 17).unsqueeze(0)
def run(n):
    t = time.perf_counter()
    with torch.no_grad():
        m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return time.perf_counter() - t
run(2)
print('RATE', {tokens} / (run({tokens} + 1) - run(1)))
"""

OUR_SIDES = {
    "packed": None,  # the plan's choice: kept packed, llama.cpp's arithmetic (cpu-gguf-q8dot) where the kernels run
    "packed float32": "cpu-gguf-matvec",  # kept packed, the fused float32 kernels
    "dequantized": "torch-gguf",  # dense float32 weights
}

LLAMA = """
import time
from llama_cpp import Llama
llm = Llama(model_path={path!r}, n_threads={threads}, n_threads_batch={threads}, n_ctx=256, verbose=False)
def run(n):
    llm.reset()
    stamps = []
    for i, tok in enumerate(llm.generate(list(range(1, 17)), temp=0.0, top_k=1, reset=True)):
        stamps.append(time.perf_counter())
        if len(stamps) == n + 1:
            break
    return stamps[-1] - stamps[0]
run(2)
print('RATE', {tokens} / run({tokens}))
"""


def write_models(workdir: Path) -> dict[str, Path]:
    """The benchmark's Q4_0 and Q4_K_M files in ``workdir`` (made once, in a child process)."""
    paths = {"Q4_0": workdir / "llama-134m-q4_0.gguf", "Q4_K_M": workdir / "llama-134m-q4_k_m-vocab.gguf"}
    if not all(p.exists() for p in paths.values()):
        root = str(Path(__file__).resolve().parents[1])
        code = f"import sys; sys.path.insert(0, {root!r}); import benchmarks.bench_gguf_decode as b; b._write({str(workdir)!r})"
        subprocess.run([sys.executable, "-c", code], check=True)
    return paths


def _write(workdir: str) -> None:
    from tests.gguf_models import T, tiny_model, write_gguf

    vocab = 32000
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    tokens += [f"▁t{i}" for i in range(vocab - len(tokens))]
    meta = {"add_tokenizer_model": "llama", "add_token_list": tokens, "add_token_scores": [-float(i) for i in range(vocab)],
            "add_token_types": [2, 3, 3, *([6] * 256), *([1] * (vocab - 259))]}
    model = tiny_model("llama", hidden=768, intermediate=2048, layers=12, vocab=vocab, heads=12, kv_heads=12)
    six = {f"blk.{i}.{n}.weight": T.Q6_K for i in range(12) for n in ("attn_v", "ffn_down")} | {"output.weight": T.Q6_K}
    d = Path(workdir)
    write_gguf(model, "llama", d / "llama-134m-q4_0.gguf", T.Q4_0, tokenizer=meta, types={"output.weight": T.Q6_K})
    write_gguf(model, "llama", d / "llama-134m-q4_k_m-vocab.gguf", T.Q4_K, tokenizer=meta, types=six)


def _rate(python: str, code: str, threads: int) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed:\n{out.stderr[-2000:]}")
    return float([line for line in out.stdout.splitlines() if line.startswith("RATE ")][-1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--llama-python", help="an interpreter with llama-cpp-python installed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/quantdispatch-bench-gguf"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, path in write_models(args.workdir).items():
        sides = {f"ours {name}": (sys.executable, OURS.format(threads=args.threads, path=str(path), backend=backend, tokens=args.tokens))
                 for name, backend in OUR_SIDES.items()}
        if args.llama_python:
            sides["llama.cpp"] = (args.llama_python, LLAMA.format(threads=args.threads, path=str(path), tokens=args.tokens))
        rates: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.repeat):  # alternate sides
            for k, (python, code) in sides.items():
                rates[k].append(_rate(python, code, args.threads))
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k, r in med.items():
            ratio = r / med["llama.cpp"] if "llama.cpp" in med else None
            shown = f"{ratio:.3f}x llama.cpp" if ratio is not None else ""
            print(f"{kind:7} {k:20} {r:8.1f} tokens/s  {shown}")
            rows.append({"file": kind, "side": k, "tokens_per_s": r, "ratio_to_llama_cpp": ratio, "threads": args.threads})
    print("target: ours kept packed >= 0.5x llama.cpp's tokens/s")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
