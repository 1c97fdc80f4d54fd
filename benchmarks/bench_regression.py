"""Two revisions of quantdispatch side by side: load wall time and decode tokens/s, same run.

A refactor of the execution side must not cost speed. This benchmark takes a baseline git
revision (``--baseline``, default ``HEAD~1``), extracts it with ``git archive`` into the work
directory, and measures it against the working tree on the same checkpoints, in fresh
interpreters that alternate between the two (baseline, current, baseline, …), so that the shared
machine's noise falls on both sides alike. Each run records, in its own process:

- ``load``: seconds from ``qd.load`` called to the model returned (imports are done before);
- ``decode``: greedy tokens/s over ``--tokens`` new tokens after a 16-token prompt, KV cache on,
  one thread (``--threads``).

Cases: a 4-bit GPTQ (g128) Llama on each CPU backend, named by the names the baseline knows (a
newer revision must keep accepting them), and a Q4_K GGUF Llama kept packed. The figures are
medians; the ratio is current / baseline (load: below 1.05 holds the line; decode: above 0.95).

Run: ``.venv/bin/python benchmarks/bench_regression.py [--baseline REV] [--repeat N] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES: tuple[tuple[str, str, str | None], ...] = (
    ("gptq-4bit cpu-int4", "gptq", "cpu-int4-gptq"),
    ("gptq-4bit cpu-q4", "gptq", "cpu-q4-gptq"),
    ("gptq-4bit portable", "gptq", "torch-gptq"),
    ("gguf q4_k packed", "gguf", None),
)

_RUN = """
import json, sys, time
import torch
torch.set_num_threads({threads})
import transformers.models.llama.modeling_llama  # noqa: F401
import quantdispatch as qd
assert qd.__file__.startswith({tree!r}), qd.__file__
start = time.perf_counter()
loaded = qd.load({source!r}, device="cpu", dtype="float32", backend={backend!r})
seconds = time.perf_counter() - start
model = loaded.unwrap().model
ids = torch.arange(16).reshape(1, 16) % 1000 + 5
with torch.inference_mode():
    model.generate(ids, max_new_tokens=2, do_sample=False)  # warm: first-call allocations
    begin = time.perf_counter()
    out = model.generate(ids, max_new_tokens={tokens}, min_new_tokens={tokens}, do_sample=False)
    rate = (out.shape[1] - 16) / (time.perf_counter() - begin)
print(json.dumps({{"load": seconds, "decode": rate, "backend": loaded.unwrap().plan.backend.name}}))
"""


def _extract(revision: str, dest: Path) -> Path:
    """The package of ``revision`` (``git archive``), extracted once into ``dest``."""
    tree = dest / f"rev-{revision.replace('/', '_').replace('~', '-')}"
    if (tree / "quantdispatch" / "__init__.py").exists():
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "quantdispatch"],
                             check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(tree, filter="data")
    return tree


def _make(workdir: Path) -> dict[str, Path]:
    """The two checkpoints, written once (in a child process, with the current tree)."""
    gptq, gguf = workdir / "gptq-4bit-g128", workdir / "llama-q4_k.gguf"
    if not (gptq / "config.json").exists() or not gguf.exists():
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import benchmarks.bench_regression as b; "
                f"b.write_models({str(gptq)!r}, {str(gguf)!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
    return {"gptq": gptq, "gguf": gguf}


def write_models(gptq: str, gguf: str) -> None:
    """A random Llama (hidden 1024, 8 layers, vocabulary 32000) as 4-bit GPTQ g128 and as Q4_K GGUF."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import quantdispatch as qd
    from quantdispatch.demo_load import _write
    from tests.gguf_models import T, tiny_model, write_gguf

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
    _write(Path(gptq), LlamaForCausalLM(config).eval(), qd.Gptq(bits=4, group_size=128))
    model = tiny_model("llama", hidden=1024, intermediate=2816, layers=8, vocab=32000, heads=16, kv_heads=16)
    write_gguf(model, "llama", Path(gguf).with_suffix(".tmp"), T.Q4_K)
    Path(gguf).with_suffix(".tmp").rename(gguf)


def _run(tree: Path, source: Path, backend: str | None, tokens: int, threads: int) -> dict[str, float | str]:
    code = _RUN.format(tree=str(tree), source=str(source), backend=backend, tokens=tokens, threads=threads)
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{tree.name} {backend}: failed\n{done.stderr[-3000:]}")
    record: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--baseline", default="HEAD~1", help="git revision to compare against")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qd-bench-regression")
    parser.add_argument("--case", action="append", help="only these cases (by label); all by default")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sources = _make(args.workdir)
    trees = {"baseline": _extract(args.baseline, args.workdir), "current": ROOT}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"baseline {args.baseline} vs the working tree; {cpu}, {os.cpu_count()} CPUs, {args.threads} thread(s); "
          f"medians of {args.repeat}")
    print(f"{'case':22} {'backend (current)':20} {'load base s':>11} {'load cur s':>10} {'ratio':>6}   "
          f"{'tok/s base':>10} {'tok/s cur':>9} {'ratio':>6}")
    for label, kind, backend in CASES:
        if args.case and label not in args.case:
            continue
        runs: dict[str, list[dict[str, float | str]]] = {"baseline": [], "current": []}
        for _ in range(args.repeat):
            for side, tree in trees.items():
                runs[side].append(_run(tree, sources[kind], backend, args.tokens, args.threads))

        def median(side: str, key: str) -> float:
            return statistics.median(float(r[key]) for r in runs[side])

        lb, lc, db, dc = median("baseline", "load"), median("current", "load"), median("baseline", "decode"), median("current", "decode")
        name = str(runs["current"][0]["backend"])
        print(f"{label:22} {name:20} {lb:11.3f} {lc:10.3f} {lc / lb:6.3f}   {db:10.2f} {dc:9.2f} {dc / db:6.3f}", flush=True)


if __name__ == "__main__":
    main()
