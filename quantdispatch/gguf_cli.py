"""The GGUF commands of the CLI: ``inspect FILE.gguf --tensors`` and ``dequant``.

Exit status: 0 done, 1 a file that cannot be read, a tensor not found, a type we cannot
dequantize or an output that may not be replaced (not a regular file, or the input itself) or
cannot be written, 2 a usage error (argparse). Tensor names are printed with non-printable characters
escaped as ``repr`` does; a closed pipe (``| head``) ends the output quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence

from .fileio import check_output, write_replacing
from .gguf.blocks import summarize, undequantizable
from .gguf.data import GgufData, TensorData, open_gguf_data
from .result import Err, Issue

__all__ = ["add_dequant_parser", "add_tensors_flag", "run_tensors", "run_dequant", "printable"]

_DTYPE_NAMES = ("float32", "float16", "bfloat16")


def printable(text: str) -> str:
    """``text`` with non-printable characters escaped as ``repr`` escapes them (quotes kept out).

    >>> printable("blk.0\\nattn"), printable("ok.weight")
    ('blk.0\\\\nattn', 'ok.weight')
    """
    return text if text.isprintable() else repr(text)[1:-1]


def _emit(lines: Iterable[str]) -> bool:
    """Print ``lines``; ``False`` when the reader closed the pipe (then stdout is silenced)."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # Python's recipe: no second error at exit
        os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


def _issues(path: str, issues: Sequence[Issue]) -> int:
    _emit([f"{printable(path)}: cannot proceed ({len(issues)} issue{'s' * (len(issues) > 1)})"] + [f"  {printable(i.render())}" for i in issues])
    return 1


def add_tensors_flag(inspect: argparse.ArgumentParser) -> None:
    """Add ``--tensors`` to the ``inspect`` subparser."""
    inspect.add_argument("--tensors", action="store_true", help="for a .gguf file: list each tensor (name, type, shape, bytes, bits per weight)")


def run_tensors(path: str) -> int:
    """List the tensors of the GGUF file at ``path``; return the exit status."""
    found = open_gguf_data(path)
    if isinstance(found, Err):
        return _issues(path, found.error)
    with found.value as data:
        rows = summarize(data.header.tensors)
    head = f"{printable(path)}: {len(rows)} tensors (shape in PyTorch order, [out, in])"
    table = [f"{printable(r.name)}\t{r.type_name}\t{list(r.shape)}\t{r.nbytes}\t{r.bits:.4g}" for r in rows]
    _emit([head, "name\ttype\tshape\tbytes\tbits/weight", *table])
    return 0


def add_dequant_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``dequant`` subcommand on ``sub``."""
    p = sub.add_parser("dequant", help="dequantize GGUF tensors into one safetensors file")
    p.add_argument("path", metavar="FILE.gguf")
    p.add_argument("names", nargs="*", metavar="NAME", help="tensors to write (default: all)")
    p.add_argument("--out", required=True, metavar="OUT.safetensors")
    p.add_argument("--dtype", choices=_DTYPE_NAMES, default="float32")
    p.set_defaults(run=lambda args: run_dequant(args.path, args.names, args.out, args.dtype))


def run_dequant(path: str, names: Sequence[str], out: str, dtype: str = "float32") -> int:
    """Write tensors ``names`` (all when empty) of ``path`` dequantized to ``out``; return the status.

    Every name and every type, and whether ``out`` may be replaced, is checked before any tensor
    data is read. ``out`` is written beside itself under a temporary name and renamed into place:
    a failure leaves no partial file, and only a regular file that is not the input is replaced.
    """
    found = open_gguf_data(path)
    if isinstance(found, Err):
        return _issues(path, found.error)
    refused = check_output(out, [path])
    if refused is not None:
        found.value.close()
        return _issues(path, [refused])
    with found.value as data:
        return _dequant(data, path, names, out, dtype)


def _dequant(data: GgufData, path: str, names: Sequence[str], out: str, dtype: str) -> int:
    wanted = list(dict.fromkeys(names)) or [t.name for t in data.header.tensors]
    picked: list[TensorData] = []
    issues: list[Issue] = []
    for name in wanted:
        r = data.tensor(name)
        if isinstance(r, Err):
            issues.extend(r.error)
        else:
            picked.append(r.value)
    issues.extend(undequantizable([t.info for t in picked]))
    if issues:
        return _issues(path, issues)
    from .kernels.gguf.export import write_safetensors  # imports torch: only now

    failed = write_replacing(out, lambda name: write_safetensors(picked, name, dtype), inputs=[path],
                             unwritable="gguf.output.unwritable")
    if failed is not None:
        return _issues(path, [failed])
    _emit([f"{printable(out)}: wrote {len(wanted)} tensors from {printable(path)} as {dtype}"])
    return 0
