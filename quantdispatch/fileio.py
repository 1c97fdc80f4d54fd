"""Opening files that strangers name: regular files only, bounded reads, errors as issues.

A path on the command line or a ``config.json`` inside a model directory can be a FIFO (opening
it for reading blocks until someone writes), a device (``/dev/zero`` never ends), a directory, a
name too long for the file system, or a file that vanishes while it is read. ``open_regular``
opens without blocking, checks what it opened (not what the name pointed at a moment earlier)
and answers with an ``Issue`` instead of raising.

Writing is the mirror image: an output path a user names may be a device, a FIFO, a symbolic
link, a directory or the input itself. ``write_replacing`` refuses all of those before anything is
written, writes beside the target under a temporary name and moves the finished file into place,
so a failure (a full disk) leaves nothing half-written and the old file, if any, untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

from .result import Issue
from .text import quote

__all__ = ["open_regular", "read_bounded", "display", "check_output", "write_replacing"]

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


def _unreadable(path: str | os.PathLike[str], e: OSError | ValueError, code_prefix: str) -> Issue:
    code, why = _why(e) if isinstance(e, OSError) else ("file.unreadable", "the name contains a NUL byte")
    return Issue(code.replace("file", code_prefix, 1), "$", f"cannot read {quote(display(path))}: {why}")


def _not_regular(path: str | os.PathLike[str], mode: int, code_prefix: str) -> Issue:
    return Issue(f"{code_prefix}.not_regular", "$", f"cannot read {quote(display(path))}: it is {_kind(mode)}",
                 "name a regular file, or a model directory")


def open_regular(path: str | os.PathLike[str], code_prefix: str = "file") -> tuple[BinaryIO, int] | Issue:
    """Open a regular file for reading; return it with its size, or the issue.

    Never blocks (a FIFO is refused, not waited on) and never opens a device (opening one can act:
    a tape rewinds, a watchdog starts): the name is looked up first, and only a regular file is
    opened. What was opened is checked again, so a name swapped for something else in between is
    refused too.
    """
    try:
        seen = os.stat(path)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        return _unreadable(path, e, code_prefix)
    if not stat.S_ISREG(seen.st_mode):
        return _not_regular(path, seen.st_mode, code_prefix)
    try:
        fd = os.open(path, _FLAGS)
    except (OSError, ValueError) as e:
        return _unreadable(path, e, code_prefix)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            os.close(fd)
            return Issue(f"{code_prefix}.not_regular", "$", f"cannot read {quote(display(path))}: it was replaced while it was "
                         f"opened, and is now {'a regular file' if stat.S_ISREG(info.st_mode) else _kind(info.st_mode)}",
                         "run the command again when nothing is changing the file")
        return os.fdopen(fd, "rb"), info.st_size
    except OSError as e:
        os.close(fd)
        return _unreadable(path, e, code_prefix)


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
            return _unreadable(path, e, "file")
    if len(data) > limit:
        return Issue("json.too_large", "$", f"the file grew past {limit} bytes while it was read")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _out_issue(code: str, path: str | os.PathLike[str], why: str, hint: str | None = None) -> Issue:
    return Issue(code, "$", f"cannot write {quote(display(path))}: {why}", hint)


def check_output(path: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = ()) -> Issue | None:
    """Whether ``write_replacing`` may put a file at ``path``: ``None``, or why not.

    Refused, without opening anything: a name that is not a regular file (a directory, FIFO,
    device, socket, or a symbolic link, even one to a regular file: ``file.out.not_regular``),
    and a file that is one of ``inputs`` under any name, a hard link or another spelling of the
    path included (``file.out.is_input``). A name that cannot be looked up (too long, a loop of
    links, a file used as a directory) is ``file.out.unwritable``. A name that does not exist yet is
    fine.

    >>> check_output("/").code
    'file.out.not_regular'
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        why = _why(e)[1] if isinstance(e, OSError) else "the name contains a NUL byte"
        return _out_issue("file.out.unwritable", path, why)
    if not stat.S_ISREG(info.st_mode):
        return _out_issue("file.out.not_regular", path, f"it is {_kind(info.st_mode)}, and only a regular file is replaced",
                          "name a new file, or an existing regular file to replace")
    for given in inputs:
        try:
            seen = os.stat(given)
        except (OSError, ValueError):
            continue
        if (seen.st_dev, seen.st_ino) == (info.st_dev, info.st_ino):
            return _out_issue("file.out.is_input", path, f"it is the input {quote(display(given))}",
                              "write the output to another file")
    return None


def write_replacing(path: str | os.PathLike[str], write: Callable[[str], None], *,
                    inputs: Sequence[str | os.PathLike[str]] = (), unwritable: str = "file.out.unwritable") -> Issue | None:
    """Create or replace the regular file ``path`` with what ``write`` writes; ``None`` or the issue.

    ``check_output`` decides first. ``write`` gets the name of a fresh file in a private directory
    beside ``path`` (created as ``open(path, "w")`` would be, so its mode follows the umask) and may
    raise ``OSError``; the file then moves into place with one link or rename. On any failure the temporary
    file is removed and ``path`` is left as it was; an ``OSError`` (a full disk, a vanished
    directory) comes back as an issue coded ``unwritable``. A name that appears at ``path`` while
    ``write`` runs is not replaced.
    """
    refused = check_output(path, inputs)
    if refused is not None:
        return refused
    existed = os.path.lexists(path)
    target = os.fspath(path)
    private: str | None = None
    try:
        # A private directory beside the target (0o700, same file system): between its creation
        # and the rename nobody else can swap the file that ``write`` opens by name for a link.
        private = tempfile.mkdtemp(prefix=".quantdispatch-", dir=os.path.dirname(target) or ".")
        temporary = os.path.join(private, "out")
        # 0o666: the kernel applies the umask, as for open(path, "w"); mkstemp would give 0o600.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        mode = stat.S_IMODE(os.lstat(temporary).st_mode)
        write(temporary)
        os.chmod(temporary, mode)  # a writer that recreates the file (safetensors does) gets 0o600
        _fsync(temporary)
        return _move_into_place(temporary, target, inputs, existed)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        return _out_issue(unwritable, path, "no space left on the device" if full else _why(e)[1])
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _fsync(name: str) -> None:
    # A full disk can surface only when the data is flushed; find out before the rename.
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(temporary: str, target: str, inputs: Sequence[str | os.PathLike[str]], existed: bool) -> Issue | None:
    if not existed:
        try:
            os.link(temporary, target)  # never replaces: fails if a name appeared meanwhile
            return None
        except FileExistsError:
            return _out_issue("file.out.changed", target, "a file appeared at this name while the output was written",
                              "run the command again")
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
                raise  # otherwise: no hard links on this file system; rename, after a second look
    refused = check_output(target, inputs)
    if refused is not None:
        return refused
    os.replace(temporary, target)
    return None
