"""The command line: ``quantdispatch check``, ``inspect``, ``load``, ``generate`` and ``demo``.

Exit status: 0 when every input is valid (``check``) or a plan exists (``inspect``), 1 when an input
is invalid or cannot be planned (or the output could not be written), 2 for a usage error, 130
when interrupted (Ctrl-C).

Everything printed that comes from an input (paths, keys, module names, values) is escaped, so a
name holding a newline or a terminal escape cannot forge or garble a line, and text that the
terminal's encoding cannot show is written with backslash escapes instead of crashing.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import NoReturn, TextIO, cast

from .cli_check import check_line, check_one, check_record
from .cli_support import backend_name, emit_json, issue_json, json_output
from .codec import dump
from .configs.base import AbstractQuantConfig
from .configs.unknown import UnknownMethod
from .dtypes import DType
from .environment import Cpu, Cuda, Environment, Package, Version
from .fileio import display
from .gguf_cli import add_dequant_parser, add_tensors_flag, run_tensors
from .jsonvalue import Json
from .plan import LoadOptions, plan
from .probing import probe
from .result import Err, Issue, Ok
from .text import printable, quote

__all__ = ["main", "check_one"]


def _cmd_check(args: argparse.Namespace) -> int:
    results = [(p, check_one(p)) for p in args.paths]
    if args.json:
        emit_json([check_record(p, r) for p, r in results], indent=2)
    else:
        print("\n".join(check_line(p, r) for p, r in results))
    return 0 if all(isinstance(r, Ok) for _, r in results) else 1


def _describe(cfg: AbstractQuantConfig) -> str:
    if isinstance(cfg, UnknownMethod):
        return f"UnknownMethod: quant_method {cfg.name!r} is registered by no method"
    fields = dump(cfg)
    shown = {k: v for k, v in fields.items() if k != "tensors"}
    text = f"{type(cfg).__name__} ({cfg.method}): " + json.dumps(shown)
    if "tensors" in fields and isinstance(fields["tensors"], list):
        text += f" + {len(fields['tensors'])} tensors"
    return text


def _inspect(path: str, env: Environment, options: LoadOptions) -> tuple[int, str]:
    found = check_one(path, keep_unknown_method=True)
    if isinstance(found, Err):
        return 1, check_line(path, found)
    cfg = found.value
    if cfg is None and options.user_config is None:
        return 0, f"{printable(path)}: not quantized; nothing to plan"
    made = plan(cfg, env, options)
    head = f"{printable(path)}\n  {printable(_describe(cfg)) if cfg else 'not quantized'}"
    if isinstance(made, Err):
        return 1, head + "\n  no plan:\n" + "\n".join(f"    {printable(i.render())}" for i in made.error)
    return 0, head + "\n" + "\n".join("  " + line for line in made.value.explain().splitlines())


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.tensors:
        return run_tensors(args.path)
    env = probe(devices=not args.no_devices)
    options = LoadOptions(device=args.device, dtype=DType(args.dtype) if args.dtype else None, backend=args.backend,
                          unknown_method="full_precision" if args.unknown_method == "full-precision" else "refuse")
    code, text = _inspect(args.path, env, options)
    print("environment:\n" + "\n".join("  " + line for line in env.summary().splitlines()))
    print(text)
    return code


def _example_paths() -> list[Path]:
    root = resources.files("quantdispatch") / "examples"
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".json"))


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.load:
        from .demo_load import run

        return run()
    paths = [str(p) for p in _example_paths()]
    gptq = next(p for p in paths if "gptq" in Path(p).name)
    print("== quantdispatch check on the built-in examples (the last one is broken on purpose)")
    print("\n".join(check_line(p, check_one(p)) for p in paths))
    torch = Package("torch", Version.parse("2.13.0"))
    gptqmodel = Package("gptqmodel", Version.parse("7.6.0"))
    for label, env in (
        ("this machine (probed)", probe(devices=False)),
        ("a hand-built V100 (sm_70) with gptqmodel", Environment(packages=(torch, gptqmodel), devices=(Cpu(), Cuda(capability=(7, 0), name="V100")))),
        ("a hand-built A100 (sm_80) with gptqmodel", Environment(packages=(torch, gptqmodel), devices=(Cpu(), Cuda(capability=(8, 0), name="A100")))),
    ):
        print(f"\n== inspect {Path(gptq).name} on {label}")
        print(_inspect(gptq, env, LoadOptions())[1])
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages escaped: they quote what was typed (``unrecognized
    arguments: …``), which may hold a terminal escape or a line break."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and the escaped message on stderr; exit with status 2."""
        super().error(printable(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quantdispatch", description="Check quantized checkpoints and plan their loading.")
    # Each subparser is a _Parser too (argparse makes them of the parent's class); the helpers
    # that add commands need only ArgumentParser's methods.
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(dest="command", required=True))
    check = sub.add_parser("check", help="validate model directories, config files or GGUF files")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--json", action="store_true", help="print JSON records instead of lines")
    check.set_defaults(run=_cmd_check)
    inspect = sub.add_parser("inspect", help="show the typed config, the environment and the load plan")
    inspect.add_argument("path", metavar="PATH")
    inspect.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    inspect.add_argument("--dtype", choices=[d.value for d in DType], help="compute dtype (default: chosen by the plan)")
    inspect.add_argument("--backend", type=backend_name, help="force a backend by name")
    inspect.add_argument("--no-devices", action="store_true", help="do not import torch to look for GPUs")
    add_tensors_flag(inspect)
    inspect.add_argument("--unknown-method", choices=["refuse", "full-precision"], default="refuse",
                         help="a checkpoint whose quant_method nobody registered: refuse it (default), or load it in full precision")
    inspect.set_defaults(run=_cmd_inspect)
    add_dequant_parser(sub)
    from .cli_load import add_commands

    add_commands(sub, _device_arg)
    from .cli_bench import add_command as add_bench

    add_bench(sub, _device_arg)
    demo = sub.add_parser("demo", help="check and inspect the built-in examples")
    demo.add_argument("--load", action="store_true", help="also build a tiny model, quantize it four ways and load each (needs torch)")
    demo.set_defaults(run=_cmd_demo)
    from .cli_deploy import add_commands as add_deploy
    from .cli_schema import add_command as add_schema

    add_schema(sub)
    add_deploy(sub)
    return parser


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]{0,3}))?")


def _device_arg(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{printable(text)!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return text


@contextlib.contextmanager
def _guarded_streams() -> Iterator[None]:
    """Make the process's standard streams safe for one run of the CLI, and restore them after.

    A closed descriptor 0, 1 or 2 (``quantdispatch … >&-``) gets /dev/null, so that no file this
    run opens can become "stdout" and receive its output; a missing ``sys.stdout`` or
    ``sys.stderr`` writes to /dev/null. stdin is empty while the command runs: no command reads it,
    and a library that asks a question there (Transformers' "run the custom code? [y/N]") reads
    end-of-file, never an answer piped in. A terminal or pipe whose encoding cannot show a
    character gets an escape, not a crash.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower descriptor was free too; it is fixed in its own turn
                os.dup2(opened, fd)
                os.close(opened)
    saved = sys.stdin, sys.stdout, sys.stderr
    spare: list[TextIO] = []
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            spare.append(open(os.devnull, "w"))  # closed below
            setattr(sys, name, spare[-1])
        stream = getattr(sys, name)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for stream in spare:
            stream.close()


def _failure_record(args: argparse.Namespace, issue: Issue) -> Json:
    source: Json = getattr(args, "source", None) or getattr(args, "path", None)
    return {"source": source, "ok": False, "issues": [issue_json(issue)]}


def _os_issue(e: OSError) -> Issue:
    name = e.filename
    where = f": {quote(display(name))}" if isinstance(name, (str, os.PathLike)) else ""
    return Issue("cli.os_error", "$", f"{e.strerror or type(e).__name__}{where}",
                 "a file changed or failed while it was used; check it and run the command again")


def _output_failed(e: OSError) -> bool:
    """Whether ``e`` is stdout failing (a full disk or device), which main reports on stderr:
    an error only writing raises, with no file name (a file we open is named)."""
    return e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; with ``--json``, stdout holds its one JSON record and nothing else,
    whatever goes wrong (an OS error becomes ``cli.os_error``, a bug ``cli.internal_error`` with
    its traceback on stderr)."""
    if not getattr(args, "json", False):
        try:
            status: int = args.run(args)
        except BrokenPipeError:
            raise
        except OSError as e:  # a file that vanished or failed while it was used
            if _output_failed(e):
                raise
            print(f"quantdispatch {args.command}: {printable(_os_issue(e).render())}", file=sys.stderr)
            return 1
        return status
    try:
        with json_output():
            return int(args.run(args))
    except BrokenPipeError:
        raise
    except OSError as e:
        if _output_failed(e):
            raise
        failure = _os_issue(e)
    except Exception as e:  # a bug: its traceback on stderr, and still one JSON record on stdout
        traceback.print_exc()
        failure = Issue("cli.internal_error", "$", f"{type(e).__name__}: {quote(str(e), 200)}",
                        "a bug in quantdispatch: please report it with the traceback printed on stderr")
    emit_json(_failure_record(args, failure))
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1, 2 or 130; see the module's docstring).

    A usage error raises ``SystemExit(2)`` (argparse), with its message on stderr.
    """
    with _guarded_streams():
        args = _parser().parse_args(argv)
        try:
            status = _run(args)
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, and keep Python from complaining
            # about the unflushable stdout at exit.
            _silence_stdout()
            return 1
        except OSError as e:  # stdout itself failed: a full disk, /dev/full, an I/O error
            _silence_stdout()
            print(f"quantdispatch: cannot write the output: {printable(e.strerror or type(e).__name__)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C: files being written were removed on the way out
            print("quantdispatch: interrupted", file=sys.stderr)
            return 130


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null and drop what its buffer still holds."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
