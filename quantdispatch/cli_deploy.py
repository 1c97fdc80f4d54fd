"""Where and how a checkpoint can be deployed: ``engine-args`` (the arguments an engine needs for
it: vLLM's flags, Transformers' ``from_pretrained`` keywords, quantdispatch's own ``load`` line) and
``where`` (which engines run it on a CPU and on each GPU generation, and why not).

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
from .engines import transformers_args
from .environment import Cpu, Cuda
from .result import Err, Issue, Ok
from .text import printable, quote
from .where import MACHINES, engine_answers, quantdispatch_answer

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


def _refused(engine: str, made: Refusal) -> int:
    print(json.dumps({"engine": engine, "refused": made.code, "reason": made.message, "hint": made.hint}, indent=2))
    return 1


def _other_engine_args(args: argparse.Namespace, config: AbstractQuantConfig) -> int:
    device: Cpu | Cuda = Cuda(capability=args.capability) if args.capability else (Cpu() if args.device == "cpu" else Cuda(capability=(9, 0)))
    if args.engine == "transformers":
        made = transformers_args(config, device)
        if isinstance(made, Refusal):
            return _refused("transformers", made)
        print(json.dumps({"engine": "transformers", "from_pretrained": made.as_kwargs(), "notes": list(made.notes)}, indent=2))
        return 0
    ours = quantdispatch_answer(config, device)
    if ours.status != "runs":
        return _refused("quantdispatch", Refusal("engine.quantdispatch.no_backend", ours.reason))
    where = "cpu" if isinstance(device, Cpu) else "cuda"
    print(json.dumps({"engine": "quantdispatch", "backend": ours.how, "cli": ["quantdispatch", "load", args.path, "--device", where],
                      "notes": [n for n in (ours.reason,) if n]}, indent=2))
    return 0


def _cmd_engine_args(args: argparse.Namespace) -> int:
    config = _config_of(args.path, as_json=True)
    if isinstance(config, int):
        return config
    if args.engine != "vllm":
        return _other_engine_args(args, config)
    if args.device == "cpu":
        from .engines import vllm_answer
        said = vllm_answer(config, Cpu())
        if said.status != "runs":
            return _refused("vllm", Refusal(f"engine.vllm.cpu.{said.status}", said.reason, "serve it on a GPU, or load it with quantdispatch"))
    device = Cuda(capability=args.capability) if args.capability else None
    made = vllm_args(config, device, allow_deprecated=args.allow_deprecated)
    if isinstance(made, Refusal):
        return _refused("vllm", made)
    cli = made.as_cli() + (["--device", "cpu"] if args.device == "cpu" else [])
    print(json.dumps({"engine": made.engine, "quantization": made.quantization, "dtype": made.dtype, "kv_cache_dtype": made.kv_cache_dtype,
                      "min_capability": f"{made.min_capability[0]}.{made.min_capability[1]}", "cli": cli,
                      "notes": list(made.notes), "facts_from": VLLM_SOURCE}, indent=2))
    return 0


def _cmd_where(args: argparse.Namespace) -> int:
    config = _config_of(args.path)
    if isinstance(config, int):
        return config
    print(f"{type(config).__name__} ({config.method}) on hand-built machines, quantdispatch with every backend's packages installed:")
    answers = engine_answers(config)
    for machine in dict.fromkeys(a.device for a in answers):
        print(f"  {machine}:")
        for a in (a for a in answers if a.device == machine):
            said = f"{a.status}" + (f" ({a.how})" if a.how else "") + (f": {a.reason}" if a.reason else "")
            print(f"      {a.engine}: {printable(said)}" + (f"  [{printable(a.source)}]" if a.source else ""))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``engine-args`` and ``where`` to the ``quantdispatch`` parser."""
    engine = sub.add_parser("engine-args", help="the arguments an engine needs for a checkpoint (vLLM, Transformers, quantdispatch)")
    engine.add_argument("path", metavar="SOURCE")
    engine.add_argument("--engine", choices=["vllm", "transformers", "quantdispatch"], default="vllm")
    engine.add_argument("--device", choices=["cpu", "cuda"], default="cuda", help="the device it will run on (default: cuda)")
    engine.add_argument("--capability", type=capability, help="check against this CUDA compute capability (e.g. 8.0; major 1 to 99)")
    engine.add_argument("--allow-deprecated", action="store_true", help="accept methods vLLM deprecates")
    engine.set_defaults(run=_cmd_engine_args)
    where = sub.add_parser("where", help=f"which engines run the checkpoint on {len(MACHINES)} machines (a CPU; Turing to Blackwell), and why not")
    where.add_argument("path", metavar="SOURCE")
    where.set_defaults(run=_cmd_where)
