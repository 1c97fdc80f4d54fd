"""Third-party imports that keep quiet: what they print goes to a logger, not the terminal.

Transformers imports torchao whenever it is installed (its quantizer registry asks for it), and
torchao 0.x prints a "Failed to load …so" line per CUDA extension it cannot load and makes torch
log two deprecation warnings; bitsandbytes prints a line about a kernel hub it cannot reach;
gptqmodel prints a banner and changes environment variables. ``quantdispatch`` imports such a
package itself, once, before anything else would, inside ``contained()``: standard output and
error (Python's streams and file descriptors 1 and 2) go to a temporary file whose text is then
logged at DEBUG on the ``quantdispatch.thirdparty`` logger, and environment variables, warning
filters and the root logger are put back. Set that logger to DEBUG to see what they said.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import IO

__all__ = ["LOGGER", "contained", "quiet_import", "quiet_transformers", "transformers_progress_off"]

LOGGER = logging.getLogger("quantdispatch.thirdparty")
"""Where the output of contained imports goes (DEBUG)."""


def _redirect_fds(sink: IO[str]) -> list[tuple[int, int]]:
    """Point file descriptors 1 and 2 at ``sink``; returns (fd, saved copy) pairs to restore.
    A process without them (closed) keeps what it has."""
    saved: list[tuple[int, int]] = []
    for fd in (1, 2):
        try:
            copy = os.dup(fd)
        except OSError:
            continue
        os.dup2(sink.fileno(), fd)
        saved.append((fd, copy))
    return saved


@contextlib.contextmanager
def contained(label: str) -> Iterator[IO[str]]:
    """Run the body with stdout and stderr (Python objects and file descriptors 1 and 2) sent to a
    temporary file, yielded for reading, then logged at DEBUG under ``label``; put back the
    environment variables, warning filters and root logger the body changed. What other threads
    print meanwhile is captured too: keep the body short (an import)."""
    environ = dict(os.environ)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        saved = _redirect_fds(sink)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
                yield sink
        finally:
            sink.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            for key in [k for k in os.environ if k not in environ]:
                del os.environ[key]
            for key, value in environ.items():
                if os.environ.get(key) != value:
                    os.environ[key] = value
            root.setLevel(level)
            root.handlers[:] = handlers
            sink.seek(0)
            printed = sink.read()
            if printed.strip():
                LOGGER.debug("%s printed:\n%s", label, printed.rstrip())


def quiet_import(name: str) -> ModuleType | None:
    """Import ``name`` inside ``contained()`` unless it is imported already; ``None`` when it is not
    installed or its import fails (logged: the caller's own import will say why, if it needs it)."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    with contained(f"import {name}"):
        try:
            return importlib.import_module(name)
        except Exception as e:  # third-party import code: any failure means "not usable here"
            LOGGER.debug("import %s failed: %s: %s", name, type(e).__name__, e)
            return None


def quiet_transformers() -> None:
    """Import, quietly, what building a Transformers model imports and lets print: its quantizer
    registry, which imports torchao (and its prototype formats) when torchao is installed."""
    quiet_import("transformers.quantizers")


@contextlib.contextmanager
def transformers_progress_off() -> Iterator[None]:
    """Transformers' own progress bars ("Loading weights") off for the body, as they were after:
    ``qd.load`` reports progress itself (its ``progress`` callback)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
