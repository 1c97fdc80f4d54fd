"""``quantdispatch bench SOURCE``: load through the plan, then measure prefill and decode tokens/s.

So a user sees what the plan's choices buy: the backend and dtype the plan chose, which kernel
module each quantized layer ended up on, the load time, and the speed of a prompt (prefill, one
forward over ``--prompt-tokens`` random tokens) and of greedy decoding (one token per forward,
with the KV cache), medians over repeats. Random token ids need no tokenizer.

On the CPU it also prints how near the memory that decode is: the bytes one step reads
(``bandwidth.bytes_per_token``), this machine's copy bandwidth measured on the same threads
(``bandwidth.copy_bandwidth``), the tokens/s those allow, and the fraction reached.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from .bandwidth import bytes_per_token, copy_bandwidth, limit_tokens_per_s
from .cli_support import MMAP_HELP, IntRange, backend_name, emit_json, issue_json
from .jsonvalue import Json
from .result import Err
from .text import printable

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["add_command", "measure", "compiled_decode", "decode_split"]


def measure(model: nn.Module, *, prompt_tokens: int, new_tokens: int, repeat: int, compiled: bool = False) -> dict[str, float]:
    """Prefill and decode speed of a causal LM: ``prefill_tokens_per_s`` (median of ``repeat``
    prompt forwards), ``decode_tokens_per_s`` (median step over ``new_tokens`` greedy steps) and
    ``first_token_s`` (the first prefill, warm-up included).

    ``compiled``: decode with ``decoding.StaticDecoder`` (a static cache and the step compiled by
    inductor) instead of Transformers' eager step with its dynamic cache; ``compile_s`` is then the
    first step's time, which compiles."""
    import torch

    config: Any = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 32000) or 32000)
    ids = torch.randint(min(3, vocab - 1), vocab, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    ids = ids.to(device)
    forward: Any = model
    prefill: list[float] = []
    steps: list[float] = []
    with torch.inference_mode():
        start = time.perf_counter()
        out = forward(ids, use_cache=True)
        prefill.append(time.perf_counter() - start)
        for _ in range(repeat - 1):
            start = time.perf_counter()
            out = forward(ids, use_cache=True)
            prefill.append(time.perf_counter() - start)
        if compiled:
            return {"first_token_s": prefill[0], "prefill_tokens_per_s": prompt_tokens / statistics.median(prefill),
                    **compiled_decode(model, ids, new_tokens)}
        # Transformers 5.24 names the KV cache ``cache`` (``past_key_values`` before, deprecated since).
        key = "cache" if "cache" in out else "past_key_values"
        past, token = out[key], out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens):
            start = time.perf_counter()
            out = forward(token, use_cache=True, **{key: past})
            steps.append(time.perf_counter() - start)
            past, token = out[key], out.logits[:, -1:].argmax(-1)
    return {"first_token_s": prefill[0], "prefill_tokens_per_s": prompt_tokens / statistics.median(prefill),
            "decode_tokens_per_s": 1 / statistics.median(steps) if steps else 0.0}


def compiled_decode(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> dict[str, float]:
    """``decode_tokens_per_s`` of ``new_tokens`` greedy steps after the prompt ``ids`` on
    ``decoding.StaticDecoder`` (median step, the first excluded), and ``compile_s``, the first
    step, which compiles."""
    from .decoding import StaticDecoder

    decoder = StaticDecoder(model, max_cache_len=ids.shape[-1] + new_tokens + 1)
    token = decoder.prefill(ids)[:, -1:].argmax(-1)
    start = time.perf_counter()
    token = decoder.step(token)[:, -1:].argmax(-1)  # compiles
    compile_s = time.perf_counter() - start
    steps: list[float] = []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        token = decoder.step(token)[:, -1:].argmax(-1)
        steps.append(time.perf_counter() - start)
    return {"decode_tokens_per_s": 1 / statistics.median(steps) if steps else 0.0, "compile_s": compile_s}


def decode_split(model: nn.Module, *, steps: int = 16) -> dict[str, float]:
    """Where a decode step's time goes: ``linear_ms`` inside the weight layers (``nn.Linear``,
    quantdispatch's kernel modules, bitsandbytes' layers; outermost only) and ``rest_ms`` outside
    them (norms, rotary, attention, the cache, Transformers' Python), per token, medians over
    ``steps`` greedy steps after a 16-token prompt.

    The split is timed with forward hooks, which add a few microseconds per layer to the step;
    ``step_ms`` is the step with the hooks on, so the two parts add up to it.
    """
    import torch

    layers = [m for m in model.modules() if _weight_layer(m)]
    inside = [0.0]
    depth = [0]
    begun = [0.0]

    def enter(module: nn.Module, args: object) -> None:
        if depth[0] == 0:
            begun[0] = time.perf_counter()
        depth[0] += 1

    def leave(module: nn.Module, args: object, output: object) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            inside[0] += time.perf_counter() - begun[0]

    handles = [h for m in layers for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        config: Any = getattr(model, "config", None)
        vocab = int(getattr(config, "vocab_size", 32000) or 32000)
        ids = torch.randint(min(3, vocab - 1), vocab, (1, 16), generator=torch.Generator().manual_seed(1))
        ids = ids.to(next(model.parameters()).device)
        forward: Any = model
        totals: list[float] = []
        linear: list[float] = []
        with torch.inference_mode():
            out = forward(ids, use_cache=True)
            key = "cache" if "cache" in out else "past_key_values"
            past, token = out[key], out.logits[:, -1:].argmax(-1)
            for _ in range(steps):
                inside[0] = 0.0
                start = time.perf_counter()
                out = forward(token, use_cache=True, **{key: past})
                totals.append(time.perf_counter() - start)
                linear.append(inside[0])
                past, token = out[key], out.logits[:, -1:].argmax(-1)
    finally:
        for h in handles:
            h.remove()
    step, inner = statistics.median(totals), statistics.median(linear)
    return {"step_ms": 1000 * step, "linear_ms": 1000 * inner, "rest_ms": 1000 * (step - inner)}


def _weight_layer(module: nn.Module) -> bool:
    """Whether ``module`` multiplies by a weight matrix: ``nn.Linear``, a quantized layer of ours or
    of another library (a class named ``…Linear``: gptqmodel's ``TorchAtenLinear``, bitsandbytes'
    ``Linear4bit``), or mixture-of-experts weights (embedding tables are looked up, not multiplied)."""
    import torch

    name = type(module).__name__
    return (isinstance(module, torch.nn.Linear) or name.endswith("Linear")
            or (_quantized_module(module) and "Embedding" not in name))


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .cli_load import source_issue
    from .loading import load

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bad = source_issue(args.source)
    found = Err((bad,)) if bad is not None else load(args.source, device=args.device, dtype=args.dtype or "auto",
                                                     backend=args.backend, trust_remote_code=args.trust_remote_code,
                                                     mmap=args.mmap)
    if isinstance(found, Err):
        if args.json:
            emit_json({"source": args.source, "ok": False, "issues": [issue_json(i) for i in found.error]})
            return 1
        print(f"{printable(args.source)}: not loaded")
        for i in found.error:
            print(f"  {printable(i.render())}")
        return 1
    loaded = found.value
    speed = measure(loaded.model, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeat=args.repeat, compiled=args.compile)
    kernels = Counter(type(m).__name__ for m in loaded.model.modules() if _quantized_module(m))
    per_token = bytes_per_token(loaded.model)
    device = next(loaded.model.parameters()).device
    # The copy is measured on the CPU: on an accelerator the limit would need its own figure.
    bandwidth = copy_bandwidth(threads=torch.get_num_threads()) if device.type == "cpu" else None
    limit = limit_tokens_per_s(bandwidth, per_token) if bandwidth is not None else None
    reached = speed["decode_tokens_per_s"] / limit if limit else None
    split = decode_split(loaded.model, steps=min(args.new_tokens, 16))
    record: dict[str, Json] = {"source": args.source, "ok": True, "backend": loaded.plan.backend.name, "dtype": loaded.plan.dtype.value,
                               "threads": torch.get_num_threads(), "load_s": round(loaded.stats.seconds, 3),
                               "layers": dict(sorted(kernels.items())), **{k: round(v, 3) for k, v in speed.items()},
                               "bytes_per_token": per_token, "copy_bandwidth_gb_s": _figure(bandwidth / 1e9) if bandwidth else None,
                               "limit_tokens_per_s": _figure(limit) if limit else None,
                               "fraction_of_limit": _figure(reached) if reached is not None else None,
                               "decode_split_ms": {k: _figure(v) for k, v in split.items()}}
    if args.json:
        emit_json(record)
        return 0
    print(printable(str(args.source)))
    print("\n".join("  " + line for line in loaded.plan.explain().splitlines()))
    print(f"  layers:   {', '.join(f'{n} {k}' for k, n in sorted(kernels.items())) or 'none quantized'}")
    print(f"  threads:  {record['threads']}; loaded in {loaded.stats.seconds:.2f} s")
    print(f"  prefill:  {speed['prefill_tokens_per_s']:.1f} tokens/s ({args.prompt_tokens}-token prompt, median of {args.repeat})")
    how = f"static cache, step compiled in {speed['compile_s']:.1f} s" if args.compile else "eager, dynamic cache"
    print(f"  decode:   {speed['decode_tokens_per_s']:.1f} tokens/s (median of {args.new_tokens} greedy steps; {how})")
    print(f"  split:    {split['linear_ms']:.2f} ms in the weight layers, {split['rest_ms']:.2f} ms outside them per token "
          f"(timed with hooks: {split['step_ms']:.2f} ms a step)")
    if bandwidth is not None and limit is not None and reached is not None:
        print(f"  memory:   {per_token / 1e6:.1f} MB read per token; copy bandwidth {bandwidth / 1e9:.1f} GB/s (STREAM copy, "
              f"{record['threads']} threads) → limit {limit:.1f} tokens/s; decode reached {100 * reached:.0f} % of it")
    return 0


def _figure(value: float) -> float:
    """``value`` to four significant digits (a measured figure holds no more)."""
    return float(f"{value:.4g}")


def _quantized_module(module: nn.Module) -> bool:
    """Whether ``module`` is a quantized layer: one of quantdispatch's kernel modules, or a
    bitsandbytes layer."""
    kind = type(module)
    return (kind.__module__.startswith("quantdispatch.") and kind.__name__ != "Module") or kind.__name__ in ("Linear4bit", "Linear8bitLt")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], device_arg: object) -> None:
    """Register ``bench`` on the CLI's subparsers."""
    from .dtypes import DType

    p = sub.add_parser("bench", help="load a checkpoint and measure prefill and decode tokens/s")
    p.add_argument("source", metavar="SOURCE", help="a checkpoint directory or a Hub repository id (cached)")
    p.add_argument("--device", default="auto", type=device_arg, help="auto, cpu, cuda, cuda:N or mps (default: auto)")  # type: ignore[arg-type]
    p.add_argument("--dtype", choices=[d.value for d in DType if d.is_floating_point], help="compute dtype (default: the plan's)")
    p.add_argument("--backend", type=backend_name, help="force a backend by name")
    p.add_argument("--threads", type=IntRange(1, 1024), help="torch threads, 1 to 1024 (default: torch's)")
    p.add_argument("--prompt-tokens", type=IntRange(1, 8192), default=32, help="prompt length for prefill, 1 to 8192 (default: 32)")
    p.add_argument("--new-tokens", type=IntRange(1, 4096), default=32, help="greedy decode steps, 1 to 4096 (default: 32)")
    p.add_argument("--repeat", type=IntRange(1, 100), default=3, help="prefill repeats, 1 to 100 (default: 3)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow architectures defined by code in the checkpoint")
    p.add_argument("--mmap", action="store_true", help=MMAP_HELP)
    p.add_argument("--compile", action="store_true",
                   help="decode with a static cache and the step compiled by torch.compile (the first step compiles: tens of seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p.set_defaults(run=_cmd_bench)
