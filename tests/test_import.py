"""``import quantdispatch`` stays light: no torch, Transformers, numpy or backend package.

The pure core (parse, dump, validate, plan, select_backend, environment values) must work in a
process that never imports torch. Only the shell may import torch or Transformers; the static check
reads every module's source with ``ast`` to keep it that way.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parents[1] / "quantdispatch"
HEAVY: Final = ("torch", "transformers", "numpy", "gguf", "bitsandbytes")
SHELL_FILES: Final = frozenset({"probe.py", "probing.py", "testing.py", "cli_load.py", "cli_bench.py", "demo_load.py", "gguf_cli.py", "quiet.py",
                                "bandwidth.py", "decoding.py"})
"""Modules that may import torch at their top (``probe`` was renamed ``probing``; ``testing`` holds the
writers tests use), besides ``backends/`` and ``kernels/``."""
SHELL_DIRS: Final = frozenset({"backends", "kernels", "loading"})
FORBIDDEN: Final = frozenset({"torch", "transformers"})

_TOUCH_THE_PURE_API: Final = f"""
import json, sys
import quantdispatch as qd

env = qd.Environment(
    packages=(qd.Package("torch", qd.Version.parse("2.13.0")), qd.Package("bitsandbytes", qd.Version.parse("0.50.2")),
              qd.Package("gptqmodel", qd.Version.parse("7.6.0"))),
    devices=(qd.Cpu(), qd.Cuda(capability=(8, 0))),
)
for raw in ({{"quant_method": "gptq", "bits": 4, "group_size": 128}},
            {{"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}},
            {{"load_in_8bit": True}},
            {{"quant_method": "awq", "bits": 4, "version": "gemm"}},
            {{"quant_method": "GPTQ"}}):
    result = qd.parse(raw)
    if isinstance(result, qd.Ok):
        config = result.value
        qd.dump(config)
        qd.dump(config, style="transformers")
        qd.validate(config)
        qd.plan(config, env)
        qd.plan(config, env, qd.LoadOptions(device="cpu"))
        qd.select_backend(config, qd.Cpu())
        qd.select_backend(config, qd.Cuda(capability=(7, 5)))
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.slow
def test_pure_api_imports_no_heavy_package() -> None:
    """Using parse, dump, validate, plan and select_backend imports no torch, transformers, numpy, gguf or bitsandbytes."""
    done = _run("-c", _TOUCH_THE_PURE_API)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


LIGHT_DEPENDENCIES: Final = frozenset({"quantdispatch", "attr", "attrs", "plum", "beartype", "rich", "typing_extensions", "mypy_extensions"})
"""Third-party packages ``import quantdispatch`` may load (plum brings beartype and rich). Import time
itself is measured in benchmarks/bench_import.py, not asserted: a timed test would be flaky."""

# mypyc-compiled wheels (plum is one) load a runtime helper module named `<hash>__mypyc`.
_LIST_THIRD_PARTY = (
    "import sys, json; before = set(sys.modules); import quantdispatch; "
    "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
    "print(json.dumps(sorted(m for m in new if m not in sys.stdlib_module_names and not m.startswith('_') and not m.endswith('__mypyc'))))"
)


@pytest.mark.slow
def test_import_loads_only_light_dependencies() -> None:
    """A fresh `import quantdispatch` loads no third-party package beyond attrs and plum's own dependencies."""
    done = _run("-c", _LIST_THIRD_PARTY)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert loaded <= LIGHT_DEPENDENCIES, sorted(loaded - LIGHT_DEPENDENCIES)
    assert "quantdispatch" in loaded


def _imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute module an ``import`` or ``from … import`` statement names."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


def _top_level_roots(tree: ast.Module) -> set[str]:
    """``_imported_roots`` of the statements that run at import: a module's top level, not its
    functions, and not ``if TYPE_CHECKING:`` blocks."""
    roots: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        roots |= _imported_roots(node)
    return roots


LAZY_DIRS: Final = frozenset({"layouts"})
"""Pure at import, but a layout file may hold its torch side in functions that import torch when a
load calls them (the whole of a format in one file); the runtime test above proves planning never does."""


def _is_shell(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return (len(relative.parts) == 1 and relative.name in SHELL_FILES) or relative.parts[0] in SHELL_DIRS


def test_only_the_shell_imports_torch_or_transformers() -> None:
    """No module under quantdispatch/ outside the shell (the probe, the test writers, loading,
    backends/, kernels/, the load CLI and demo) imports torch or transformers, even lazily; a layout file only inside its functions."""
    modules = sorted(PACKAGE.rglob("*.py"))
    assert modules, f"no sources under {PACKAGE}"
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for path in modules
        if not _is_shell(path) and (found := _roots(path) & FORBIDDEN)
    }
    assert offenders == {}


def _roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return _top_level_roots(tree) if path.relative_to(PACKAGE).parts[0] in LAZY_DIRS else _imported_roots(tree)


def test_a_layout_imports_torch_only_inside_functions() -> None:
    """The check of layout files sees a top-level torch import, and lets a function-level or TYPE_CHECKING one pass."""
    top = "import torch\n"
    lazy = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
            "def f():\n    import torch\nclass C:\n    def g(self):\n        import torch\n")
    assert _top_level_roots(ast.parse(top)) == {"torch"}
    assert _top_level_roots(ast.parse(lazy)) == {"typing"}


def test_static_check_sees_imports() -> None:
    """The static check finds plain, dotted, from- and function-local imports, and skips relative ones."""
    source = "import torch.nn\nfrom transformers import X\ndef f():\n    import numpy\nfrom .torch import y\n"
    assert _imported_roots(ast.parse(source)) == {"torch", "transformers", "numpy"}
