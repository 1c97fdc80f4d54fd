"""Peak RSS and decode speed of the kept-packed formats (FP8, int8, NVFP4, int4) against Transformers' CPU path.

For each format, a llama with random weights is quantized by the format's own tool, as the loading
tests do: Transformers' ``Fp8Quantize`` (block FP8, which it runs on CPU); compressed-tensors'
``ModelCompressor`` (FP8 per channel, int8 W8A16, NVFP4, W4A16); ModelOpt NVFP4 by the tests' writer
(``tests/loading/nvfp4_ckpt.py``: ModelOpt itself needs a GPU). Shapes: ``134m`` (hidden 768, 12
layers, intermediate 3072, vocab 32000, 12 heads) and ``1b`` (Llama-3.2-1B: hidden 2048, 16 layers,
intermediate 8192, 32 heads, 8 KV heads, vocab 128256, tied embeddings).

Each measurement runs in a fresh interpreter (``--child``), one after the other:

- ``baseline``: imports torch and Transformers' llama modeling code; its ``VmHWM`` is subtracted;
- ``ours``: ``qd.load(dir, device="cpu")`` (the plan's backend: weights kept packed);
- ``transformers``: ``AutoModelForCausalLM.from_pretrained(dir, device_map="cpu")``, whatever it does
  on a CPU (dequantize, compressed-tensors modules), or "refuses" with its error's first line.

Reported: peak RSS above the baseline, and its ratio to the checkpoint's bytes (target 1.15); decode
tokens/s (16-token prompt, ``--new-tokens`` greedy steps; the median step of each of ``--repeat``
rounds, then the median round); the bandwidth limit: a STREAM-like copy of a 256 MiB tensor measured
in this run (bytes read + written over the median time) over the packed bytes a decode step reads
(every stored tensor but the input embedding, which is read one row at a time, unless tied).

Run: ``.venv/bin/python -m benchmarks.bench_formats --shape 134m [--threads 2] [--repeat 3] [--formats a,b]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch

SHAPES: Final[dict[str, dict[str, Any]]] = {
    "134m": {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "vocab_size": 32000, "num_attention_heads": 12,
             "num_key_value_heads": 12, "tie_word_embeddings": False},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192, "vocab_size": 128256, "num_attention_heads": 32,
           "num_key_value_heads": 8, "tie_word_embeddings": True, "head_dim": 64, "rope_theta": 500000.0},
}
FORMATS: Final = ("fp8-block", "fp8-channel", "ct-int8-w8a16", "ct-nvfp4", "modelopt-nvfp4", "ct-w4a16")
PROMPT: Final = 16


# ---------------------------------------------------------------------------------------------- writing


def _model(shape: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=2048, **SHAPES[shape])
    model: Any = LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def _save(out: Path, model: Any, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    model.config.save_pretrained(out)


def _per_linear(out: Path, model: Any, quantize: Callable[[str, torch.Tensor], dict[str, torch.Tensor]]) -> None:
    """Quantize every decoder projection with ``quantize`` (name, float32 weight) -> stored tensors."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith("proj.weight") and ".layers." in name:
            tensors.update((f"{module}.{k}", v) for k, v in quantize(module, t.float()).items())
        else:
            tensors[name] = t
    _save(out, model, tensors)


def _write_fp8_block(out: Path, model: Any) -> None:
    from transformers import FineGrainedFP8Config
    from transformers.integrations import finegrained_fp8

    quantizer = type("Quantizer", (), {"quantization_config": FineGrainedFP8Config(weight_block_size=(128, 128))})()
    fp8: Any = finegrained_fp8

    def quantize(module: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
        made = fp8.Fp8Quantize(quantizer)._quantize_one(f"{module}.weight", w)
        return {"weight": made[f"{module}.weight"], "weight_scale_inv": made[f"{module}.weight_scale_inv"]}

    _per_linear(out, model, quantize)
    document = json.loads((out / "config.json").read_text())
    document["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    (out / "config.json").write_text(json.dumps(document))


def _write_modelopt_nvfp4(out: Path, model: Any) -> None:
    from tests.loading.nvfp4_ckpt import modelopt_quantize

    _per_linear(out, model, lambda module, w: modelopt_quantize(w))
    side = {"producer": {"name": "modelopt", "version": "0.33.0"},
            "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16, "exclude_modules": ["lm_head"]}}
    (out / "hf_quant_config.json").write_text(json.dumps(side, indent=4))


def _write_ct(out: Path, model: Any, fmt: str, weights: dict[str, Any], preset: str | None = None) -> None:
    """Quantize with compressed-tensors' own qparams and compress with its ``ModelCompressor``."""
    import importlib


    q: Any = importlib.import_module("compressed_tensors.quantization")
    compressors: Any = importlib.import_module("compressed_tensors.compressors")
    helpers: Any = importlib.import_module("compressed_tensors.quantization.utils.helpers")
    scheme = q.preset_name_to_scheme(preset, ["Linear"]) if preset else q.QuantizationScheme(
        targets=["Linear"], weights=q.QuantizationArgs(**weights))
    q.apply_quantization_config(model, q.QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"], format=fmt))
    for module in model.modules():
        scale: Any = getattr(module, "weight_scale", None)
        if scale is None:
            continue
        w: torch.Tensor = getattr(module, "weight").data.float()  # noqa: B009
        n, k = w.shape
        args = getattr(module, "quantization_scheme").weights  # noqa: B009
        g = None
        if args.strategy == "tensor_group":
            g = helpers.generate_gparam(w.min(), w.max())
            getattr(module, "weight_global_scale").data.copy_(g)  # noqa: B009
        size = args.group_size if args.strategy in ("group", "tensor_group") else k
        blocks = w.view(n, k // size, size)
        s, z = helpers.calculate_qparams(blocks.amin(-1), blocks.amax(-1), args, global_scale=g)
        scale.data.copy_(s.reshape(scale.shape).to(scale.dtype))
        zero: Any = getattr(module, "weight_zero_point", None)
        if zero is not None:
            zero.data.copy_(z.reshape(zero.shape))
    compressor: Any = compressors.ModelCompressor.from_pretrained_model(model, fmt)
    compressor.compress_model(model)
    _save(out, model, dict(model.state_dict()))
    compressor.update_config(str(out))


def write(fmt: str, out: Path, shape: str) -> None:
    """Write ``fmt``'s checkpoint of ``shape`` to ``out``."""
    model = _model(shape)
    with warnings.catch_warnings(action="ignore"):
        if fmt == "fp8-block":
            _write_fp8_block(out, model)
        elif fmt == "modelopt-nvfp4":
            _write_modelopt_nvfp4(out, model)
        elif fmt == "fp8-channel":
            _write_ct(out, model, "float-quantized", {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"})
        elif fmt == "ct-int8-w8a16":
            _write_ct(out, model, "int-quantized", {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"})
        elif fmt == "ct-nvfp4":
            _write_ct(out, model, "nvfp4-pack-quantized", {}, preset="NVFP4A16")
        elif fmt == "ct-w4a16":
            _write_ct(out, model, "pack-quantized", {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                     "group_size": 128})
        else:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------- measuring


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def child(mode: str, directory: str, threads: int, new_tokens: int, repeat: int, dtype: str | None = None) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``baseline``, ``ours`` or ``transformers``."""
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401  (the baseline imports the llama code too)

    torch.set_num_threads(threads)
    if mode == "baseline":
        return {"rss_mib": _vm_hwm_mib()}
    model: Any
    start = time.perf_counter()
    if mode == "ours":
        import quantdispatch as qd

        loaded = qd.load(directory, device="cpu", dtype=dtype or "auto").unwrap()
        model, how = loaded.model, f"{loaded.plan.backend.name} {loaded.plan.dtype.value}"
    else:
        from transformers import AutoModelForCausalLM

        try:
            with warnings.catch_warnings(action="ignore"):
                model = AutoModelForCausalLM.from_pretrained(directory, device_map="cpu").eval()
        except Exception as e:  # any refusal is the result
            return {"refused": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"}
        how = str(next(model.parameters()).dtype).removeprefix("torch.")
    load_s, load_rss = time.perf_counter() - start, _vm_hwm_mib()
    rates = [_decode(model, new_tokens) for _ in range(repeat)]
    return {"how": how, "load_s": load_s, "load_rss_mib": load_rss, "rss_mib": _vm_hwm_mib(), "tok_s": statistics.median(rates)}


def _decode(model: Any, new_tokens: int) -> float:
    """Greedy decode from a 16-token prompt; tokens/s of the median step."""
    import torch

    ids = torch.randint(3, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    steps = []
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens):
            t = time.perf_counter()
            out = model(token, past_key_values=past, use_cache=True)
            steps.append(time.perf_counter() - t)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return 1.0 / statistics.median(steps)


def stored_bytes(directory: Path) -> tuple[int, int]:
    """The checkpoint's bytes, and the bytes a decode step reads (all but an untied input embedding)."""
    total = read = 0
    tied = json.loads((directory / "config.json").read_text()).get("tie_word_embeddings", False)
    for file in directory.glob("*.safetensors"):
        total += file.stat().st_size
        raw = file.read_bytes()[:8]
        (size,) = struct.unpack("<Q", raw)
        with open(file, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            read += 0 if (name.endswith("embed_tokens.weight") and not tied) else end - begin
    return total, read


def _run_child(mode: str, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_formats", "--child", mode, str(directory), "--threads", str(args.threads),
           "--new-tokens", str(args.new_tokens), "--repeat", str(args.repeat), *(["--dtype", args.dtype] if args.dtype else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"refused": f"exit {done.returncode}: {tail[:160]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shape", choices=list(SHAPES), default="134m")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ", ".join(FORMATS))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/qd-bench-formats"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="ours: this compute dtype (default: the plan's)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.threads, args.new_tokens, args.repeat, args.dtype)))
        return 0
    formats = [f for f in args.formats.split(",") if f]
    for fmt in formats:
        out = args.dir / args.shape / fmt
        if not (out / "config.json").exists():
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", f"from benchmarks.bench_formats import write; from pathlib import Path; "
                                   f"write({fmt!r}, Path({str(out)!r}), {args.shape!r})"], cwd=Path(__file__).resolve().parents[1], check=False)
            if done.returncode != 0:
                print(f"{fmt}: writing failed (exit {done.returncode})")
                continue
            print(f"wrote {fmt} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    from quantdispatch.bandwidth import copy_bandwidth

    bandwidth = copy_bandwidth(threads=args.threads)
    base = _run_child("baseline", args.dir, args)["rss_mib"]
    print(f"shape {args.shape}, {args.threads} thread(s), copy bandwidth {bandwidth / 1e9:.1f} GB/s, baseline VmHWM {base:.0f} MiB "
          f"(torch + Transformers' llama code), {args.new_tokens} new tokens after {PROMPT}, median of {args.repeat}")
    print("| format | ckpt MiB | ours: backend | ours ΔRSS MiB (× ckpt) | Transformers: dtype | Transformers ΔRSS MiB (× ckpt) "
          "| ours tok/s | Transformers tok/s | ours / Transformers | limit tok/s | ours / limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fmt in formats:
        out = args.dir / args.shape / fmt
        if not (out / "config.json").exists():
            continue
        total, per_token = stored_bytes(out)
        ours = _run_child("ours", out, args)
        theirs = {"refused": "skipped"} if args.skip_transformers else _run_child("transformers", out, args)
        limit = bandwidth / per_token
        print("| " + " | ".join([fmt, f"{total / 2**20:.0f}", *_cells(ours, base, total), *_cells(theirs, base, total),
                                 _rate(ours), _rate(theirs), _ratio(ours, theirs), f"{limit:.1f}",
                                 f"{ours['tok_s'] / limit:.2f}" if "tok_s" in ours else "—"]) + " |", flush=True)
    return 0


def _cells(r: dict[str, Any], base: float, total: int) -> list[str]:
    if "refused" in r:
        return [f"refuses: {r['refused']}", "—"]
    delta = r["rss_mib"] - base
    return [str(r["how"]), f"{delta:.0f} ({delta * 2**20 / total:.2f}×; at load {r['load_rss_mib'] - base:.0f})"]


def _rate(r: dict[str, Any]) -> str:
    return f"{r['tok_s']:.1f}" if "tok_s" in r else "—"


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    return f"{a['tok_s'] / b['tok_s']:.2f}×" if "tok_s" in a and "tok_s" in b else "—"


if __name__ == "__main__":
    raise SystemExit(main())
