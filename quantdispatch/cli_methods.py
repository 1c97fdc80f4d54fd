"""The commands added with the method families: ``schema`` and ``engine-args``."""

from __future__ import annotations

import argparse
import json

from .codec.registry import families, method_aliases
from .schema import DIALECT, all_schemas, json_schema
from .text import printable

__all__ = ["add_commands"]


def _cmd_schema(args: argparse.Namespace) -> int:
    if args.method is None:
        print(json.dumps(all_schemas(), indent=2))
        return 0
    method = method_aliases().get(args.method, args.method)
    family = next((f for f in families() if f.method == method), None)
    if family is None:
        known = ", ".join(sorted(f.method for f in families()))
        print(f"quantdispatch schema: unknown method {printable(repr(args.method))}; known: {known}")
        return 1
    schemas = [json_schema(s.cls) for s in family.specs]
    out = schemas[0] if len(schemas) == 1 else {"$schema": DIALECT, "title": method, "oneOf": schemas}
    print(json.dumps(out, indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the ``quantdispatch`` parser."""
    schema = sub.add_parser("schema", help="print the JSON Schema of a method's config types (all types without METHOD)")
    schema.add_argument("method", nargs="?", metavar="METHOD")
    schema.set_defaults(run=_cmd_schema)
