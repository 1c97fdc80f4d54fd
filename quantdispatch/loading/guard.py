"""Loads that leave the process as they found it, one at a time.

Building a Transformers model changes process-wide state while it runs: the default dtype
(``from_config(dtype=…)`` sets it and puts it back), ``nn.Module.register_parameter`` (accelerate's
``init_empty_weights`` patches it to build on the meta device), ``torch.nn.init``'s functions
(Transformers' ``no_init_weights``), warning filters (``warnings.catch_warnings``). Each puts its
change back, but two loads interleaved in threads put back each other's changes: after such a
race the default dtype stays bfloat16, or every later ``nn.Linear`` is built on the meta device.

So every load runs under one process-wide lock (concurrent ``qd.load`` calls give the models
sequential ones give), and the state is checked and restored when the load ends, however it ends.
Code outside ``qd.load`` that builds modules in another thread while a load runs can still see
the load's temporary state: that is Transformers' and accelerate's design, not ours to change.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import attrs

__all__ = ["ProcessState", "process_state", "one_load_at_a_time"]

_LOCK = threading.RLock()

_MODULE_METHODS = ("register_parameter", "register_buffer", "register_module", "__init__")


@attrs.frozen(eq=True)
class ProcessState:
    """What a load may touch and must leave as it found it.

    Attributes:
        default_dtype: ``torch.get_default_dtype()``.
        default_device: ``torch.get_default_device()``.
        module_methods: ``nn.Module``'s own methods that context managers patch, by name.
        init_functions: ``torch.nn.init``'s public functions, by name.
        warning_filters: ``warnings.filters``.
        environ: The environment variables.
    """

    default_dtype: object
    default_device: object
    module_methods: tuple[tuple[str, object], ...]
    init_functions: tuple[tuple[str, object], ...]
    warning_filters: tuple[Any, ...]
    environ: tuple[tuple[str, str], ...]


def process_state() -> ProcessState:
    """The process-wide state now (imports torch)."""
    import torch
    from torch import nn

    init = torch.nn.init
    return ProcessState(
        default_dtype=torch.get_default_dtype(), default_device=torch.get_default_device(),
        module_methods=tuple((n, nn.Module.__dict__.get(n)) for n in _MODULE_METHODS),
        init_functions=tuple(sorted((n, f) for n, f in vars(init).items() if callable(f) and not n.startswith("_"))),
        warning_filters=tuple(warnings.filters), environ=tuple(sorted(os.environ.items())),
    )


def _restore(before: ProcessState) -> None:
    import torch
    from torch import nn

    if torch.get_default_dtype() != before.default_dtype:
        torch.set_default_dtype(before.default_dtype)  # type: ignore[arg-type]
    if torch.get_default_device() != before.default_device:
        torch.set_default_device(before.default_device)  # type: ignore[arg-type]
    for name, method in before.module_methods:
        if nn.Module.__dict__.get(name) is not method and method is not None:
            setattr(nn.Module, name, method)
    for name, function in before.init_functions:
        if getattr(torch.nn.init, name, None) is not function:
            setattr(torch.nn.init, name, function)
    if tuple(warnings.filters) != before.warning_filters:
        warnings.filters = list(before.warning_filters)  # as catch_warnings puts them back
        warnings._filters_mutated()  # type: ignore[attr-defined]  # the interpreter's cache of the filters
    now = dict(os.environ)
    was = dict(before.environ)
    for key in now.keys() - was.keys():
        del os.environ[key]
    for key, value in was.items():
        if now.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def one_load_at_a_time() -> Iterator[None]:
    """Hold the process-wide load lock for the body, and put back whatever process state the
    body changed (default dtype and device, ``nn.Module``'s patched methods, ``torch.nn.init``,
    warning filters, environment variables) when it ends, by return or by exception."""
    with _LOCK:
        before = process_state()
        try:
            yield
        finally:
            _restore(before)

