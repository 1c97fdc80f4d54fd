"""Where and how a checkpoint can be deployed: ``engine-args`` (the arguments a serving engine
needs for it) and ``where`` (which GPU generations could load it, and why not).

``engine-args`` prints JSON, so its failures are JSON records on stdout too.
"""

from __future__ import annotations

import argparse
import json

from .backend import Refusal
from .cli_check import check_line, check_one
from .cli_support import capability, emit_json, issue_json
from .configs.base import AbstractQuantConfig
from .engine import VLLM_SOURCE, vllm_args
from .environment import Cuda
from .result import Err, Issue, Ok
from .text import printable, quote
from .where import verdicts

__all__ = ["add_commands"]


def _config_of(path: str, as_json: bool = False) -> AbstractQuantConfig | int:
    """The checkpoint's validated config, or the exit status after printing why not (as lines,
    or as the JSON record ``engine-args`` prints: ``refused`` with the first issue's code)."""
    found = check_one(path)
    if isinstance(found, Ok) and found.value is not None:
        return found.value
    issues = found.error if isinstance(found, Err) else (
        Issue("engine.source.not_quantized", "$", f"{quote(path)} is not quantized", "a serving engine loads it as it is"),)
    if as_json:
        first = issues[0]
        emit_json({"engine": "vllm", "refused": first.code, "reason": first.message, "hint": first.hint,
                   "issues": [issue_json(i) for i in issues]}, indent=2)
    elif isinstance(found, Err):
        print(check_line(path, found))
    else:
        print(f"{printable(path)}: not quantized")
    return 1


def _cmd_engine_args(args: argparse.Namespace) -> int:
    config = _config_of(args.path, as_json=True)
    if isinstance(config, int):
        return config
    device = Cuda(capability=args.capability) if args.capability else None
    made = vllm_args(config, device, allow_deprecated=args.allow_deprecated)
    if isinstance(made, Refusal):
        print(json.dumps({"engine": "vllm", "refused": made.code, "reason": made.message, "hint": made.hint}, indent=2))
        return 1
    print(json.dumps({"engine": made.engine, "quantization": made.quantization, "dtype": made.dtype, "kv_cache_dtype": made.kv_cache_dtype,
                      "min_capability": f"{made.min_capability[0]}.{made.min_capability[1]}", "cli": made.as_cli(),
                      "notes": list(made.notes), "facts_from": VLLM_SOURCE}, indent=2))
    return 0


def _cmd_where(args: argparse.Namespace) -> int:
    config = _config_of(args.path)
    if isinstance(config, int):
        return config
    print(f"{type(config).__name__} ({config.method}) on hand-built machines with every backend's packages installed:")
    for v in verdicts(config):
        print(f"  {v.machine}: " + (f"loads with {v.backend}" if v.backend else "cannot load"))
        for why in v.why_not:
            print(f"      {printable(why)}")
        print(f"      vLLM: {printable(v.vllm)}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``engine-args`` and ``where`` to the ``quantdispatch`` parser."""
    engine = sub.add_parser("engine-args", help="the arguments a serving engine needs for a checkpoint (vLLM)")
    engine.add_argument("path", metavar="SOURCE")
    engine.add_argument("--engine", choices=["vllm"], default="vllm")
    engine.add_argument("--capability", type=capability, help="check against this CUDA compute capability (e.g. 8.0; major 1 to 99)")
    engine.add_argument("--allow-deprecated", action="store_true", help="accept methods vLLM deprecates")
    engine.set_defaults(run=_cmd_engine_args)
    where = sub.add_parser("where", help="could the checkpoint load on Turing, Ampere, Ada, Hopper, Blackwell? and why not")
    where.add_argument("path", metavar="SOURCE")
    where.set_defaults(run=_cmd_where)
