"""``import quantdispatch.kernels`` loads no torch; its names load their submodule on first access."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import quantdispatch.kernels as kernels

_PROBE = (
    "import sys, json; import quantdispatch.kernels as k; before = 'torch' in sys.modules; "
    "k.GptqLinear; print(json.dumps([before, 'torch' in sys.modules]))"
)


@pytest.mark.slow
def test_kernels_package_imports_torch_only_on_first_use() -> None:
    """In a fresh interpreter, importing the package leaves torch unloaded; touching GptqLinear loads it."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, True]


def test_every_exported_name_resolves() -> None:
    """Each name in ``__all__`` resolves to an object of the submodule that defines it; others raise AttributeError."""
    for name in kernels.__all__:
        assert getattr(kernels, name).__name__ == name
    with pytest.raises(AttributeError):
        getattr(kernels, "no_such_kernel")  # noqa: B009
