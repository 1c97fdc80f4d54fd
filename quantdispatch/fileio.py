"""Opening files that strangers name: regular files only, bounded reads, errors as issues.

A path on the command line or a ``config.json`` inside a model directory can be a FIFO (opening
it for reading blocks until someone writes), a device (``/dev/zero`` never ends), a directory, a
name too long for the file system, or a file that vanishes while it is read. ``open_regular``
opens without blocking, checks what it opened (not what the name pointed at a moment earlier)
and answers with an ``Issue`` instead of raising.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from .result import Issue
from .text import quote

__all__ = ["open_regular", "read_bounded", "display"]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def display(path: str | os.PathLike[str]) -> str:
    """A path as text for messages: undecodable bytes escaped, never raising."""
    try:
        return os.fsdecode(path)
    except (TypeError, ValueError):
        return quote(path)


def _why(e: OSError) -> tuple[str, str]:
    if e.errno == errno.ENOENT:
        return "file.missing", "no such file or directory"
    if e.errno == errno.ENAMETOOLONG:
        return "file.unreadable", "the name is too long for the file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "file.unreadable", "permission denied"
    if e.errno == errno.EISDIR:
        return "file.not_regular", "is a directory"
    return "file.unreadable", e.strerror or type(e).__name__


def open_regular(path: str | os.PathLike[str], code_prefix: str = "file") -> tuple[BinaryIO, int] | Issue:
    """Open a regular file for reading; return it with its size, or the issue.

    Never blocks (a FIFO is refused, not waited on) and never follows a name to a device.
    """
    try:
        fd = os.open(path, _FLAGS)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        code, why = _why(e) if isinstance(e, OSError) else ("file.unreadable", "the name contains a NUL byte")
        return Issue(code.replace("file", code_prefix, 1), "$", f"cannot read {quote(display(path))}: {why}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file"
            os.close(fd)
            return Issue(f"{code_prefix}.not_regular", "$", f"cannot read {quote(display(path))}: it is {kind}",
                         "name a regular file, or a model directory")
        return os.fdopen(fd, "rb"), info.st_size
    except OSError as e:
        os.close(fd)
        code, why = _why(e)
        return Issue(code.replace("file", code_prefix, 1), "$", f"cannot read {quote(display(path))}: {why}")


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes | Issue:
    """Read a whole regular file of at most ``limit`` bytes (a file that grows past it while
    being read is refused too)."""
    opened = open_regular(path)
    if isinstance(opened, Issue):
        return opened
    file, size = opened
    with file:
        if size > limit:
            return Issue("json.too_large", "$", f"{size} bytes is more than a config file can be", f"limit: {limit} bytes")
        try:
            data = file.read(limit + 1)
        except OSError as e:
            code, why = _why(e)
            return Issue(code, "$", f"cannot read {quote(display(path))}: {why}")
    if len(data) > limit:
        return Issue("json.too_large", "$", f"the file grew past {limit} bytes while it was read")
    return data
