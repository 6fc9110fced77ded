"""Turning a failed write (disk full, read-only file system, no permission) into one line.

Every command that writes files reports such a failure the same way: which file, why (with the
errno name), and what was kept; the CLI prints it on one line and exits 2.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from terraloc.errors import TerralocError

#: errno values that mean "the environment refuses this write", not a bug.
WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EROFS", "EACCES", "EPERM", "EDQUOT", "EFBIG", "EIO", "ENAMETOOLONG", "ENOTDIR", "EISDIR")
    if hasattr(errno, name)
)


class OutputError(TerralocError):
    """A file could not be written; the message says which, why, and what was kept."""


def describe_os_error(exc: OSError) -> str:
    """``"No space left on device [ENOSPC]"``: the reason, with the errno name when known."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    name = errno.errorcode.get(exc.errno or -1)
    return f"{reason} [{name}]" if name else reason


def output_error(exc: OSError, path: str | Path | None = None, kept: str = "") -> OutputError:
    """One-line :class:`OutputError` for ``exc`` writing ``path`` (default: the file ``exc`` names)."""
    where = path if path is not None else (exc.filename or "output")
    msg = f"cannot write {where}: {describe_os_error(exc)}"
    return OutputError(f"{msg}; {kept}" if kept else msg)


def is_write_failure(exc: BaseException) -> bool:
    """True for an ``OSError`` caused by the environment (full, read-only, forbidden, ...)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


@contextlib.contextmanager
def reported_write_errors(path: str | Path, kept: str = "") -> Iterator[None]:
    """Re-raise environment write failures inside the block as :class:`OutputError`."""
    try:
        yield
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        raise output_error(exc, path, kept) from None
