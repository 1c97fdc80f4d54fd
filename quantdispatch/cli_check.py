"""Checking one input, shared by the commands that read a checkpoint's config before acting on it
(``check``, ``inspect``, ``demo``, ``engine-args``, ``where``): the typed config or the issues, as
a line for a person or a JSON record."""

from __future__ import annotations

from .cli_support import issue_json
from .configs.base import AbstractQuantConfig
from .configs.unknown import UnknownMethod
from .jsonvalue import Json
from .reading import read_config
from .result import Err, Issues, Ok, Result
from .text import printable
from .validate import validate

__all__ = ["check_one", "check_line", "check_record"]


def check_one(path: str, *, keep_unknown_method: bool = False) -> Result[AbstractQuantConfig | None, Issues]:
    """Read, parse and validate one input: the typed config, ``None`` if unquantized, or issues
    (an unregistered method is kept as ``UnknownMethod`` when asked, for the plan to decide)."""
    found = read_config(path, keep_unknown_method=keep_unknown_method)
    if isinstance(found, Err) or found.value is None or isinstance(found.value, UnknownMethod):
        return found
    return validate(found.value)


def check_record(path: str, r: Result[AbstractQuantConfig | None, Issues]) -> dict[str, Json]:
    """The outcome of ``check_one`` as the JSON record ``check --json`` prints."""
    if isinstance(r, Err):
        return {"path": path, "ok": False, "issues": [issue_json(i) for i in r.error]}
    cfg = r.value
    return {"path": path, "ok": True, "config": None if cfg is None else type(cfg).__name__,
            "method": None if cfg is None else cfg.method, "issues": []}


def check_line(path: str, r: Result[AbstractQuantConfig | None, Issues]) -> str:
    """The outcome of ``check_one`` as the lines ``check`` prints: ``ok`` with the config's type,
    or ``invalid`` with one escaped line per issue."""
    shown = printable(path)
    if isinstance(r, Ok):
        what = "not quantized" if r.value is None else f"{type(r.value).__name__}"
        return f"{shown}: ok: {what}"
    lines = [f"{shown}: invalid ({len(r.error)} issue{'s' if len(r.error) > 1 else ''})"]
    lines += [f"  {printable(i.render())}" for i in r.error]
    return "\n".join(lines)
