"""``quantdispatch load`` and ``quantdispatch generate``: the shell commands that touch weights.

No code shipped with a checkpoint runs without ``--trust-remote-code``, and nothing reads stdin:
``generate`` finds and checks the tokenizer before it reads any weight, and a tokenizer defined
by the checkpoint's own code (``auto_map``) is refused (``generate.tokenizer.remote_code``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_support import MMAP_HELP, IntRange, backend_name, emit_json, issue_json
from .dtypes import DType
from .fileio import read_bounded
from .result import Err, Issue, Issues
from .text import printable, quote

if TYPE_CHECKING:
    from .loading import Loaded

__all__ = ["add_commands", "source_issue"]


def _progress(done: int, total: int) -> None:
    print(f"\r  loading weights: file {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _issues(args: argparse.Namespace, issues: Issues) -> int:
    if args.json:
        emit_json({"source": args.source, "ok": False, "issues": [issue_json(i) for i in issues]})
        return 1
    print(f"{printable(args.source)}: not loaded ({len(issues)} issue{'s' if len(issues) != 1 else ''})")
    for i in issues:
        print(f"  {printable(i.render())}")
    return 1


def source_issue(source: str) -> Issue | None:
    """Why ``source`` cannot even be looked up (a name too long, a loop of symbolic links, a NUL
    byte), or ``None``. A name that does not exist passes, to be read as a Hub repository id or
    reported missing by ``load``."""
    try:
        os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return Issue("load.source.unreadable", "$", f"cannot look up {quote(source)}: {e.strerror or type(e).__name__}")
    except ValueError:
        return Issue("load.source.unreadable", "$", f"cannot look up {quote(source)}: the name contains a NUL byte")
    return None


def _load(args: argparse.Namespace) -> Loaded | int:
    from .loading import load

    bad = source_issue(args.source)
    if bad is not None:
        return _issues(args, (bad,))
    found = load(args.source, device=args.device, dtype=args.dtype or "auto", backend=args.backend,
                 trust_remote_code=args.trust_remote_code, dequantize_at_load=args.dequantize_at_load, mmap=args.mmap,
                 progress=None if args.json else _progress)
    if isinstance(found, Err):
        return _issues(args, found.error)
    return found.value


def _cmd_load(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    s = loaded.stats
    if args.json:
        emit_json({"source": args.source, "ok": True, "backend": loaded.plan.backend.name,
                   "device": loaded.plan.device.label, "dtype": loaded.plan.dtype.value,
                   "parameters": s.parameters, "bytes_on_disk": s.bytes_on_disk,
                   "bytes_in_memory": s.bytes_in_memory, "seconds": round(s.seconds, 3)})
        return 0
    print(printable(str(args.source)))
    print("\n".join("  " + line for line in loaded.plan.explain().splitlines()))
    print(f"  loaded:   {s.parameters:,} parameters; {s.bytes_on_disk / 2**20:.1f} MiB on disk, "
          f"{s.bytes_in_memory / 2**20:.1f} MiB in memory; {s.seconds:.2f} s")
    return 0


def _remote_tokenizer(directory: Path) -> bool:
    """Whether the checkpoint's tokenizer_config.json names code of its own (``auto_map``)."""
    raw = read_bounded(directory / "tokenizer_config.json", 16 * 2**20)
    if isinstance(raw, Issue):
        return False
    try:
        found = json.loads(raw)
    except ValueError:
        return False
    return isinstance(found, dict) and "auto_map" in found


def _tokenizer(args: argparse.Namespace) -> Any:
    """The checkpoint's tokenizer, found before any weight is read, or the exit status.

    ``trust_remote_code`` is always passed as a bool: Transformers asks on stdin whether to run a
    checkpoint's code only when it is ``None``.
    """
    from .loading.checkpoint import resolve_source
    from .loading.gguf import gguf_source

    gguf = gguf_source(args.source)
    if gguf is not None:  # a GGUF file carries its tokenizer in its metadata
        from .backends.gguf_tokenizer import tokenizer_from_file

        found = tokenizer_from_file(gguf)
        return _issues(args, found.error) if isinstance(found, Err) else found.value
    directory = resolve_source(args.source)
    if isinstance(directory, Err):
        return _issues(args, directory.error)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory.value, local_files_only=True, trust_remote_code=bool(args.trust_remote_code))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as e:
        if not args.trust_remote_code and ("trust_remote_code" in str(e) or _remote_tokenizer(directory.value)):
            issue = Issue("generate.tokenizer.remote_code", "$.auto_map", "the tokenizer is defined by code shipped with the "
                          "checkpoint (auto_map), which runs only with --trust-remote-code",
                          "read that code, then pass --trust-remote-code to run it")
        else:
            issue = Issue("generate.tokenizer.missing", "$", f"no usable tokenizer beside the checkpoint: {quote(str(e), 160)}",
                          "save the tokenizer into the checkpoint's directory (tokenizer.save_pretrained)")
        return _issues(args, (issue,))


def _cmd_generate(args: argparse.Namespace) -> int:
    bad = source_issue(args.source)
    if bad is not None:
        return _issues(args, (bad,))
    tokenizer = _tokenizer(args)
    if isinstance(tokenizer, int):
        return tokenizer
    encoded = tokenizer(args.prompt, return_tensors="pt")
    if encoded["input_ids"].shape[-1] == 0:
        return _issues(args, (Issue("generate.prompt.empty", "$", f"the prompt {quote(args.prompt)} is no tokens at all",
                                    "give a prompt with some text"),))
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    import torch

    inputs = encoded.to(loaded.plan.device.label)
    generate: Any = loaded.model.generate
    with torch.no_grad():
        out = generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    text = str(tokenizer.decode(out[0], skip_special_tokens=True))
    if args.json:
        emit_json({"source": args.source, "ok": True, "backend": loaded.plan.backend.name, "text": text})
        return 0
    # Escape what could drive a terminal, but keep the text's own line breaks.
    print("\n".join(printable(line) for line in text.split("\n")))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], device_arg: object) -> None:
    """Register ``load`` and ``generate`` on the CLI's subparsers."""
    for name, run, helptext in (("load", _cmd_load, "load a checkpoint through its plan and report what it cost"),
                                ("generate", _cmd_generate, "load a checkpoint and continue a prompt (greedy)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("source", metavar="SOURCE", help="a checkpoint directory, a Hub repository id (cached) or a .gguf file")
        p.add_argument("--device", default="auto", type=device_arg, help="auto, cpu, cuda, cuda:N or mps (default: auto)")  # type: ignore[arg-type]
        p.add_argument("--dtype", choices=[d.value for d in DType if d.is_floating_point], help="compute dtype (default: the plan's)")
        p.add_argument("--backend", type=backend_name, help="force a backend by name")
        p.add_argument("--trust-remote-code", action="store_true", help="allow architectures defined by code in the checkpoint")
        p.add_argument("--dequantize-at-load", action="store_true", help="keep dense weights too: bigger, faster")
        p.add_argument("--mmap", action="store_true", help=MMAP_HELP)
        p.add_argument("--json", action="store_true", help="print one JSON record")
        if name == "generate":
            p.add_argument("--prompt", required=True, help="the text to continue")
            p.add_argument("--max-new-tokens", type=IntRange(1, 100_000), default=32, help="tokens to generate, 1 to 100000 (default: 32)")
        p.set_defaults(run=run)
