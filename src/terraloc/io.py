"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; give the file the permissions an ordinary open() would (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        # surrogateescape: file names read from the file system as undecodable bytes are written back
        # as those same bytes (lossless), instead of failing with UnicodeEncodeError.
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=encoding if text else None, errors="surrogateescape" if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def read_checkpoint(path: str | Path, fmt: str, what: str, hint: str = "") -> dict[str, Any]:
    """Load a ``torch.save``d dict safely (``weights_only``) and check its ``"format"`` field is ``fmt``.

    ``what`` names the kind of file in errors ("GeoSURGE checkpoint"); ``hint`` is appended to the
    not-found message (e.g. the command that makes one).

    Raises:
        MissingResourceError: no such file.
        InputError: unreadable, not a dict, or another format.
    """
    import torch

    from terraloc.errors import InputError, MissingResourceError

    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read {what} ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"not a {what} (format {found!r}, expected {fmt!r})", path=path)
    return payload


def read_tagged_json(path: Path, fmt: str, what: str, invalid: str = "not valid JSON") -> dict[str, Any]:
    """Parse the JSON object in ``path`` and check its ``"format"`` field is ``fmt``.

    ``what`` names the kind of file in errors ("geolocator config"); ``invalid`` starts the
    message for a file that is not JSON (the parser's reason follows in brackets).

    Raises:
        InputError: not UTF-8 JSON, not an object, or another format (naming the file).
    """
    import json

    from terraloc.errors import InputError

    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{invalid} ({exc})", path=path) from None
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise InputError(f"not a terraloc {what} (format is not '{fmt}')", path=path)
    return body
