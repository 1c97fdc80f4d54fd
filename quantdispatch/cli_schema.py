"""The ``schema`` command: the JSON Schema of a method's config types, or of all of them.

It prints JSON, so its failure is a JSON record on stdout too (and a line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli_support import emit_json, issue_json
from .codec.registry import families, method_aliases
from .result import Issue
from .schema import DIALECT, all_schemas, json_schema
from .text import printable, quote

__all__ = ["add_command"]


def _cmd_schema(args: argparse.Namespace) -> int:
    if args.method is None:
        print(json.dumps(all_schemas(), indent=2))
        return 0
    method = method_aliases().get(args.method, args.method)
    family = next((f for f in families() if f.method == method), None)
    if family is None:
        known = ", ".join(sorted(f.method for f in families()))
        issue = Issue("schema.method.unknown", "$", f"unknown method {quote(args.method)}", f"known: {known}")
        # stdout, which otherwise holds a schema, gets JSON here too; the person reads stderr.
        print(f"quantdispatch schema: {printable(issue.render())}", file=sys.stderr)
        emit_json({"ok": False, "issues": [issue_json(issue)]})
        return 1
    schemas = [json_schema(s.cls) for s in family.specs]
    out = schemas[0] if len(schemas) == 1 else {"$schema": DIALECT, "title": method, "oneOf": schemas}
    print(json.dumps(out, indent=2))
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schema`` to the ``quantdispatch`` parser."""
    schema = sub.add_parser("schema", help="print the JSON Schema of a method's config types (all types without METHOD)")
    schema.add_argument("method", nargs="?", metavar="METHOD")
    schema.set_defaults(run=_cmd_schema)
