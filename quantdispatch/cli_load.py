"""``quantdispatch load`` and ``quantdispatch generate``: the shell commands that touch weights."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from .dtypes import DType
from .jsonvalue import Json
from .result import Err, Issues
from .text import printable

if TYPE_CHECKING:
    from .loading import Loaded

__all__ = ["add_commands"]


def _progress(done: int, total: int) -> None:
    print(f"\r  loading weights: file {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _issues(source: str, issues: Issues) -> int:
    print(f"{printable(source)}: not loaded ({len(issues)} issue{'s' if len(issues) != 1 else ''})")
    for i in issues:
        print(f"  {printable(i.render())}")
    return 1


def _load(args: argparse.Namespace) -> Loaded | int:
    from .loading import load

    found = load(args.source, device=args.device, dtype=args.dtype or "auto", backend=args.backend,
                 trust_remote_code=args.trust_remote_code, dequantize_at_load=args.dequantize_at_load,
                 progress=None if args.json else _progress)
    if isinstance(found, Err):
        if args.json:
            print(json.dumps({"source": args.source, "ok": False, "issues": [
                {"code": i.code, "path": i.path, "message": i.message, "hint": i.hint} for i in found.error]}))
            return 1
        return _issues(args.source, found.error)
    return found.value


def _cmd_load(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    s = loaded.stats
    if args.json:
        record: dict[str, Json] = {"source": args.source, "ok": True, "backend": loaded.plan.backend.name,
                                   "device": loaded.plan.device.label, "dtype": loaded.plan.dtype.value,
                                   "parameters": s.parameters, "bytes_on_disk": s.bytes_on_disk,
                                   "bytes_in_memory": s.bytes_in_memory, "seconds": round(s.seconds, 3)}
        print(json.dumps(record))
        return 0
    print(printable(str(args.source)))
    print("\n".join("  " + line for line in loaded.plan.explain().splitlines()))
    print(f"  loaded:   {s.parameters:,} parameters; {s.bytes_on_disk / 2**20:.1f} MiB on disk, "
          f"{s.bytes_in_memory / 2**20:.1f} MiB in memory; {s.seconds:.2f} s")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.max_new_tokens > 100_000:
        print("quantdispatch generate: --max-new-tokens must be between 1 and 100000", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    from .loading.gguf import gguf_source

    gguf = gguf_source(args.source)
    tokenizer: Any = None
    if gguf is not None:  # a GGUF file carries its tokenizer in its metadata
        from .backends.gguf_tokenizer import tokenizer_from_file

        found = tokenizer_from_file(gguf)
        if isinstance(found, Err):
            return _issues(args.source, found.error)
        tokenizer = found.value
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(loaded.directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{printable(str(args.source))}: no tokenizer beside the checkpoint ({printable(str(e)[:160])})")
        print("  generate.tokenizer.missing: save the tokenizer into the checkpoint's directory (tokenizer.save_pretrained)")
        return 1
    import torch

    inputs = tokenizer(args.prompt, return_tensors="pt").to(loaded.plan.device.label)
    generate: Any = loaded.model.generate
    with torch.no_grad():
        out = generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    # Escape what could drive a terminal, but keep the text's own line breaks.
    print("\n".join(printable(line) for line in str(text).split("\n")))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], device_arg: object) -> None:
    """Register ``load`` and ``generate`` on the CLI's subparsers."""
    for name, run, helptext in (("load", _cmd_load, "load a checkpoint through its plan and report what it cost"),
                                ("generate", _cmd_generate, "load a checkpoint and continue a prompt (greedy)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("source", metavar="SOURCE", help="a checkpoint directory, a Hub repository id (cached) or a .gguf file")
        p.add_argument("--device", default="auto", type=device_arg, help="auto, cpu, cuda, cuda:N or mps (default: auto)")  # type: ignore[arg-type]
        p.add_argument("--dtype", choices=[d.value for d in DType if d.is_floating_point], help="compute dtype (default: the plan's)")
        p.add_argument("--backend", help="force a backend by name")
        p.add_argument("--trust-remote-code", action="store_true", help="allow architectures defined by code in the checkpoint")
        p.add_argument("--dequantize-at-load", action="store_true", help="keep dense weights too: bigger, faster")
        p.add_argument("--json", action="store_true", help="print one JSON record")
        if name == "generate":
            p.add_argument("--prompt", required=True, help="the text to continue")
            p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default: 32)")
        p.set_defaults(run=run)
